"""Re-running a release pipeline: `package` does not overwrite a bundle unless told to, the
same SOURCE_DATE_EPOCH gives the same bytes, and publishing those bytes again is a no-op."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .conftest import KeyPair, cli


def package(
    capsys: pytest.CaptureFixture[str],
    iris_files: Path,
    keypair: KeyPair,
    out: Path,
    *extra: str,
) -> tuple[int, str, str]:
    return cli(
        capsys,
        "package",
        iris_files / "model.joblib",
        "--name",
        "iris",
        "--version",
        "1.0.0",
        "--sample",
        iris_files / "sample.csv",
        "--key",
        keypair.key_path,
        "-o",
        out,
        "--git-commit",
        "a" * 40,
        *extra,
    )


def tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_package_refuses_an_existing_bundle_directory_unless_forced(
    capsys: pytest.CaptureFixture[str], iris_files: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    code, _, err = package(capsys, iris_files, keypair, dist)
    assert code == 0, err
    bundle = dist / "iris-1.0.0"
    (bundle / "notes.txt").write_text("kept")  # anything there must survive a refusal
    code, out, err = package(capsys, iris_files, keypair, dist)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"packager: error: {bundle} already exists; pass --force to replace it (in Python: "
        "PackageOptions(overwrite=True)), or choose another -o directory or version"
    ]
    assert (bundle / "notes.txt").read_text() == "kept"

    code, _, err = package(capsys, iris_files, keypair, dist, "--force")
    assert code == 0, err
    assert not (bundle / "notes.txt").exists()
    assert sorted(p.name for p in dist.iterdir()) == ["iris-1.0.0"]  # nothing left beside it


def test_a_retried_pipeline_packages_the_same_bytes_and_publishes_nothing_new(
    capsys: pytest.CaptureFixture[str],
    iris_files: Path,
    keypair: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = tmp_path / "registry"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764633600")
    first, retry = tmp_path / "first", tmp_path / "retry"
    assert package(capsys, iris_files, keypair, first)[0] == 0
    assert package(capsys, iris_files, keypair, retry)[0] == 0
    assert tree(first / "iris-1.0.0") == tree(retry / "iris-1.0.0")

    publish = ("publish", "--registry", registry, "--key", keypair.pub_path, "--json")
    code, out, err = cli(capsys, publish[0], first / "iris-1.0.0", *publish[1:])
    assert code == 0, err
    published, before = json.loads(out), tree(registry)
    code, out, err = cli(capsys, publish[0], retry / "iris-1.0.0", *publish[1:])
    assert code == 0, err
    assert json.loads(out) == published
    assert tree(registry) == before

    # Another build time is other bytes: refused as today, the registry unchanged.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764637200")
    other = tmp_path / "other"
    assert package(capsys, iris_files, keypair, other)[0] == 0
    assert tree(other / "iris-1.0.0") != tree(first / "iris-1.0.0")
    code, _, err = cli(capsys, publish[0], other / "iris-1.0.0", *publish[1:])
    assert code == 4
    assert "already exists with different content" in err
    assert tree(registry) == before


def test_the_api_refuses_an_existing_bundle_directory_before_converting(
    iris_model: object, keypair: KeyPair, tmp_path: Path
) -> None:
    import numpy as np

    import packager

    (tmp_path / "iris-1.0.0").mkdir()
    with pytest.raises(packager.UsageError, match="already exists; pass --force"):
        packager.package(
            iris_model,
            sample=np.zeros((2, 4)),
            name="iris",
            version="1.0.0",
            key=keypair.private,
            out_dir=tmp_path,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["iris-1.0.0"]
    bundle = packager.package(
        iris_model,
        sample=np.ones((2, 4)),
        name="iris",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path,
        options=packager.PackageOptions(overwrite=True),
    )
    assert (bundle / "model.sig").is_file()


def test_the_readme_ci_example_sets_source_date_epoch_from_the_commit_time() -> None:
    import subprocess

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [command] = [
        line.strip().removeprefix("- ")
        for line in readme.splitlines()
        if line.strip().startswith("- export SOURCE_DATE_EPOCH=")
    ]
    # CI_COMMIT_TIMESTAMP as GitLab sets it (ISO 8601).
    result = subprocess.run(
        ["bash", "-c", f'{command} && echo "$SOURCE_DATE_EPOCH"'],
        env={"CI_COMMIT_TIMESTAMP": "2026-12-02T00:00:00+00:00", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout) == int(datetime(2026, 12, 2, tzinfo=UTC).timestamp())
