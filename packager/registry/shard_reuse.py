"""Delta by shards: the shards of a new version's file that an installed version already
holds, at the same path and offsets, are copied from the installed file, not fetched.

Nothing about the installed file is trusted: each shard is copied into the new file
first and the bytes that landed there are hashed against the NEW version's signed shard
digest; a shard that does not match is simply fetched (its bytes are overwritten).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packager._io.hashing import hash_range
from packager.core.digests import Digest
from packager.core.shards import Shard


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
        candidates = [i for i, shard in enumerate(shards) if shard.end <= size]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            placed = pool.map(lambda i: _place(fd, out, shards[i]), candidates)
            return {i for i, ok in zip(candidates, placed, strict=True) if ok}
    finally:
        os.close(fd)


def _place(source: int, out: int, shard: Shard) -> bool:
    """Copy bytes [start, end) of ``source`` into ``out`` at the same offset; True when
    what ``out`` now holds there has the shard's digest."""
    try:
        position = shard.start
        while position < shard.end:
            moved = os.copy_file_range(source, out, shard.end - position, position, position)
            if moved == 0:
                return False
            position += moved
        h = hashlib.sha256()
        hash_range(out, shard.start, shard.end, h)
    except OSError:
        return False
    return Digest(h.hexdigest()) == shard.digest
