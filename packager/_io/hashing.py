"""Streaming SHA-256 of files and streams, on every core.

SHA-256 of one stream cannot be split across cores, so the speed of hashing one large
file whole is that of one core; a file signed by shards (:mod:`packager.core.shards`) has
each shard hashed on its own, all cores at once. :func:`digest_file` reads through one
small reused buffer (a file that shrinks meanwhile is an error, never a fault);
:class:`FileHasher` hashes several files, or the shards of several files, at once on as
many threads as there are cores, largest first, while the caller does other work
(checking a signature, say) and can stop it early; :class:`BackgroundHasher` hashes a
stream on a thread of its own while the caller receives and writes it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from packager.core.digests import Digest
from packager.core.shards import Hashed, bounds

if TYPE_CHECKING:
    import queue

CHUNK = 1 << 20


# Files are read for hashing in pieces of this size, into one buffer per thread: large
# enough that system calls are noise, small enough to stay in the core's cache. (Memory
# maps would save that copy, about 5 % of the time SHA-256 takes, but a file truncated by
# someone else while it is mapped ends the process with SIGBUS: a bundle directory handed
# to `packager verify` is not ours.)
READ = 1 << 20
# Callers that step through a file do so in pieces of this size.
WINDOW = 8 << 20


# How soon the interpreter hands the GIL to a thread that asks for it, while FileHasher's
# threads run: each needs it back between two windows of hashing, and with the default
# interval (5 ms, about a window's hashing) a caller busy in Python meanwhile (importing,
# checking a signature and a schema) leaves the hashing threads idle half the time.
SWITCH_INTERVAL = 0.0005


class _ShortSwitches:
    """The interpreter's switch interval at most SWITCH_INTERVAL while at least one user
    has entered and not left; the interval before is restored when the last one leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = 0.0

    def enter(self) -> None:
        with self._lock:
            if self._users == 0:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(min(self._before, SWITCH_INTERVAL))
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setswitchinterval(self._before)


_SHORT_SWITCHES = _ShortSwitches()


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
        import queue  # here: verifying a bundle directory hashes without it

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

    The file is read READ bytes at a time into one buffer, so memory stays small whatever
    its size; ``stop`` set from another thread ends the hashing at the next piece.

    Raises:
        OSError: the file cannot be opened or read, or it ended before the size it had
            when it was opened (someone truncated it meanwhile).
        HashingStopped: ``stop`` was set.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256()
        hash_range(f.fileno(), 0, size, h, stop=stop, name=path)
    return Digest(h.hexdigest()), size


def hash_range(
    fd: int,
    start: int,
    end: int,
    h: hashlib._Hash,
    *,
    stop: threading.Event | None = None,
    name: str | Path | None = None,
) -> None:
    """Hash bytes ``[start, end)`` of the open file ``fd`` into ``h``, READ bytes at a
    time (os.preadv and hashlib both release the GIL, so threads hash on every core).

    Raises:
        OSError: the file could not be read, or ended before ``end`` (``name`` names it in
            the message).
        HashingStopped: ``stop`` was set (checked before each piece).
    """
    buffer = bytearray(min(READ, max(end - start, 0)))
    view = memoryview(buffer)
    position = start
    while position < end:
        if stop is not None and stop.is_set():
            raise HashingStopped
        piece = view[: min(READ, end - position)]
        count = os.preadv(fd, [piece], position)
        if count == 0:
            what = "the file" if name is None else str(name)
            raise OSError(f"{what} ended at byte {position}, before {end}: it changed while read")
        h.update(piece[:count])
        position += count


def digest_range(
    path: Path, start: int, end: int, *, size: int, stop: threading.Event | None = None
) -> Digest:
    """sha256 of bytes ``[start, end)`` of ``path``, a file of ``size`` bytes.

    Raises:
        OSError: the file cannot be read, or is no longer ``size`` bytes long.
        HashingStopped: ``stop`` was set.
    """
    with open(path, "rb", buffering=0) as f:
        found = os.fstat(f.fileno()).st_size
        if found != size:
            raise OSError(f"{path} changed size while it was hashed ({size} then {found} bytes)")
        h = hashlib.sha256()
        hash_range(f.fileno(), start, end, h, stop=stop, name=path)
    return Digest(h.hexdigest())


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


# One piece of work: shard ``index`` of ``path``, bytes [start, end) of a file of ``size``
# bytes; ``end`` None: the whole file.
_Task = tuple[Path, int, int, int | None, int]


