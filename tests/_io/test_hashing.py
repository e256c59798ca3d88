"""FileHasher's threads get the GIL back promptly while the caller runs Python."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest

from packager._io.hashing import SWITCH_INTERVAL, FileHasher


def test_the_switch_interval_is_short_while_files_hash_and_restored_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100_000)
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL
    with FileHasher([path]) as outer:
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        with FileHasher([path]) as inner:
            assert inner.result(path)[0].hex == hashlib.sha256(path.read_bytes()).hexdigest()
        # The outer hasher still runs: the interval stays short until it closes too.
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        outer.results()
    assert sys.getswitchinterval() == before
    outer.close()  # closing again changes nothing
    assert sys.getswitchinterval() == before


def test_a_thread_that_cannot_start_restores_the_switch_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / name for name in "ab"]
    for path in paths:
        path.write_bytes(b"x" * 100_000)
    before = sys.getswitchinterval()
    real_start = threading.Thread.start
    starts: list[str] = []

    def start_one_only(thread: threading.Thread) -> None:
        starts.append(thread.name)
        if len(starts) > 1:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_one_only)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        FileHasher(paths, workers=2)
    monkeypatch.undo()
    assert starts == ["packager-hash", "packager-hash"]
    assert sys.getswitchinterval() == before
    assert not [t for t in threading.enumerate() if t.name == "packager-hash"]
