"""Durable, atomic file writes: the one way packager replaces a file on disk.

A file is written to a temporary file in its own directory (created 0600, so nothing is
readable by others before its mode is set), flushed and fsynced, given its final mode,
renamed over the target, and the directory is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make the contents of the regular file ``path`` durable (it is opened read-only)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(
    path: Path,
    data: bytes | Iterable[bytes],
    *,
    mode: int = 0o644,
    sync_dir: bool = True,
) -> None:
    """Replace ``path`` with ``data`` (bytes, or chunks) atomically and durably.

    ``sync_dir`` False leaves the directory fsync to a caller that writes several files
    into one directory and syncs it once.

    Raises:
        OSError: the file cannot be written; ``path`` is then unchanged and no
            temporary file is left behind.
    """
    import tempfile  # here: with shutil, random and bz2 it costs every command's start

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def filesystem_type(dev: int) -> str | None:
    """The type of the filesystem mounted from device ``dev`` (an ``st_dev``), as
    /proc/self/mountinfo names it (``ext4``, ``nfs4``, ``fuse.sshfs``...); None where it
    cannot be told (no /proc, no mount with that device: btrfs subvolumes, for one)."""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            after = line.split(" - ", 1)[1].split()
            found = after[0] if after else None
    return found
