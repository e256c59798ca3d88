"""`packager rollback` goes back only to a version whose installed files are still the
bytes verified at its install, with or without a trust policy: a file changed since (even
with its size and mtime kept), removed, or a manifest.json that is not the one verified
refuses it (exit 3, audited, nothing changed). A file put back as it was is taken again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import KeyPair, cli


@pytest.fixture
def two_versions(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> Path:
    """iris 1.0.0 then 1.1.0 installed with --key (no trust policy file); returns 1.0.0's
    directory."""
    for version in ("1.0.0", "1.1.0"):
        assert cli(capsys, "publish", bundles[version])[0] == 0
        code, _, err = cli(capsys, "install", f"iris@{version}", "--key", keypair.pub_path)
        assert code == 0, err
    return home / "models" / "iris" / "1.0.0"


def overwrite_keeping_size_and_times(path: Path, data: bytes) -> None:
    before = path.stat()
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(before.st_mode & 0o777)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def refused(capsys: pytest.CaptureFixture[str], why: str, version_dir: Path) -> None:
    code, _, err = cli(capsys, "rollback", "iris")
    assert code == 3, err
    assert f"refusing to roll back iris to 1.0.0: its {why}" in err
    assert "1.1.0 stays current" in err
    assert os.readlink(version_dir.parent / "current") == "1.1.0"


def test_a_file_changed_since_its_install_refuses_the_rollback(
    capsys: pytest.CaptureFixture[str], two_versions: Path
) -> None:
    graph = two_versions / "model.onnx"
    good = graph.read_bytes()
    flipped = bytes([good[100] ^ 0xFF])
    overwrite_keeping_size_and_times(graph, good[:100] + flipped + good[101:])
    refused(capsys, "model.onnx is not the file verified at its install", two_versions)
    code, out, _ = cli(capsys, "log", "iris", "--json")
    last = json.loads(out)[-1]
    assert (last["action"], last["outcome"], last["version"]) == ("rollback", "refused", "1.0.0")
    # The same bytes again (a new inode fingerprint: hashed) are taken.
    overwrite_keeping_size_and_times(graph, good)
    code, out, err = cli(capsys, "rollback", "iris")
    assert code == 0, err
    assert "1.0.0" in out


def test_a_file_removed_or_a_manifest_rewritten_refuses_the_rollback(
    capsys: pytest.CaptureFixture[str], two_versions: Path
) -> None:
    sbom = next(p for p in two_versions.iterdir() if p.name.endswith(".cdx.json"))
    saved = sbom.read_bytes()
    sbom.unlink()
    refused(capsys, f"{sbom.name} is not the file verified at its install", two_versions)
    sbom.write_bytes(saved)
    manifest = two_versions / "manifest.json"
    doc = json.loads(manifest.read_bytes())
    manifest.chmod(0o644)
    manifest.write_text(json.dumps(doc, indent=1))  # the same document, other bytes
    refused(capsys, "manifest.json is not the one verified at its install", two_versions)
