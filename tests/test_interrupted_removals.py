"""Removals killed part-way: ``remove``, ``prune`` and ``uninstall`` are each killed in a child
process (``os._exit`` in a patched function) right after the directory leaves models/ and
while its files are deleted; the next command that takes the model's lock finishes what was
audited and puts back what was not, so nothing stays in tmp/, every removal that happened is
in the audit log, and a model is never left followed with its files gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.instance.store import Store
from packager.registry import LayoutRegistry

from .conftest import KeyPair, cli

ROOT = Path(__file__).resolve().parent.parent

# Kill the process as the removal's directory is renamed from models/ into tmp/ (after the
# rename), or as files under tmp/ are deleted (neither happens otherwise in a removal).
AFTER_RENAME = """
rename = os.rename
def killed(src, dst, *a, **k):
    rename(src, dst, *a, **k)
    if str(src).startswith(MODELS) and str(dst).startswith(TMP):
        os._exit(137)
os.rename = killed
"""
IN_RMTREE = """
rmtree = shutil.rmtree
shutil.rmtree = lambda p, *a, **k: os._exit(137) if str(p).startswith(TMP) else rmtree(p, *a, **k)
"""


def killed(home: Path, patch: str, *args: str) -> None:
    """Run ``packager ARGS`` in a child process that ``patch`` kills."""
    script = "\n".join(
        (
            "import os, shutil, sys",
            f"MODELS, TMP = {str(home / 'models') + '/'!r}, {str(home / 'tmp') + '/'!r}",
            patch,
            "from packager.cli import main",
            f"sys.exit(main({list(args)!r}))",
        )
    )
    env = {**os.environ, "PACKAGER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 137, done.stderr


@pytest.fixture
def installed(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> LayoutRegistry:
    """iris 1.0.0, 1.1.0 and 2.0.0 installed (2.0.0 current, following channel stable)."""
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    for version in ("1.0.0", "1.1.0"):
        code, _, err = cli(
            capsys,
            "install",
            f"iris@{version}",
            "--registry",
            registry.root,
            "--key",
            keypair.pub_path,
        )
        assert code == 0, err
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC),
    )
    code, _, err = cli(
        capsys, "install", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path
    )
    assert code == 0, err
    return registry


def listed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    return sorted(f"{m['name']}@{m['version']}" for m in json.loads(out))


def leftovers(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home / "tmp")) for p in (home / "tmp").rglob("*"))


def audited(home: Path, action: str) -> list[str | None]:
    return [e.version for e in Store(home).audit_log("iris") if e.action == action]


@pytest.mark.parametrize("command", [("prune", "--keep", "1"), ("remove", "iris@1.0.0")])
def test_a_removal_killed_while_deleting_is_audited_and_finished_by_the_next_command(
    capsys: pytest.CaptureFixture[str],
    installed: LayoutRegistry,
    home: Path,
    command: tuple[str, ...],
) -> None:
    action = command[0]
    killed(home, IN_RMTREE, *command)
    # The audit entry was written before any file was deleted.
    assert audited(home, action) == ["1.0.0"]
    assert listed(capsys) == ["iris@1.1.0", "iris@2.0.0"]
    assert leftovers(home) != []
    code, _, err = cli(capsys, "prune", "--keep", "1")
    assert code == 0, err
    assert leftovers(home) == ["iris"]
    assert listed(capsys) == ["iris@1.1.0", "iris@2.0.0"]
    assert audited(home, action) == ["1.0.0"]


@pytest.mark.parametrize("command", [("prune", "--keep", "1"), ("remove", "iris@1.0.0")])
def test_a_removal_killed_before_its_audit_entry_is_undone_by_the_next_command(
    capsys: pytest.CaptureFixture[str],
    installed: LayoutRegistry,
    home: Path,
    keypair: KeyPair,
    command: tuple[str, ...],
) -> None:
    action = command[0]
    killed(home, AFTER_RENAME, *command)
    assert audited(home, action) == []
    assert not (home / "models" / "iris" / "1.0.0").exists()
    # Any command that takes the lock puts the version back, whole: it was never removed.
    code, _, err = cli(capsys, "prune", "--keep", "3")
    assert code == 0, err
    assert leftovers(home) == ["iris"]
    assert listed(capsys) == ["iris@1.0.0", "iris@1.1.0", "iris@2.0.0"]
    code, _, err = cli(capsys, "verify", home / "models/iris/1.0.0", "--key", keypair.pub_path)
    assert code == 0, err
    code, _, err = cli(capsys, *command)
    assert code == 0, err
    assert listed(capsys) == ["iris@1.1.0", "iris@2.0.0"]
    assert audited(home, action) == ["1.0.0"]
    assert leftovers(home) == ["iris"]


def test_an_uninstall_killed_before_it_is_recorded_is_undone_and_can_be_run_again(
    capsys: pytest.CaptureFixture[str], installed: LayoutRegistry, home: Path, keypair: KeyPair
) -> None:
    killed(home, AFTER_RENAME, "uninstall", "iris", "--yes")
    assert not (home / "models" / "iris").exists()
    assert [f.name for f in Store(home).following()] == ["iris"]
    # update takes the lock: the model is back, still followed, and nothing is installed
    # again.
    code, out, err = cli(
        capsys, "update", "--registry", installed.root, "--key", keypair.pub_path, "--json"
    )
    assert code == 0, err
    assert [u["status"] for u in json.loads(out)["models"]] == ["current"], out
    assert listed(capsys) == ["iris@1.0.0", "iris@1.1.0", "iris@2.0.0"]
    assert leftovers(home) == ["iris"]
    assert audited(home, "install") == ["1.0.0", "1.1.0", "2.0.0"]

    code, _, err = cli(capsys, "uninstall", "iris", "--yes")
    assert code == 0, err
    assert listed(capsys) == []
    assert Store(home).following() == []
    assert audited(home, "uninstall") == [None]


def test_an_uninstall_killed_while_deleting_is_finished_and_no_longer_followed(
    capsys: pytest.CaptureFixture[str], installed: LayoutRegistry, home: Path, keypair: KeyPair
) -> None:
    killed(home, IN_RMTREE, "uninstall", "iris", "--yes")
    assert Store(home).following() == []
    assert audited(home, "uninstall") == [None]
    assert listed(capsys) == []
    code, _, err = cli(
        capsys, "install", "iris@2.0.0", "--registry", installed.root, "--key", keypair.pub_path
    )
    assert code == 0, err
    assert leftovers(home) == ["iris"]
    assert listed(capsys) == ["iris@2.0.0"]
