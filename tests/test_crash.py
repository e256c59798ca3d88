"""Kill `packager install` (an upgrade) with SIGKILL at many points; nothing may break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager._io.bundledir import verify_bundle
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry
from packager.runtime import Model

from .conftest import KeyPair

RUNNER = Path(__file__).with_name("crash_runner.py")
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def run_install(home: Path, registry: Path, pub: Path, crash_at: int, count_file: Path) -> int:
    env = {
        **os.environ,
        "PACKAGER_HOME": str(home),
        "CRASH_AT": str(crash_at),
        "CRASH_COUNT_FILE": str(count_file),
    }
    args = ["-q", "install", "iris@2.0.0", "--registry", str(registry), "--key", str(pub)]
    result = subprocess.run(
        [sys.executable, str(RUNNER), *args], env=env, capture_output=True, text=True
    )
    return result.returncode


def assert_consistent(home: Path, keypair: KeyPair) -> str:
    store = Store(home)
    current = store.current_version("iris")
    assert current in ("1.0.0", "2.0.0")
    for version in store.versions("iris"):
        # A listed version is always a complete, verified bundle.
        verify_bundle(
            store.installed_dir("iris", version), mode=Trusted(adhoc_policy([keypair.public]))
        )
    assert Model.open(store.installed_dir("iris")).smoke_test().ok
    return current


@pytest.mark.slow
def test_sigkill_at_many_points_during_upgrade(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "2.0.0"):
        publish_bundle(
            bundles[version], registry=registry, mode=Unverified("publish without --key")
        )
    template = tmp_path / "template"
    install(
        "iris@1.0.0",
        registry=registry,
        store=Store(template),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )

    count_file = tmp_path / "count"
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    assert run_install(probe, registry.root, keypair.pub_path, 0, count_file) == 0
    total = int(count_file.read_text())
    assert total > 100

    # Evenly over the whole run, and densely over its last fifth (staging, switch, records).
    points = sorted(
        {*range(total // 13, total, total // 13), *range(total * 4 // 5, total, total // 60)}
    )
    outcomes: dict[str, int] = {"1.0.0": 0, "2.0.0": 0}
    for point in points:
        home = tmp_path / f"kill-{point}"
        shutil.copytree(template, home, symlinks=True)
        code = run_install(home, registry.root, keypair.pub_path, point, count_file)
        assert code == -9, f"install was not killed at line event {point} (exit {code})"
        outcomes[assert_consistent(home, keypair)] += 1
        # A re-run after the crash succeeds and leaves no staging behind.
        install(
            "iris@2.0.0",
            registry=registry,
            store=Store(home),
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
        assert assert_consistent(home, keypair) == "2.0.0"
        assert not [p for p in (home / "tmp").rglob("*") if p.is_file()]
    # The kills landed both before and after the switch.
    assert outcomes["1.0.0"] > 0
    assert outcomes["2.0.0"] > 0


def test_installs_of_one_model_serialise_on_its_lock(
    tmp_path: Path, home: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(bundles["1.0.0"], registry=registry, mode=Unverified("publish without --key"))
    store = Store(home)
    args = [sys.executable, "-m", "packager", "-q", "install", "iris@1.0.0"]
    args += ["--registry", str(registry.root), "--key", str(keypair.pub_path)]
    with store.lock("iris"):
        waiting = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)  # blocked on the lock we hold
        assert store.versions("iris") == []
    assert waiting.wait(timeout=60) == 0
    assert store.current_version("iris") == "1.0.0"
