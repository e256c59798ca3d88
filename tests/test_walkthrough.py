"""README's walk-through, run as a first-time user would: its shell blocks, taken from the
README itself (so that the test fails when the README drifts), in one shell, in an empty
directory, with `packager` and `python` on PATH and nothing else prepared."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"

pytestmark = pytest.mark.slow


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks between the walk-through markers of README.md."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(START) + len(START) : readme.index(END)]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def shims(directory: Path) -> Path:
    """A bin/ with `packager` and `python` running this interpreter on these sources, as
    `pip install` would put them on PATH."""
    directory.mkdir()
    for name, command in (("python", ""), ("packager", " -m packager")):
        path = directory / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        path.chmod(0o755)
    return directory


def test_the_blocks_are_the_walkthrough() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 4
    homes = [re.findall(r"^export PACKAGER_HOME=(\S+)", b, flags=re.M) for b in blocks]
    # Each side has its own home, set before any command of that side.
    assert homes == [
        [],
        ["$PWD/build-home"],
        ["$PWD/instance-home"],
        ["$PWD/build-home", "$PWD/instance-home"],
    ]


def test_readme_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PACKAGER_", "COSIGN_")) and k != "REQUESTS_CA_BUNDLE"
    }
    env["PATH"] = f"{shims(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    script = "set -euo pipefail\n" + "\n".join(walkthrough_blocks())
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    # predict's JSON (the only JSON document on stdout) answered the three rows.
    start = re.search(r"^\{", result.stdout, flags=re.MULTILINE)
    assert start is not None, result.stdout
    predicted, _ = json.JSONDecoder().raw_decode(result.stdout, start.start())
    assert predicted["model"] == "iris-classifier@1.0.0"
    assert predicted["outputs"]["label"] == [0, 1, 2]

    # Two homes, two roles: the build side never installed; the instance never published.
    build, instance = work / "build-home", work / "instance-home"
    assert (build / "registry" / "iris-classifier").is_dir()
    assert not (build / "models").exists()
    assert not (instance / "registry").exists()
    assert (instance / "trust.toml").is_file()
    versions = sorted(p.name for p in (instance / "models" / "iris-classifier").iterdir())
    assert versions == ["1.0.0", "current"]
    assert (instance / "models" / "iris-classifier" / "current").readlink() == Path("1.0.0")
    with sqlite3.connect(instance / "state.db") as db:
        actions = [row[0] for row in db.execute("SELECT action FROM audit ORDER BY rowid")]
    assert "rollback" in actions and "remove" in actions
