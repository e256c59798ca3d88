"""Copying a blob into a new file: in the kernel or by hand, hashed behind the copy,
capped, and failing loudly."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.registry import files
from packager.registry.files import STEP, THREADED, copy_into, flushing


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(3 * STEP + 4321)


@pytest.fixture
def source(tmp_path: Path, data: bytes) -> Iterator[int]:
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def new_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)


@pytest.mark.parametrize("size", [0, 1, STEP, THREADED, THREADED + 1, 3 * STEP + 4321])
def test_copy_gives_the_bytes_and_their_digest(tmp_path: Path, data: bytes, size: int) -> None:
    """Small blobs inline, large ones through the copier and hasher threads: the same."""
    blob = tmp_path / "blob"
    blob.write_bytes(data[:size])
    dest = tmp_path / "dest"
    with open(blob, "rb") as src:
        out = new_file(dest)
        try:
            digest, copied = copy_into(src.fileno(), out, limit=size + 1)
        finally:
            os.close(out)
    assert copied == size
    assert digest.hex == hashlib.sha256(data[:size]).hexdigest()
    assert dest.read_bytes() == data[:size]


def test_copy_stops_at_the_limit(tmp_path: Path, source: int, data: bytes) -> None:
    """A blob longer than declared is copied only to the declared size plus one byte."""
    limit = 2 * STEP + 10
    out = new_file(tmp_path / "dest")
    try:
        digest, copied = copy_into(source, out, limit=limit)
    finally:
        os.close(out)
    assert copied == limit
    assert digest.hex == hashlib.sha256(data[:limit]).hexdigest()
    assert (tmp_path / "dest").stat().st_size == limit


def test_copy_from_an_offset(tmp_path: Path, source: int, data: bytes) -> None:
    """A member of an archive: bytes from an offset, up to a length."""
    out = new_file(tmp_path / "dest")
    try:
        digest, copied = copy_into(source, out, offset=777, limit=THREADED + 5)
    finally:
        os.close(out)
    assert (tmp_path / "dest").read_bytes() == data[777 : 777 + THREADED + 5]
    assert copied == THREADED + 5
    assert digest.hex == hashlib.sha256(data[777 : 777 + THREADED + 5]).hexdigest()


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP])
def test_without_kernel_copy_the_bytes_are_copied_by_hand(
    tmp_path: Path, source: int, data: bytes, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    out = new_file(tmp_path / "dest")
    try:
        digest, copied = copy_into(source, out, limit=len(data) + 1)
    finally:
        os.close(out)
    assert copied == len(data)
    assert digest.hex == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "dest").read_bytes() == data


def test_a_copy_failing_midway_is_raised_and_ends_the_threads(
    tmp_path: Path, source: int, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copier's error reaches the caller (never a digest of half a blob)."""
    real = os.copy_file_range
    calls = 0

    def failing(*args: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.EIO, "I/O error")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", failing)
    out = new_file(tmp_path / "dest")
    try:
        with pytest.raises(OSError, match="I/O error"):
            copy_into(source, out, limit=len(data) + 1)
    finally:
        os.close(out)
    running = {t.name for t in threading.enumerate()}
    assert not running & {"packager-copy", "packager-flush"}


def test_flushing_writes_back_while_the_block_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher queues the write-back with the C library's sync_file_range, which
    returns at once (fdatasync would wait for the disk and hold up the copy)."""
    libc = files._sync_file_range()
    assert libc is not None  # Linux: glibc and musl both have it
    started = threading.Event()

    def recording(fd: int, offset: int, nbytes: int, flags: int) -> int:
        code = libc(fd, offset, nbytes, flags)
        assert (code, flags) == (0, files.SYNC_FILE_RANGE_WRITE)
        started.set()
        return code

    monkeypatch.setattr(files, "_sync_file_range", lambda: recording)
    monkeypatch.setattr(files, "FLUSH_INTERVAL", 0.001)
    with open(tmp_path / "f", "wb") as f, flushing(f.fileno()):
        f.write(b"x" * 1000)
        f.flush()
        assert started.wait(5)
    assert not any(t.name == "packager-flush" for t in threading.enumerate())


def test_starting_the_write_back_of_a_closed_file_is_an_os_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"x" * 4096)
    files.start_writeback(fd)  # queued, not waited for
    os.close(fd)
    with pytest.raises(OSError, match="Bad file descriptor") as raised:
        files.start_writeback(fd)
    assert raised.value.errno == errno.EBADF
