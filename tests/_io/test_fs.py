"""atomic_write replaces a file whole, with its mode, and leaves nothing behind on failure."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from packager._io.fs import atomic_write, filesystem_type, fsync_dir, fsync_file
from packager._io.keys import keygen
from packager._io.testvectors import read_testvectors, write_testvectors
from packager.instance.trust import add_key


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


def test_fsync_file_and_directory(tmp_path: Path) -> None:
    target = tmp_path / "a"
    target.write_bytes(b"data")
    fsync_file(target)
    fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsync_dir(target)


def test_every_writer_replaces_whole_files_with_their_modes(tmp_path: Path) -> None:
    """Key pair, test vectors and trust.toml are written through atomic_write: final
    modes as documented, no temporary file left behind, an old file replaced whole."""
    keys = tmp_path / "keys"
    private, public = keygen(keys, password=b"pw")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    keygen(keys, password=b"pw", force=True)
    assert sorted(os.listdir(keys)) == ["cosign.key", "cosign.pub"]

    vectors = tmp_path / "vectors"
    vectors.mkdir()
    path = vectors / "testvectors.npz"
    path.write_bytes(b"old and much longer than nothing")
    write_testvectors(path, inputs={"x": np.zeros(2)}, outputs={"y": np.ones(2)}, epoch=0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(vectors) == ["testvectors.npz"]
    assert read_testvectors(path)[1]["y"].tolist() == [1.0, 1.0]

    trust = tmp_path / "etc" / "trust.toml"
    add_key(trust, "k", public)
    assert stat.S_IMODE(trust.stat().st_mode) == 0o644
    assert os.listdir(trust.parent) == ["trust.toml"]


@pytest.mark.parametrize("where", ["tmp", "/proc"])
def test_filesystem_type_is_the_one_findmnt_reports(tmp_path: Path, where: str) -> None:
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("findmnt (util-linux) is missing")
    path = tmp_path if where == "tmp" else Path(where)
    expected = subprocess.run(
        [findmnt, "-n", "-o", "FSTYPE", "--target", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    assert filesystem_type(os.stat(path).st_dev) == expected
