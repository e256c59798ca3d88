"""The command line and Python API with models beyond scikit-learn: PyTorch, precision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import packager
from packager.build.options import ConvertOptions, PackageOptions
from packager.core.manifest import TensorSpec, parse_manifest

from .conftest import KeyPair, cli
from .core.test_manifest import assert_round_trips


def test_torch_cnn_file_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keypair: KeyPair, home: Path
) -> None:
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 26 * 26, 4),
    )
    torch.save(cnn, tmp_path / "cnn.pt")
    images = np.random.default_rng(0).random((5, 28 * 28))
    np.save(tmp_path / "sample.npy", images)
    package = [
        "package",
        tmp_path / "cnn.pt",
        "--name",
        "digits",
        "--version",
        "1.0.0",
        "--sample",
        tmp_path / "sample.npy",
        "--key",
        keypair.key_path,
        "-o",
        tmp_path / "dist",
    ]
    code, _, err = cli(capsys, *package, "--input-shape", "1,27,28")
    assert code == 2
    assert "holds 756 values per row, the sample has 784 column(s)" in err
    code, _, err = cli(capsys, *package, "--input-shape", "1,x,28")
    assert code == 2 and "--input-shape" in err

    code, out, err = cli(
        capsys, *package, "--input-shape", "1,28,28", "--task", "classification", "--json"
    )
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    manifest = assert_round_trips((bundle / "manifest.json").read_bytes())
    assert manifest.model.inputs == (TensorSpec("input", "float32", ("batch", 1, 28, 28)),)
    assert manifest.file("model.onnx.data").role == "weights"
    assert manifest.validation.label_agreement == 1.0
    assert manifest.validation.input_cast == "float64->float32"
    assert manifest.model.source.framework == "pytorch"

    assert cli(capsys, "publish", bundle)[0] == 0
    assert cli(capsys, "install", "digits", "--key", keypair.pub_path)[0] == 0
    code, out, err = cli(capsys, "predict", "digits", "--input", tmp_path / "sample.npy", "--json")
    assert code == 0, err
    outputs = json.loads(out)["outputs"]
    with torch.no_grad():
        scores = cnn(torch.tensor(images.reshape(5, 1, 28, 28), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(outputs["output"], scores, rtol=1e-4, atol=1e-5)
    assert outputs["label"] == scores.argmax(axis=1).tolist()


def test_precision_float64(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_files: Path, keypair: KeyPair
) -> None:
    code, out, err = cli(
        capsys,
        "package",
        iris_files / "model.joblib",
        "--name",
        "iris",
        "--version",
        "1.0.0",
        "--sample",
        iris_files / "sample.csv",
        "--key",
        keypair.key_path,
        "-o",
        tmp_path,
        "--precision",
        "float64",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert "inputCast" not in doc["validation"]
    assert doc["validation"]["maxAbsDiff"] < 1e-12
    manifest = parse_manifest((Path(doc["bundle"]) / "manifest.json").read_bytes())
    assert manifest.model.inputs[0].dtype == "float64"


def test_python_api_passes_the_conversion_options(tmp_path: Path, keypair: KeyPair) -> None:
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 3))
    bundle = packager.package(
        cnn,
        sample=np.random.default_rng(0).random((4, 64)),
        name="tiny",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path,
        options=PackageOptions(
            conversion=ConvertOptions(input_shape=(1, 8, 8), task="classification")
        ),
    )
    manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    assert manifest.model.inputs[0].shape == ("batch", 1, 8, 8)
    assert manifest.validation.label_outputs == ("label",)
