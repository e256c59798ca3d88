"""Copying a blob into a new file: one pass over the bytes, every core busy, durable.

Three costs make up a copy of a large blob: writing the new file, hashing it, and
flushing it to disk. Done one after the other they add up; here they overlap:

- a copier thread moves the bytes with ``os.copy_file_range``: an in-kernel copy (no trip
  through Python buffers), a reflink on filesystems that share extents (btrfs, XFS),
  with a plain read/write loop where the kernel cannot copy between the two files;
- the calling thread hashes what has landed in the new file, right behind the copier,
  through small read-only memory maps (no second copy; what is hashed is exactly what
  the file holds);
- a flusher thread keeps starting the write-back of what has been copied
  (``sync_file_range``, which queues the pages and returns, where the system has it), so
  the final fsync waits for the last few MiB rather than for the whole blob.

Small blobs are copied and hashed inline: threads would cost more than they save.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator

from packager._io.hashing import CHUNK, WINDOW, hash_range
from packager.core.digests import Digest

# The copier's step, which the hasher follows window by window.
STEP = WINDOW
# Below this, one thread does everything.
THREADED = 2 * STEP
# How often the flusher starts the write-back of what was written since: what the final
# fsync waits for is what came in the last interval. At 50 ms, the fsync after a 128 MiB
# download took about 20 ms; at 10 ms, about 4 ms (the download itself as fast). Where
# the system has no sync_file_range, fdatasync stands in: it waits for the disk and holds
# up the writes meanwhile, so it runs less often.
FLUSH_INTERVAL = 0.01
FDATASYNC_INTERVAL = 0.05
# sync_file_range(2): start writing the range's dirty pages, wait for none of them.
SYNC_FILE_RANGE_WRITE = 2
# What copy_file_range answers when it cannot copy between these two files.
NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.EPERM}
)


def copy_into(source: int, dest: int, *, limit: int, offset: int = 0) -> tuple[Digest, int]:
    """Copy ``source`` from ``offset`` to its end, at most ``limit`` bytes, into the empty
    file ``dest`` (opened for reading and writing); returns the sha256 of what ``dest``
    now holds and its size. ``dest`` is fsynced before this returns.

    Callers wanting to tell "too long" from "exactly the size" ask for ``size + 1``.

    Raises:
        OSError: reading, writing or flushing failed.
    """
    if limit <= THREADED:
        copied = _copy(source, dest, offset=offset, limit=limit, stop=None, advanced=None)
        digest = _hash(dest, 0, copied, hashlib.sha256())
        os.fsync(dest)
        return digest, copied
    return _Pipeline(source, dest, offset=offset, limit=limit).run()


def _copy(
    source: int,
    dest: int,
    *,
    offset: int,
    limit: int,
    stop: threading.Event | None,
    advanced: _Pipeline | None,
) -> int:
    """Copy until the end of ``source`` or ``limit``; returns the bytes copied."""
    copied = 0
    kernel = True
    buffer = b""
    while copied < limit and not (stop is not None and stop.is_set()):
        count = min(STEP, limit - copied)
        if kernel:
            try:
                moved = os.copy_file_range(source, dest, count, offset + copied, copied)
            except OSError as e:
                if copied or e.errno not in NO_KERNEL_COPY:
                    raise
                kernel = False  # another filesystem, or one without the call: copy by hand
                continue
        else:
            buffer = os.pread(source, min(CHUNK, count), offset + copied)
            moved = os.pwrite(dest, buffer, copied) if buffer else 0
            if moved != len(buffer):
                raise OSError(errno.EIO, "short write")
        if moved == 0:
            break
        copied += moved
        if advanced is not None:
            advanced.advance(copied)
    return copied


def _hash(dest: int, start: int, end: int, h: hashlib._Hash) -> Digest:
    """Hash bytes ``[start, end)`` of ``dest`` into ``h``; returns the digest so far.

    ``dest`` is the caller's own new file.
    """
    hash_range(dest, start, end, h)
    return Digest(h.hexdigest())


class _Pipeline:
    """The copier and flusher threads of one large copy, and the hashing behind them."""

    def __init__(self, source: int, dest: int, *, offset: int, limit: int) -> None:
        self._source, self._dest, self._offset, self._limit = source, dest, offset, limit
        self._changed = threading.Condition()
        self._copied = 0
        self._finished = False
        self._error: BaseException | None = None
        self._stop = threading.Event()

    def advance(self, copied: int) -> None:
        with self._changed:
            self._copied = copied
            self._changed.notify_all()

    def run(self) -> tuple[Digest, int]:
        copier = threading.Thread(target=self._copier, name="packager-copy", daemon=True)
        copier.start()
        try:
            with flushing(self._dest):
                digest, copied = self._hash_behind()
        finally:
            self._stop.set()
            copier.join()
        os.fsync(self._dest)
        return digest, copied

    def _hash_behind(self) -> tuple[Digest, int]:
        h = hashlib.sha256()
        hashed = 0
        while True:
            with self._changed:
                while self._copied - hashed < STEP and not self._finished:
                    self._changed.wait()
                copied, finished, error = self._copied, self._finished, self._error
            if error is not None:
                raise error
            # Whole windows while the copy runs; the tail once it is finished.
            end = copied if finished else hashed + (copied - hashed) // STEP * STEP
            digest = _hash(self._dest, hashed, end, h)
            hashed = end
            if finished:
                return digest, copied

    def _copier(self) -> None:
        try:
            _copy(
                self._source,
                self._dest,
                offset=self._offset,
                limit=self._limit,
                stop=self._stop,
                advanced=self,
            )
        except BaseException as e:  # handed to the hashing thread, which raises it
            with self._changed:
                self._error = e
        with self._changed:
            self._finished = True
            self._changed.notify_all()


@contextlib.contextmanager
def flushing(fd: int) -> Iterator[None]:
    """While the block runs, a thread keeps starting the write-back of what was written to
    ``fd``, so that the caller's final fsync finds little left to do. Errors are left
    for that fsync to report."""
    done = threading.Event()
    interval = FLUSH_INTERVAL if _sync_file_range() is not None else FDATASYNC_INTERVAL

    def flush() -> None:
        while not done.wait(interval):
            try:
                start_writeback(fd)
            except OSError:
                return

    flusher = threading.Thread(target=flush, name="packager-flush", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        done.set()
        flusher.join()


def start_writeback(fd: int) -> None:
    """Start writing the dirty pages of ``fd`` to disk: sync_file_range(2) with
    SYNC_FILE_RANGE_WRITE where the C library has it (Linux), which queues them and
    returns at once; elsewhere fdatasync, which also waits for them and for the disk's
    cache (and holds up the writes meanwhile). Neither makes the file durable: fsync does.

    Raises:
        OSError: the write-back could not be started.
    """
    sync_file_range = _sync_file_range()
    if sync_file_range is None:
        os.fdatasync(fd)
    elif sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """The C library's sync_file_range, or None where it has none."""
    import ctypes  # here: only a large copy needs it

    found = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if found is None:
        return None
    found.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    found.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = found
    return call
