"""The install's smoke test in a child process: its result, time and memory come back; a
child that dies is a failed smoke test, not a dead installer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from packager.core.manifest import MANIFEST, Manifest, parse_manifest
from packager.errors import SmokeTestError
from packager.instance.smoke import run_smoke_test


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
