"""What `install` and `update` report when something fails around the models: the
retention after an install, and (for `status`) failures before any model is reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.cli import main
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import LockTimeoutError
from packager.registry import LayoutRegistry

from .conftest import KeyPair


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    return registry


def keep_one(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[retention]\nkeep = 1\n")


def lock_held(*_args: object, **_kwargs: object) -> None:
    """What retention meets when another process holds the model's lock."""
    raise LockTimeoutError("another install, rollback or removal of iris holds its lock")


def test_an_install_whose_retention_fails_is_still_a_success(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    registry: LayoutRegistry,
    keypair: KeyPair,
    home: Path,
) -> None:
    keep_one(home)
    monkeypatch.setattr("packager.instance.retention.prune", lock_held)
    code, out, err = cli(
        capsys, "install", "iris@1.1.0", "--registry", registry.root, "--key", keypair.pub_path
    )
    assert code == 0, err
    assert out.startswith("installed iris@1.1.0")
    assert "WARNING: iris: old versions not pruned (another install" in err
    code, out, err = cli(
        capsys,
        *("install", "iris@2.0.0", "--registry", registry.root, "--key", keypair.pub_path),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["installed"] is True
    code, out, _ = cli(capsys, "log", "iris", "--json")
    failed = [e for e in json.loads(out) if (e["action"], e["outcome"]) == ("prune", "failed")]
    assert len(failed) == 2 and "LockTimeoutError" in failed[-1]["detail"]
