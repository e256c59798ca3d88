"""`pip install onnx-packager` without extras: the instance side works with the base dependencies.

A fresh virtual environment gets packager from this source tree with no extra; bundles are
packaged and published here (the development environment), then every instance command runs
in that environment, where no training library can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packager.cli import main

from .conftest import KeyPair

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# Every module the build extras bring; none may be importable on a lean instance.
TRAINING_STACK = (
    "sklearn",
    "skl2onnx",
    "joblib",
    "pandas",
    "torch",
    "onnxscript",
    "xgboost",
    "lightgbm",
    "onnxmltools",
    "matplotlib",
)


@pytest.fixture(scope="module")
def lean_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a new venv holding packager and its base dependencies only.

    pip builds from a copy of the sources, so that no build output lands in the tree.
    """
    base = tmp_path_factory.mktemp("lean")
    src = base / "src"
    shutil.copytree(
        ROOT / "packager", src / "packager", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    result = subprocess.run(
        [*pip, "-c", str(ROOT / "constraints.txt"), str(src)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"pip install onnx-packager (no extras) failed:\n{result.stderr}"
    return venv / "bin"


def lean_env() -> dict[str, str]:
    """This test's environment (PACKAGER_HOME, key password) without PYTHONPATH, which would
    put the source tree before the installed package."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def lean(bin_dir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run bin_dir/packager ARGS in the lean environment."""
    return in_lean(bin_dir / "packager", *args)


def lean_python(bin_dir: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the lean environment's Python."""
    return in_lean(bin_dir / "python", "-c", code)


def in_lean(program: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *map(str, args)],
        capture_output=True,
        text=True,
        env=lean_env(),
        timeout=300,
    )


def run(bin_dir: Path, *args: str | Path, expect: int = 0) -> str:
    """Run bin_dir/packager ARGS; assert its exit code; return its stdout."""
    result = lean(bin_dir, *args)
    assert result.returncode == expect, f"packager {args}: {result.stderr}"
    return result.stdout


def run_json(bin_dir: Path, *args: str | Path) -> Any:
    return json.loads(run(bin_dir, *args, "--json"))


def current(bin_dir: Path) -> dict[str, str]:
    """Installed versions of iris -> "*" for the current one, "" for the others."""
    listed = run_json(bin_dir, "list")
    return {m["version"]: "*" if m["current"] else "" for m in listed if m["name"] == "iris"}


# The HTTP server of `packager serve` (the serve extra).
SERVE_STACK = ("uvicorn", "starlette", "httptools", "uvloop", "orjson")


def test_training_stack_is_not_installed(lean_bin: Path) -> None:
    code = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {TRAINING_STACK + SERVE_STACK!r} "
        "if importlib.util.find_spec(m)]))"
    )
    result = lean_python(lean_bin, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_manifests_are_checked_without_python_jsonschema(lean_bin: Path) -> None:
    """The schema check of manifest.json needs jsonschema-rs only: the lean instance has no
    Python `jsonschema`, and a manifest its schema refuses is refused there."""
    code = (
        "import importlib.util, json\n"
        "from packager.core.manifest import parse_manifest\n"
        "from packager.errors import TamperedError\n"
        "try:\n"
        "    parse_manifest(json.dumps({'schemaVersion': 2}).encode())\n"
        "except TamperedError as e:\n"
        "    print(json.dumps([importlib.util.find_spec('jsonschema') is None, str(e)]))\n"
    )
    result = lean_python(lean_bin, code)
    assert result.returncode == 0, result.stderr
    absent, refused = json.loads(result.stdout)
    assert absent
    assert refused.startswith("manifest.json is invalid at ")


def test_instance_commands_without_extras(
    lean_bin: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        assert main(["-q", "publish", str(bundles[version])]) == 0
    promote = ["-q", "promote", "iris@1.1.0", "--channel", "stable", "--key", keypair.key_path]
    assert main([str(a) for a in promote]) == 0

    assert "install" in run(lean_bin, "--help")
    run(lean_bin, "install", "iris", expect=2)  # no trusted key yet: fail closed
    run(lean_bin, "trust", "add-key", "publisher", keypair.pub_path)
    assert run_json(lean_bin, "search")["models"] == {"iris": ["1.0.0", "1.1.0", "2.0.0"]}

    assert run_json(lean_bin, "install", "iris@1.0.0")["version"] == "1.0.0"
    assert run_json(lean_bin, "install", "iris@stable")["version"] == "1.1.0"
    update = run_json(lean_bin, "update")
    assert update["exitCode"] == 0
    assert current(lean_bin) == {"1.0.0": "", "1.1.0": "*"}

    X, _ = iris
    rows = X[[0, 60, 120]]
    expected = iris_model.predict(rows).tolist()
    header = "sepal_length,sepal_width,petal_length,petal_width"
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", header=header, comments="")
    predicted = run_json(lean_bin, "predict", "iris", "--input", tmp_path / "rows.csv")
    assert predicted["model"] == "iris@1.1.0"
    assert predicted["outputs"]["label"] == expected

    # The installed model benchmarked here: on its test vectors, then on labelled rows.
    bench = run_json(lean_bin, "benchmark", "iris", "--time-budget", "0.05")
    assert bench["model"] == "iris@1.1.0" and bench["machine"]["onnxruntime"]
    assert [e["engine"].split()[0] for e in bench["engines"]] == ["onnxruntime"]
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(
        header
        + ",species\n"
        + "".join(
            ",".join(map(repr, row.tolist())) + f",{label}\n"
            for row, label in zip(rows, expected, strict=True)
        )
    )
    data = ("--data", labelled, "--target", "species", "--time-budget", "0.05")
    assert run_json(lean_bin, "benchmark", "iris", *data)["engines"][0]["accuracy"] == 1.0

    code = (
        "import json, sys, numpy, packager; "
        "m = packager.load('iris'); "
        f"out = m.predict(numpy.array({rows.tolist()!r}, dtype=numpy.float32)); "
        "print(json.dumps(out['label'].tolist())); "
        "sys.exit(1 if 'sklearn' in sys.modules else 0)"
    )
    result = lean_python(lean_bin, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected

    refused = lean(lean_bin, "serve", "iris")
    assert refused.returncode == 2, refused.stderr
    assert "pip install 'onnx-packager[serve]'" in refused.stderr

    assert run_json(lean_bin, "rollback", "iris")["current"] == "1.0.0"
    run(lean_bin, "remove", "iris@1.1.0")
    assert current(lean_bin) == {"1.0.0": "*"}
    outcomes = [(e["action"], e["outcome"]) for e in run_json(lean_bin, "log", "iris")]
    assert ("install", "ok") in outcomes
    assert ("channel", "ok") in outcomes


def test_packaging_without_the_extra_names_it(
    lean_bin: Path, iris_files: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    """The build side is absent, and says which extra to install (exit 5)."""
    sample = iris_files / "sample.csv"
    out = tmp_path / "dist"
    result = lean(
        lean_bin,
        "package",
        iris_files / "model.joblib",
        *("--name", "iris", "--version", "1.0.0", "--sample", sample),
        *("--key", keypair.key_path, "-o", out),
    )
    assert result.returncode == 5, result.stderr
    assert "pip install 'onnx-packager[sklearn]'" in result.stderr
    assert not out.exists()
