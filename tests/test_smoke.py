"""The install's smoke test in a child process: its result, time and memory come back; a
child that dies is a failed smoke test, not a dead installer. The child is isolated (no
code from the working directory, no secrets in its environment) and bounded (time,
memory, the installer's life)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.core.manifest import MANIFEST, Manifest, parse_manifest
from packager.core.policy import Unverified
from packager.distribution.publish import publish_bundle
from packager.errors import SmokeTestError
from packager.instance.smoke import SmokeLimits, run_smoke_test
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair

RUNNER = Path(__file__).with_name("smoke_runner.py")


def manifest_of(bundle: Path) -> Manifest:
    return parse_manifest((bundle / MANIFEST).read_bytes())


def test_smoke_test_in_a_child_reports_the_comparison_time_and_memory(
    bundles: dict[str, Path],
) -> None:
    bundle = bundles["1.0.0"]
    smoke = run_smoke_test(bundle, manifest_of(bundle))
    assert smoke.comparison.ok and smoke.comparison.rows == 30
    assert smoke.seconds > 0
    # onnxruntime and numpy alone take more than 20 MiB: this is the child's figure.
    assert smoke.peak_rss > 20 << 20


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("exit 3", "exited with code 3 and no result"),
        ("echo onnxruntime aborted >&2; kill -KILL $$", "died of SIGKILL: onnxruntime aborted"),
        ("exit 0", "exited with code 0 and no result"),
    ],
)
def test_a_child_that_dies_is_a_failed_smoke_test(
    bundles: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    message: str,
) -> None:
    interpreter = tmp_path / "python"
    interpreter.write_text(f"#!/bin/sh\ncat >/dev/null\n{script}\n")
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    bundle = bundles["1.0.0"]
    with pytest.raises(SmokeTestError, match=message) as info:
        run_smoke_test(bundle, manifest_of(bundle))
    assert info.value.exit_code == 5


def test_a_child_that_cannot_start_is_a_failed_smoke_test(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    bundle = bundles["1.0.0"]
    with pytest.raises(SmokeTestError, match="cannot start the smoke test"):
        run_smoke_test(bundle, manifest_of(bundle))


def fake_python(path: Path, script: str) -> Path:
    """A shell script that stands in for the smoke test's interpreter."""
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # leave nothing running behind a failed test
            return False
        time.sleep(0.05)
    return True