class FileHasher(_Threaded):
    """Hash files in parallel in the background; a context manager.

    Hashing starts on construction, on one thread per core (or ``workers``), largest
    piece first so that the threads finish together; hashlib releases the GIL, so the
    threads hash on separate cores while the caller goes on. With ``shard_size`` every
    file larger than one shard is hashed by shards (:func:`packager.core.shards.bounds`),
    each shard a piece of its own: one large file keeps every core busy. Leaving the
    ``with`` block stops whatever is still running (a caller that raised does not wait
    for the rest of a large file) and waits for the threads.
    """

    def __init__(
        self, paths: Iterable[Path], *, workers: int | None = None, shard_size: int | None = None
    ) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._digests: dict[Path, list[Digest | None]] = {}
        self._sizes: dict[Path, int] = {}
        self._results: dict[Path, Hashed | BaseException] = {}
        todo: list[_Task] = []
        for path in self._paths:
            size = _size(path)
            cut = bounds(size, shard_size) if shard_size is not None and size > shard_size else []
            self._digests[path] = [None] * max(1, len(cut))
            todo += [(path, index, start, end, size) for index, (start, end) in enumerate(cut)]
            if not cut:
                todo.append((path, 0, 0, None, size))
        self._todo = sorted(todo, key=lambda task: (task[3] or task[4]) - task[2], reverse=True)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        count = max(1, min(workers or _cpu_count(), len(self._todo)))
        self._workers = [
            threading.Thread(target=self._work, name="packager-hash", daemon=True)
            for _ in range(count)
        ]
        self._running = count
        self._closed = False
        self._start()

    def _start(self) -> None:
        """Start the threads under a short switch interval; when one cannot start, stop
        those that did and restore the interval before raising."""
        _SHORT_SWITCHES.enter()
        started: list[threading.Thread] = []
        try:
            for worker in self._workers:
                worker.start()
                started.append(worker)
        except BaseException:
            with self._changed:
                self._running -= len(self._workers) - len(started)
            self._workers = started
            self.close()
            raise

    def hashed(self, path: Path) -> Hashed:
        """What hashing ``path`` gave (its shards' digests, or its own), waiting for it.

        Raises:
            KeyError: ``path`` was not given to this hasher.
            OSError: it could not be read.
            HashingStopped: the hasher was stopped before the file was done.
        """
        if path not in self._digests:
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

    def result(self, path: Path) -> tuple[Digest, int]:
        """(digest, size) of ``path`` hashed whole (no ``shard_size``), waiting for it.

        Raises:
            KeyError, OSError, HashingStopped: see :meth:`hashed`.
            ValueError: the file was hashed by shards.
        """
        found = self.hashed(path)
        if found.whole is None:
            raise ValueError(f"{path} was hashed by shards")
        return found.whole, found.size

    def results(self) -> dict[Path, tuple[Digest, int]]:
        """(digest, size) of every file, waiting for all of them.

        Raises:
            OSError: a file could not be read (the first such file in the order given).
            HashingStopped: the hasher was stopped before every file was done.
            ValueError: a file was hashed by shards.
        """
        return {path: self.result(path) for path in self._paths}

    def all_hashed(self) -> dict[Path, Hashed]:
        """:meth:`hashed` of every file, waiting for all of them."""
        return {path: self.hashed(path) for path in self._paths}

    def close(self) -> None:
        """Stop hashing: pieces not started are dropped, running ones end at their next
        window; returns once every thread has finished."""
        self._stop.set()
        for worker in self._workers:
            worker.join()
        with self._changed:
            leaving, self._closed = not self._closed, True
        if leaving:
            _SHORT_SWITCHES.leave()

    def _work(self) -> None:
        try:
            while True:
                with self._changed:
                    if not self._todo or self._stop.is_set():
                        return
                    task = self._todo.pop(0)
                self._record(task, self._hash(task))
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def _hash(self, task: _Task) -> tuple[Digest, int] | BaseException:
        path, _, start, end, size = task
        try:
            if end is None:
                return digest_file(path, stop=self._stop)
            return digest_range(path, start, end, size=size, stop=self._stop), size
        except BaseException as e:  # handed to whoever asks for this file
            return e

    def _record(self, task: _Task, outcome: tuple[Digest, int] | BaseException) -> None:
        path, index = task[0], task[1]
        with self._changed:
            if path in self._results:
                return  # another shard of it failed already
            if isinstance(outcome, BaseException):
                self._results[path] = outcome
            else:
                slots = self._digests[path]
                slots[index] = outcome[0]
                self._sizes[path] = outcome[1]
                if all(slots):
                    digests = tuple(d for d in slots if d is not None)
                    size = self._sizes[path]
                    self._results[path] = Hashed(size, () if size == 0 else digests)
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
