"""`make offline-installer`: one archive installs packager where there is no network at all.

The archive is built here (pip's cache and the index make it quick), then unpacked and
installed under `unshare -n`, a network namespace with no interface but loopback: any
attempt to reach an index fails. The tool installed there installs a model from an archive
exported on this side and predicts with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from packager.cli import main

from .conftest import KeyPair

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def offline(*command: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run COMMAND with no network (`unshare -n`; this test runs as root, as CI does)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to prove the install needs no network"
    return subprocess.run(
        [unshare, "-n", *map(str, command)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline installer for this machine, built from this source tree."""
    out = tmp_path_factory.mktemp("offline-dist")
    result = subprocess.run(
        [sys.executable, ROOT / "tools" / "offline_installer.py", "-o", out],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("*.tar.gz")
    assert str(built) in result.stdout
    return built


def test_archive_holds_the_instance_side_only(archive: Path) -> None:
    pyver = "{}.{}".format(*sys.version_info[:2])
    assert archive.name.startswith(f"onnx-packager-offline-0.1.0-py{pyver}-")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    stem = archive.name.removesuffix(".tar.gz")
    assert {f"{stem}/install.sh", f"{stem}/requirements.txt"} <= set(names)
    wheels = {n.split("/")[-1].split("-")[0].lower() for n in names if n.endswith(".whl")}
    assert {"onnx_packager", "onnxruntime", "numpy", "cryptography", "click"} <= wheels
    assert not wheels & {"scikit_learn", "skl2onnx", "torch", "pandas", "xgboost", "lightgbm"}


def test_install_and_predict_with_no_network(
    archive: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    iris_model: object,
    iris_files: Path,
    tmp_path: Path,
) -> None:
    assert main(["-q", "publish", str(bundles["1.0.0"])]) == 0
    models = tmp_path / "models.tar"
    assert main(["-q", "export", "iris@1.0.0", "-o", str(models)]) == 0

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (install_sh,) = (tmp_path / "unpacked").glob("*/install.sh")
    # Nothing of this machine's pip configuration (find-links, indexes) may help.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PACKAGER_HOME"] = str(tmp_path / "instance")
    env["PYTHON"] = sys.executable  # the Python the wheels are for
    venv = tmp_path / "opt-packager"

    reached = offline(
        sys.executable,
        "-c",
        "import socket; socket.create_connection(('pypi.org', 443), 5)",
        env=env,
    )
    assert reached.returncode != 0, "the sandbox has a network: this test would prove nothing"
    installed = offline("sh", install_sh, venv, env=env)
    assert installed.returncode == 0, installed.stderr
    packager = venv / "bin" / "packager"

    result = offline(packager, "install", models, "--key", keypair.pub_path, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "1.0.0"
    inputs = iris_files / "input.csv"
    result = offline(packager, "predict", "iris", "--input", inputs, "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = np.loadtxt(inputs, delimiter=",", skiprows=1)
    assert json.loads(result.stdout)["outputs"]["label"] == iris_model.predict(rows).tolist()


def test_install_sh_refuses_another_python(archive: Path, tmp_path: Path) -> None:
    """Wheels for one Python version are refused by another, before any venv is made."""
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    (install_sh,) = tmp_path.glob("*/install.sh")
    fake = tmp_path / "python-other"
    fake.write_text("#!/bin/sh\necho 3.99\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    result = offline("sh", install_sh, tmp_path / "venv", env=env)
    assert result.returncode == 2
    assert "these wheels are for Python" in result.stderr
    assert not (tmp_path / "venv").exists()