def wait_for(path: Path, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text().strip()


@pytest.mark.parametrize(
    "planted",
    ["numpy.py", "onnxruntime.py", "sitecustomize.py", "packager/__init__.py"],
)
def test_code_planted_in_the_working_directory_is_not_run(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    # An admin runs `packager install` from a directory others can write to (/tmp).
    cwd = tmp_path / "shared"
    marker = tmp_path / "ran"
    (cwd / planted).parent.mkdir(parents=True, exist_ok=True)
    (cwd / planted).write_text(f"open({str(marker)!r}, 'w').write('planted code ran')\n")
    monkeypatch.chdir(cwd)
    # A relative entry in PYTHONPATH (often an accident, `PYTHONPATH=$PYTHONPATH:`) also
    # names the working directory.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))
    )
    bundle = bundles["1.0.0"]
    smoke = run_smoke_test(bundle, manifest_of(bundle))
    assert smoke.comparison.ok
    assert not marker.exists()


def test_a_relative_bundle_directory_is_found_from_the_childs_working_directory(
    bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = bundles["1.0.0"]
    monkeypatch.chdir(bundle.parent)
    assert run_smoke_test(Path(bundle.name), manifest_of(bundle)).comparison.ok


def test_the_child_gets_no_secret_and_runs_in_the_bundle_directory(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "PACKAGER_KEY_PASSWORD": "key-secret",
        "COSIGN_PASSWORD": "cosign-secret",
        "PACKAGER_REGISTRY_PASSWORD": "registry-secret",
        "PACKAGER_REGISTRY_USERNAME": "registry-user",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "OMP_PASSWORD": "omp-secret",
    }
    for key, value in {**secrets, "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}.items():
        monkeypatch.setenv(key, value)
    seen = tmp_path / "seen"
    script = f'env > {seen}/env; pwd > {seen}/cwd; echo "$@" > {seen}/args; exit 3'
    monkeypatch.setattr(sys, "executable", str(fake_python(tmp_path / "python", script)))
    seen.mkdir()
    bundle = bundles["1.0.0"]
    with pytest.raises(SmokeTestError, match="exited with code 3"):
        run_smoke_test(bundle, manifest_of(bundle))
    env = (seen / "env").read_text()
    for key, value in secrets.items():
        assert key not in env and value not in env
    assert "OMP_NUM_THREADS=1" in env and "LANG=C.UTF-8" in env
    assert f"PATH={os.environ['PATH']}" in env
    assert (seen / "cwd").read_text().strip() == str(bundle)
    assert (seen / "args").read_text().startswith("-I -c ")


def test_a_smoke_test_that_hangs_is_killed_with_what_it_started(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        f"sleep 300 & echo $! > {tmp_path}/grandchild; echo $$ > {tmp_path}/child; exec sleep 300"
    )
    monkeypatch.setattr(sys, "executable", str(fake_python(tmp_path / "python", script)))
    bundle = bundles["1.0.0"]
    start = time.monotonic()
    with pytest.raises(SmokeTestError, match="did not finish in time") as info:
        run_smoke_test(bundle, manifest_of(bundle), limits=SmokeLimits(seconds=1))
    assert time.monotonic() - start < 10
    assert info.value.exit_code == 5
    assert wait_dead(int((tmp_path / "child").read_text()))
    assert wait_dead(int((tmp_path / "grandchild").read_text()))


def test_the_memory_cap_stops_a_child_that_needs_more(bundles: dict[str, Path]) -> None:
    bundle = bundles["1.0.0"]
    with pytest.raises(SmokeTestError, match="32 MiB: --smoke-timeout, --smoke-memory"):
        run_smoke_test(bundle, manifest_of(bundle), limits=SmokeLimits(memory=32 << 20))


def test_default_limits_scale_with_the_bundle(bundles: dict[str, Path]) -> None:
    manifest = manifest_of(bundles["1.0.0"])
    assert SmokeLimits().resolve(manifest) == pytest.approx((120, 2 << 30), rel=1e-3)
    assert SmokeLimits(5, 1 << 30).resolve(manifest) == (5, 1 << 30)
    big = manifest.files[0].__class__(
        manifest.files[0].path, manifest.files[0].digest, 4 << 30, "model"
    )
    huge = manifest.__class__(**{**manifest.__dict__, "files": (big,)})
    assert SmokeLimits().resolve(huge) == (120 + 4 * 60, 16 << 30)


def run_cli(home: Path, interpreter: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PACKAGER_HOME": str(home), "SMOKE_INTERPRETER": str(interpreter)}
    return subprocess.Popen(
        [sys.executable, str(RUNNER), "-q", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path]) -> Path:
    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(bundles["1.0.0"], registry=registry, mode=Unverified("publish without --key"))
    return registry.root


def test_install_whose_smoke_test_hangs_exits_5_and_frees_the_lock(
    tmp_path: Path, home: Path, registry: Path, keypair: KeyPair
) -> None:
    hang = fake_python(tmp_path / "python", f"echo $$ > {tmp_path}/child; exec sleep 300")
    args = ["install", "iris@1.0.0", "--registry", str(registry), "--key", str(keypair.pub_path)]
    installer = run_cli(home, hang, *args, "--smoke-timeout", "1")
    _, stderr = installer.communicate(timeout=60)
    assert installer.returncode == 5, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "did not finish in time" in stderr
    assert wait_dead(int((tmp_path / "child").read_text()))
    with open(home / "locks" / "iris.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: nobody holds it
    assert Store(home).versions("iris") == []
    retry = subprocess.run(
        [sys.executable, "-m", "packager", "-q", *args], capture_output=True, text=True
    )
    assert retry.returncode == 0, retry.stderr
    assert Store(home).current_version("iris") == "1.0.0"


def test_killing_the_installer_kills_its_smoke_test(
    tmp_path: Path, home: Path, registry: Path, keypair: KeyPair
) -> None:
    hang = fake_python(tmp_path / "python", f"echo $$ > {tmp_path}/child; exec sleep 300")
    args = ["install", "iris@1.0.0", "--registry", str(registry), "--key", str(keypair.pub_path)]
    installer = run_cli(home, hang, *args)
    child = int(wait_for(tmp_path / "child"))
    assert alive(child)
    installer.kill()
    installer.wait(timeout=30)
    assert wait_dead(child)
