"""The fleet examples (systemd service and timer, cron line) are valid for systemd and run as
written: an update from them, then a failing one that leaves the model serving and shows in
the status file they write."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from packager.cli import main
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.instance.models import load
from packager.registry import LayoutRegistry

from .conftest import KeyPair

EXAMPLES = Path(__file__).parent.parent / "examples" / "fleet"
PACKAGER = str(Path(sys.executable).parent / "packager")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is required in CI for the fleet examples: apt-get install systemd")
        pytest.skip(f"{tool} is not installed")
    return path


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    units = []
    serve = EXAMPLES.parent / "packager-serve.service"
    for path in (EXAMPLES / "packager-update.service", EXAMPLES / "packager-update.timer", serve):
        text = path.read_text()
        # verify checks that the executables exist: point them at this environment's.
        (tmp_path / path.name).write_text(text.replace("/usr/local/bin/packager", PACKAGER))
        units.append(str(tmp_path / path.name))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def commands(home: Path, textfile: Path) -> dict[str, list[list[str]]]:
    """The commands each example runs, with this test's paths and a 1 s jitter."""

    def adapt(command: str) -> list[str]:
        command = command.replace("/usr/local/bin/packager", PACKAGER)
        command = command.replace("/var/lib/node_exporter/textfile_collector", str(textfile))
        return shlex.split(command.replace("--jitter 30m", "--jitter 1s"))

    service = {}
    for line in (EXAMPLES / "packager-update.service").read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStopPost", "Environment"):
            service[key] = value
    assert service["Environment"] == "PACKAGER_HOME=/var/lib/packager"
    (cron,) = [
        line
        for line in (EXAMPLES / "packager-update.cron").read_text().splitlines()
        if line.startswith("0 ")
    ]
    minute, hour, dom, month, dow, user, rest = cron.split(maxsplit=6)
    assert (minute, hour, dom, month, dow, user) == ("0", "*", "*", "*", "*", "packager")
    return {
        "systemd": [adapt(service["ExecStart"]), adapt(service["ExecStopPost"])],
        "cron": [adapt(part) for part in rest.split(";")],
    }


def run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACKAGER_HOME": str(home)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def status_samples(path: Path) -> dict[str, float]:
    text = path.read_text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_the_examples_update_and_report_a_failure(
    kind: str,
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
    iris: tuple[object, object],
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    now = datetime.now(UTC)
    promote("iris@1.0.0", channel="stable", registry=registry, private_key=keypair.private, now=now)
    code = main(
        ["install", "iris@stable", "--registry", str(registry.root), "--key", str(keypair.pub_path)]
    )
    assert code == 0
    main(["trust", "add-key", "publisher", str(keypair.pub_path)])
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    update, write_status = commands(home, textfile)[kind]

    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=now + timedelta(seconds=1),
    )
    result = run(update, home)
    assert result.returncode == 0, result.stderr
    if "-q" not in update:
        assert "before updating (jitter: at most 1 s)" in result.stderr
    assert run(write_status, home).returncode == 0
    metrics = status_samples(textfile / "packager.prom")
    assert metrics["packager_update_last_success"] == 1

    # The registry goes away: the update fails (exit 4), 2.0.0 keeps serving, status says so.
    shutil.rmtree(registry.root)
    assert run(update, home).returncode == 4
    assert run(write_status, home).returncode == 0
    metrics = status_samples(textfile / "packager.prom")
    assert (metrics["packager_update_last_success"], metrics["packager_update_last_exit_code"]) == (
        0,
        4,
    )
    model = load("iris", home=home)
    assert model.manifest.version == "2.0.0"
    assert model.predict(iris[0][:2])["label"].shape == (2,)  # type: ignore[index]


def test_a_bad_jitter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["update", "--jitter", "soon"]) == 2
    assert "invalid duration 'soon'" in capsys.readouterr().err


@pytest.mark.parametrize("jitter", ["99999d", "25h", "99999999999999999999d", "9" * 5000 + "s"])
def test_a_jitter_longer_than_a_day_is_refused(
    capsys: pytest.CaptureFixture[str], jitter: str
) -> None:
    assert main(["update", "--jitter", jitter]) == 2
    err = capsys.readouterr().err
    assert "is too long: at most 1d" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_a_jitter_of_zero_does_not_wait(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, keypair: KeyPair
) -> None:
    """A cron line whose jitter is a templated 0 runs the update at once."""
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert main(["update", "--key", str(keypair.pub_path), "--jitter", "0"]) == 0
    assert slept == []
    assert "waiting" not in capsys.readouterr().err


def test_a_config_file_that_is_not_utf8_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(b"\xff")
    assert main(["prune"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "config.toml" in err and "Traceback" not in err
