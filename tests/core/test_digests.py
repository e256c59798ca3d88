"""Hashing files: through memory-map windows, in parallel, in the background; the same
digests and the same errors as hashing one file after the other with hashlib."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from packager._io import hashing
from packager._io.hashing import (
    WINDOW,
    BackgroundHasher,
    FileHasher,
    HashingStopped,
    digest_file,
    digest_files,
)
from packager.core.digests import Digest
from packager.errors import TamperedError


def sha256(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="module")
def data() -> bytes:
    # Not a multiple of anything: the last window is short.
    return os.urandom(2 * WINDOW + 12345)


@pytest.mark.parametrize(
    "size", [0, 1, WINDOW - 1, WINDOW, WINDOW + 1, 2 * WINDOW, 2 * WINDOW + 12345]
)
def test_digest_file_matches_hashlib_at_window_edges(
    tmp_path: Path, data: bytes, size: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(data[:size])
    assert digest_file(path) == (sha256(data[:size]), size)


def test_parallel_digests_are_the_sequential_ones(tmp_path: Path, data: bytes) -> None:
    sizes = [0, 5, WINDOW + 7, len(data), 3 * 1024, WINDOW * 2]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(data[:size])
    expected = [(sha256(data[:size]), size) for size in sizes]
    assert digest_files(paths) == expected
    assert digest_files(paths, workers=1) == expected
    assert digest_files(paths, workers=16) == expected
    # The same path twice is hashed once and reported twice.
    assert digest_files([paths[2], paths[2]]) == [expected[2], expected[2]]


def test_parallel_errors_are_the_sequential_ones(tmp_path: Path, data: bytes) -> None:
    """The first unreadable file in the order given is the one reported, as when hashing
    one file after the other, whichever thread failed first."""
    good = tmp_path / "good"
    good.write_bytes(data)
    unreadable = tmp_path / "dir"
    unreadable.mkdir()
    missing = tmp_path / "missing"
    digest_file(good)
    with pytest.raises(FileNotFoundError) as sequential:
        digest_file(missing)
    with pytest.raises(FileNotFoundError) as parallel:
        digest_files([good, missing, unreadable])
    assert parallel.value.filename == sequential.value.filename == str(missing)
    with pytest.raises(IsADirectoryError):
        digest_files([good, unreadable, missing])


def test_file_hasher_gives_results_by_path_and_refuses_others(tmp_path: Path, data: bytes) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data[:100])
    b.write_bytes(data)
    with FileHasher([a, b]) as hasher:
        assert hasher.result(b) == (sha256(data), len(data))
        assert hasher.results() == {a: (sha256(data[:100]), 100), b: (sha256(data), len(data))}
        with pytest.raises(KeyError):
            hasher.result(tmp_path / "c")


def test_stopping_ends_hashing_at_the_next_window(
    tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that gives up does not wait for the rest of a large file: files not
    started are dropped, a running one stops at its next window."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(data)
    started = threading.Event()
    real = hashing.hash_range
    calls = 0

    def slow(
        fd: int, start: int, end: int, h: object, *, stop: threading.Event, name: object = None
    ) -> None:
        nonlocal calls
        calls += 1
        started.set()
        stop.wait(5)  # still busy with the first window when the caller gives up
        real(fd, start, end, h, stop=stop, name=name)  # type: ignore[arg-type]

    monkeypatch.setattr(hashing, "hash_range", slow)
    hasher = FileHasher(paths, workers=1)
    assert started.wait(5)
    hasher.close()
    assert calls == 1  # the other two files were never started
    for path in paths:
        with pytest.raises(HashingStopped):
            hasher.result(path)


def test_stop_flag_raises_before_the_next_window(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashingStopped):
        digest_file(path, stop=stop)


def test_leaving_the_block_on_an_error_stops_the_hashing(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    with pytest.raises(RuntimeError, match="signature"), FileHasher([path]):
        raise RuntimeError("bad signature")
    assert not any(t.name == "packager-hash" and t.is_alive() for t in threading.enumerate())


def test_background_hasher_matches_hashlib(data: bytes) -> None:
    chunks = [data[i : i + 1000] for i in range(0, 50_000, 1000)] + [data]
    with BackgroundHasher(depth=2) as hasher:
        for chunk in chunks:
            hasher.update(chunk)
        assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    empty = BackgroundHasher()
    assert empty.hexdigest() == hashlib.sha256(b"").hexdigest()
    empty.close()  # closing twice is harmless


def test_background_hasher_thread_ends_when_abandoned() -> None:
    with BackgroundHasher() as hasher:
        hasher.update(b"partial")
    assert not any(t.name == "packager-sha256" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "a" * 64 + "\n",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
        "sha256:" + "a" * 65,
    ],
)
def test_malformed_digests_are_refused_whole_string(text: str) -> None:
    with pytest.raises(TamperedError, match="malformed digest"):
        Digest.parse(text)
