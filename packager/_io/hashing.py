"""Streaming SHA-256 of files and streams, on every core.

SHA-256 of one stream cannot be split across cores, so the speed of hashing one large
file is that of one core; what can be had is everything around it. :func:`digest_file`
hashes the page cache in place (no copy into Python buffers); :class:`FileHasher` hashes
several files at once on as many threads as there are cores, largest first, while the
caller does other work (checking a signature, say) and can stop it early;
:class:`BackgroundHasher` hashes a stream on a thread of its own while the caller
receives and writes it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from packager.core.digests import Digest

CHUNK = 1 << 20


# Files are hashed through memory maps of this size: large enough that mapping costs are
# noise, small enough that the pages mapped at any time keep the resident set small.
WINDOW = 8 << 20


class _Threaded(ABC):
    """A context manager whose threads :meth:`close` ends, also on leaving the ``with`` block."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...


class BackgroundHasher(_Threaded):
    """sha256 computed on a thread of its own, fed chunk by chunk: the feeding thread
    (receiving from the network, writing a file) goes on while each chunk is hashed.

    At most ``depth`` chunks wait to be hashed; :meth:`update` blocks beyond that, so
    memory stays bounded when the network outruns the hash. Chunks must not change once
    given (``bytes``). :meth:`close` (also on leaving a ``with`` block) ends the thread.
    """

    def __init__(self, *, depth: int = 8) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="packager-sha256", daemon=True)
        self._thread.start()

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def hexdigest(self) -> str:
        """The digest of everything given; no more chunks may follow."""
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)


class HashingStopped(Exception):
    """Hashing was stopped (``stop`` set, :meth:`FileHasher.close`) before the file was done."""


def digest_file(path: Path, *, stop: threading.Event | None = None) -> tuple[Digest, int]:
    """Stream a file through sha256; returns (digest, size).

    Large files are hashed through read-only memory maps of WINDOW bytes: the page
    cache's pages are hashed where they are, with no copy into a buffer, and each window
    is unmapped before the next so that memory stays small whatever the file's size.
    ``stop`` set from another thread ends the hashing at the next window.

    A file truncated by someone else while it is hashed would end the process (SIGBUS)
    rather than raise: what is hashed here is the caller's own files (bundle directories,
    staging), never a registry's, which are read with copies.

    Raises:
        OSError: the file cannot be opened or read.
        HashingStopped: ``stop`` was set.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size <= WINDOW:
            # hashlib.file_digest releases the GIL and reads with a reusable buffer.
            h = hashlib.file_digest(f, "sha256")
            return Digest(h.hexdigest()), f.tell()
        h = hashlib.sha256()
        hash_range(f.fileno(), 0, size, h, stop=stop)
    return Digest(h.hexdigest()), size


def hash_range(
    fd: int, start: int, end: int, h: hashlib._Hash, *, stop: threading.Event | None = None
) -> None:
    """Hash bytes ``[start, end)`` of the open file ``fd`` into ``h``, through read-only
    memory maps of WINDOW bytes; ``start`` must be a multiple of the page size.

    Raises:
        OSError: the file cannot be mapped.
        HashingStopped: ``stop`` was set (checked before each window).
    """
    position = start
    while position < end:
        if stop is not None and stop.is_set():
            raise HashingStopped
        length = min(WINDOW, end - position)
        with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=position) as window:
            h.update(window)
        position += length


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # hashing it will raise the error, in its turn


class FileHasher(_Threaded):
    """Hash files in parallel in the background; a context manager.

    Hashing starts on construction, on one thread per core (or ``workers``), largest
    file first so that the threads finish together; hashlib releases the GIL, so the
    threads hash on separate cores while the caller goes on. Leaving the ``with``
    block stops whatever is still running (a caller that raised does not wait for the
    rest of a large file) and waits for the threads.
    """

    def __init__(self, paths: Iterable[Path], *, workers: int | None = None) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._todo = sorted(self._paths, key=_size, reverse=True)
        self._results: dict[Path, tuple[Digest, int] | BaseException] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        count = max(1, min(workers or _cpu_count(), len(self._paths)))
        self._workers = [
            threading.Thread(target=self._work, name="packager-hash", daemon=True)
            for _ in range(count)
        ]
        self._running = count
        for worker in self._workers:
            worker.start()

    def result(self, path: Path) -> tuple[Digest, int]:
        """(digest, size) of ``path``, waiting for it.

        Raises:
            KeyError: ``path`` was not given to this hasher.
            OSError: it could not be read.
            HashingStopped: the hasher was stopped before the file was done.
        """
        if path not in self._paths:
            raise KeyError(path)
        with self._changed:
            while path not in self._results:
                if self._running == 0:
                    raise HashingStopped
                self._changed.wait()
            found = self._results[path]
        if isinstance(found, BaseException):
            raise found
        return found

    def results(self) -> dict[Path, tuple[Digest, int]]:
        """(digest, size) of every file, waiting for all of them.

        Raises:
            OSError: a file could not be read (the first such file in the order given).
            HashingStopped: the hasher was stopped before every file was done.
        """
        return {path: self.result(path) for path in self._paths}

    def close(self) -> None:
        """Stop hashing: files not started are dropped, running ones end at their next
        window; returns once every thread has finished."""
        self._stop.set()
        for worker in self._workers:
            worker.join()

    def _work(self) -> None:
        try:
            while True:
                with self._changed:
                    if not self._todo or self._stop.is_set():
                        return
                    path = self._todo.pop(0)
                result: tuple[Digest, int] | BaseException
                try:
                    result = digest_file(path, stop=self._stop)
                except BaseException as e:  # handed to whoever asks for this file
                    result = e
                with self._changed:
                    self._results[path] = result
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()


def digest_files(paths: Iterable[Path], *, workers: int | None = None) -> list[tuple[Digest, int]]:
    """:func:`digest_file` of every path, hashed in parallel; results in the given order.

    Raises:
        OSError: a file cannot be read (the first such file in the order given).
    """
    listed = list(paths)
    with FileHasher(listed, workers=workers) as hasher:
        results = hasher.results()
    return [results[path] for path in listed]
