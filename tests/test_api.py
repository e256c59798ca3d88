"""The public Python API: what ``packager`` exports, its types, its cost to import, and
that ``packager package`` and ``packager.package`` are one operation with one options object."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import packager
from packager import errors
from packager.cli import main

from .conftest import KeyPair

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("load", "package", "verify_bundle")


def test_all_is_the_api_and_every_error_class() -> None:
    error_classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.PackagerError)
    }
    options = {"PackageOptions", "ConvertOptions", "Tolerance", "QuantizeOptions"}
    options |= {"Metadata", "Provenance"}
    assert set(packager.__all__) == {
        "__version__",
        *FUNCTIONS,
        "Model",
        *options,
        *error_classes,
    }
    for name in packager.__all__:
        assert getattr(packager, name) is not None
    assert packager.UntrustedError is errors.UntrustedError
    from packager.runtime import Model

    assert packager.Model is Model


@pytest.mark.parametrize("name", FUNCTIONS)
def test_api_functions_have_typed_parameters_and_say_what_they_raise(name: str) -> None:
    function = getattr(packager, name)
    signature = inspect.signature(function)
    kinds = {p.kind for p in signature.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert signature.return_annotation is not inspect.Signature.empty
    assert "Raises:" in (function.__doc__ or "")


def test_import_packager_is_cheap() -> None:
    code = (
        "import sys, packager;"
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'numpy', 'sklearn', 'torch', 'click')"
        " if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_verify_bundle_takes_key_paths_or_keys(
    bundles: dict[str, Path], keypair: KeyPair, other_keypair: KeyPair, tmp_path: Path
) -> None:
    bundle = bundles["1.0.0"]
    assert packager.verify_bundle(bundle, keys=[keypair.pub_path]).ref == "iris@1.0.0"
    assert packager.verify_bundle(str(bundle), keys=[keypair.public]).version == "1.0.0"
    with pytest.raises(packager.UntrustedError):
        packager.verify_bundle(bundle, keys=[other_keypair.pub_path])
    copy = tmp_path / bundle.name
    copy.mkdir()
    for f in bundle.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "testvectors.npz").write_bytes(b"not the signed bytes")
    with pytest.raises(packager.TamperedError):
        packager.verify_bundle(copy, keys=[keypair.pub_path])


def test_cli_and_api_build_the_same_bundle_from_the_same_options(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    iris_files: Path,
    keypair: KeyPair,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    readme = tmp_path / "README.md"
    readme.write_text("# iris\n")
    code = main(
        [
            "package",
            str(iris_files / "model.joblib"),
            "--name=iris",
            "--version=1.0.0",
            f"--sample={iris_files / 'sample.csv'}",
            f"--key={keypair.key_path}",
            f"--output={tmp_path / 'cli'}",
            "--rtol=0.001",
            "--atol=0.0001",
            f"--git-commit={'c' * 40}",
            f"--training-data={iris_files / 'sample.csv'}",
            "--param=C=1.0",
            "--license=MIT",
            "--description=Iris species",
            f"--readme={readme}",
            "--precision=float64",
            "--quantize=dynamic",
            "--quantize-atol=0.5",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    options = packager.PackageOptions(
        conversion=packager.ConvertOptions(precision="float64"),
        validation=packager.Tolerance(rtol=0.001, atol=0.0001),
        quantize=packager.QuantizeOptions("dynamic", packager.Tolerance(atol=0.5)),
        metadata=packager.Metadata(license="MIT", description="Iris species", readme=readme),
        provenance=packager.Provenance(
            git_commit="c" * 40,
            training_data=(iris_files / "sample.csv",),
            hyperparameters={"C": "1.0"},
        ),
    )
    notes: list[str] = []
    api = packager.package(
        iris_files / "model.joblib",
        sample=iris_files / "sample.csv",
        name="iris",
        version="1.0.0",
        key=keypair.key_path,
        out_dir=tmp_path / "api",
        options=options,
        progress=notes.append,
    )
    cli = Path(json.loads(out)["bundle"])
    assert sorted(p.name for p in cli.iterdir()) == sorted(p.name for p in api.iterdir())
    for path in cli.iterdir():
        assert path.read_bytes() == (api / path.name).read_bytes(), path.name
    manifest = json.loads((api / "manifest.json").read_text())
    assert manifest["provenance"]["builtBy"] == f"packager {packager.__version__}"
    assert manifest["metrics"]["quantization"]["method"] == "dynamic"
    assert f"converting {iris_files / 'model.joblib'} and checking it against" in notes[0]


def test_package_of_an_estimator_records_the_git_head(
    tmp_path: Path, iris_model: object, iris: tuple[np.ndarray, np.ndarray], keypair: KeyPair
) -> None:
    X, _ = iris
    bundle = packager.package(
        iris_model,
        sample=X[::5],
        name="iris",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path,
    )
    head = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"], capture_output=True, text=True, cwd=Path.cwd()
    ).stdout.strip()
    provenance = json.loads((bundle / "manifest.json").read_text())["provenance"]
    assert provenance.get("gitCommit") == (head or None)


def test_no_function_takes_more_than_twelve_parameters() -> None:
    """A reader holds each function in mind: options travel as one object instead."""
    crowded = []
    for path in sorted((ROOT / "packager").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                if count > 12:
                    crowded.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count})")
    assert crowded == []
