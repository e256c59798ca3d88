"""Copying a file by shards, every shard on its own thread and checked where it lands.

Delta by shards: the shards of a new version's file that an installed version already
holds, at the same path and offsets, are copied from the installed file, not fetched.
Nothing about the installed file is trusted: each shard is copied into the new file
first and the bytes that landed there are hashed against the NEW version's signed shard
digest; a shard that does not match is simply fetched (its bytes are overwritten).

Local registries (a directory) copy a blob signed by shards the same way, all shards at
once (:func:`copy_shards`): one large file is then hashed on every core.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packager._io.hashing import CHUNK, hash_range
from packager.core.digests import Digest
from packager.core.shards import Shard
from packager.registry.files import NO_KERNEL_COPY


def reuse_shards(source: Path, out: int, shards: Sequence[Shard], *, workers: int = 4) -> set[int]:
    """Copy into ``out`` (open for reading and writing, sized already) every shard of
    ``shards`` that ``source`` holds at the same offsets with the signed digest; returns
    the indexes of the shards now in place. A missing or unreadable ``source`` reuses
    nothing.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        size = os.fstat(fd).st_size
        candidates = [shard for shard in shards if shard.end <= size]
        placed = place_shards(fd, out, candidates, workers=workers)
        return {i for i, shard in enumerate(shards) if shard in candidates and placed[shard]}
    except OSError:
        return set()  # reusing is an optimisation: the shards are fetched instead
    finally:
        os.close(fd)


def copy_shards(source: int, out: int, shards: Sequence[Shard], *, offset: int = 0) -> Shard | None:
    """Copy every shard from ``source`` (the blob starting at ``offset``) into ``out``,
    open for reading and writing, each hashed where it landed; returns the first shard
    whose bytes differ from its signed digest (or that ``source`` does not hold), None
    when all match.

    Raises:
        OSError: reading or writing failed.
    """
    placed = place_shards(source, out, shards, offset=offset, workers=_cpu_count())
    return next((shard for shard in shards if not placed[shard]), None)


def place_shards(
    source: int, out: int, shards: Sequence[Shard], *, offset: int = 0, workers: int = 4
) -> dict[Shard, bool]:
    """:func:`_place` each shard, ``workers`` at once; whether each one matched."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        placed = pool.map(lambda shard: _place(source, out, shard, offset), shards)
        return dict(zip(shards, placed, strict=True))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _place(source: int, out: int, shard: Shard, offset: int = 0) -> bool:
    """Copy bytes [start, end) of ``source`` (from ``offset`` on) into ``out`` at the
    shard's offset; True when what ``out`` now holds there has the shard's digest, False
    when it differs or ``source`` ends before the shard does.

    Raises:
        OSError: reading or writing failed.
    """
    position, kernel = shard.start, True
    while position < shard.end:
        count = shard.end - position if kernel else min(CHUNK, shard.end - position)
        if kernel:
            try:
                moved = os.copy_file_range(source, out, count, offset + position, position)
            except OSError as e:
                if e.errno not in NO_KERNEL_COPY:
                    raise
                kernel = False  # another filesystem, or one without the call: by hand
                continue
        else:
            data = os.pread(source, count, offset + position)
            moved = os.pwrite(out, data, position) if data else 0
        if moved == 0:
            return False
        position += moved
    h = hashlib.sha256()
    hash_range(out, shard.start, shard.end, h)
    return Digest(h.hexdigest()) == shard.digest
