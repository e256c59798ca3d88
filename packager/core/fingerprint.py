"""What the kernel says about an installed file's inode, recorded when its bytes were verified.

An installed file is verified, written, fsynced and made read-only once; its fingerprint
(device, inode, size, modification and change times in nanoseconds) is recorded then. A
process cannot set an inode's change time (ctime): any write, chmod, rename or link moves
it, so a file whose fingerprint is still the recorded one has not been changed through the
kernel since. Whether a fingerprint lets a file be reused unhashed is decided by
:func:`packager.core.verify.unchanged_since_verified`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class _Stat(Protocol):
    @property
    def st_dev(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


@dataclass(frozen=True)
class Fingerprint:
    """One inode as ``lstat`` saw it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: _Stat) -> Fingerprint:
        """The fingerprint of an ``os.stat_result``."""
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def same_content(self, other: Fingerprint) -> bool:
        """Same inode, size and modification time: what a hard link leaves unchanged (it
        moves the change time and the link count)."""
        return (self.dev, self.ino, self.size, self.mtime_ns) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_ns,
        )


@dataclass(frozen=True)
class Held:
    """A file this machine holds with a signed digest: ``recorded`` is the fingerprint its
    inode had when the instance verified those bytes (None: never recorded, or not to be
    trusted, e.g. ``install --force``)."""

    path: Path
    recorded: Fingerprint | None = None
