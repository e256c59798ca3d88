"""atomic_write replaces a file whole, with its mode, and leaves nothing behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from packager._io.fs import atomic_write


def test_writes_bytes_and_chunks_with_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "a"
    atomic_write(target, b"one", mode=0o600)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, iter([b"tw", b"o"]))
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_a_failure_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a"
    target.write_bytes(b"old")

    def chunks():  # type: ignore[no-untyped-def]
        yield b"new"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a"]
