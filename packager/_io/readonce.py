"""Hashing a file whole and by shards in one read of its bytes.

What is compared (the whole file's sha256, as manifest.json gives it) and what is signed
(each shard's sha256) must be of the same bytes. Two reads of a file can differ without
its size or times telling (coarse timestamps, a write through a shared memory map to a
page already dirty, a FUSE file system), so here each file is read once, into a private
buffer, and every chunk goes to both hashes. Files are read in parallel, one thread each.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packager.core.digests import Digest
from packager.core.shards import Shard, bounds

CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadOnce:
    """One read of a file: its ``size``, the sha256 of all of it, and its ``shards``
    (none when not hashed by shards, or empty)."""

    size: int
    whole: Digest
    shards: tuple[Shard, ...]


class _TwoHashes:
    """The whole-file sha256 and each shard's, of the bytes given to :meth:`update`."""

    def __init__(self, shard_size: int | None) -> None:
        self._shard_size = shard_size
        self._whole = hashlib.sha256()
        self._shard = hashlib.sha256()
        self._in_shard = 0
        self._done: list[Digest] = []
        self.size = 0

    def update(self, data: memoryview) -> None:
        self._whole.update(data)
        self.size += len(data)
        if self._shard_size is None:
            return
        while data:
            take = min(len(data), self._shard_size - self._in_shard)
            self._shard.update(data[:take])
            self._in_shard += take
            data = data[take:]
            if self._in_shard == self._shard_size:
                self._done.append(Digest(self._shard.hexdigest()))
                self._shard, self._in_shard = hashlib.sha256(), 0

    def result(self) -> ReadOnce:
        whole = Digest(self._whole.hexdigest())
        if self._shard_size is None:
            return ReadOnce(self.size, whole, ())
        digests = [*self._done, *([Digest(self._shard.hexdigest())] if self._in_shard else [])]
        cut = bounds(self.size, self._shard_size)
        shards = tuple(Shard(s, e, d) for (s, e), d in zip(cut, digests, strict=True))
        return ReadOnce(self.size, whole, shards)


def read_bytes_once(data: bytes, shard_size: int | None) -> ReadOnce:
    """:func:`read_once` of bytes already read (manifest.json, parsed from them)."""
    hashes = _TwoHashes(shard_size)
    hashes.update(memoryview(data))
    return hashes.result()


def read_once(path: Path, shard_size: int | None) -> ReadOnce:
    """``path`` read once: its whole sha256 and (with ``shard_size``) its shards'.

    Raises:
        OSError: the file cannot be read.
    """
    hashes = _TwoHashes(shard_size)
    buffer = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f, memoryview(buffer) as view:
        while count := f.readinto(buffer):
            hashes.update(view[:count])
    return hashes.result()


def read_all_once(paths: Mapping[str, Path], shard_size: int | None) -> dict[str, ReadOnce]:
    """:func:`read_once` of every file, on as many threads as there are cores.

    Raises:
        OSError: a file cannot be read.
    """
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="packager-read") as pool:
        done = {name: pool.submit(read_once, path, shard_size) for name, path in paths.items()}
        return {name: future.result() for name, future in done.items()}
