"""PyTorch modules: dynamo and TorchScript exports, input shapes, tasks, files, missing extras."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from packager._io.table import Table, from_mapping
from packager.build.convert import convert, load_model_file
from packager.build.convert.base import Options
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, UsageError


def positional(x: np.ndarray) -> Table:
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


class MLP(torch.nn.Module):
    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(width, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.head = torch.nn.Linear(4 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(30, 4))


def test_mlp_classifier_gets_an_argmax_label(rows: np.ndarray) -> None:
    torch.manual_seed(0)
    module = MLP()
    conversion = convert(module, positional(rows), Options(task="classification"))
    assert conversion.inputs == (TensorSpec("input", "float32", ("batch", 4)),)
    assert conversion.outputs == (
        TensorSpec("output", "float32", ("batch", 3)),
        TensorSpec("label", "int64", ("batch",)),
    )
    assert conversion.task == "classification"
    assert conversion.label_outputs == ("label",)
    assert conversion.input_cast == "float64->float32"
    assert conversion.external_data  # torch keeps weights apart; so does the bundle
    with torch.no_grad():
        scores = module(torch.tensor(rows, dtype=torch.float32)).numpy()
    np.testing.assert_array_equal(conversion.expected["label"], scores.argmax(axis=1))
    assert conversion.comparison.label_agreement == 1.0
    assert conversion.comparison.max_abs_diff < 1e-5
    assert conversion.source["framework"] == "pytorch"
    assert conversion.source["converter"] == "torch.onnx (dynamo exporter)"
    assert conversion.source["estimator"] == f"{__name__}.MLP"
    assert conversion.accepts_missing is False  # NaN in, NaN out: the module does not handle it


def test_batch_dimension_is_dynamic(rows: np.ndarray) -> None:
    conversion = convert(MLP(), positional(rows[:1]))  # one sample row still exports
    session = ort.InferenceSession(
        conversion.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for batch in (1, 7, 300):
        (out,) = session.run(None, {"input": np.zeros((batch, 4), np.float32)})
        assert out.shape == (batch, 3)


def test_cnn_takes_rows_reshaped_to_the_input_shape() -> None:
    images = np.random.default_rng(1).random((6, 28 * 28))
    torch.manual_seed(0)
    module = CNN()
    conversion = convert(module, positional(images), Options(input_shape=(1, 28, 28)))
    assert conversion.inputs == (TensorSpec("input", "float32", ("batch", 1, 28, 28)),)
    assert conversion.feeds["input"].shape == (6, 1, 28, 28)
    with torch.no_grad():
        expected = module(torch.tensor(images.reshape(6, 1, 28, 28), dtype=torch.float32))
    np.testing.assert_allclose(conversion.expected["output"], expected.numpy())
    assert conversion.comparison.max_abs_diff < 1e-5
    with pytest.raises(UsageError, match=r"input shape \[1, 27, 27\] holds 729 values"):
        convert(module, positional(images), Options(input_shape=(1, 27, 27)))
    with pytest.raises(UsageError, match="positive whole numbers"):
        convert(module, positional(images), Options(input_shape=(0, 784)))


def test_float64_module_gets_a_float64_graph(rows: np.ndarray) -> None:
    conversion = convert(MLP().double(), positional(rows), Options(precision="float64"))
    assert conversion.inputs[0].dtype == "float64"
    assert conversion.input_cast is None
    assert conversion.comparison.max_abs_diff < 1e-12
    float32 = convert(MLP(), positional(rows), Options(precision="float64"))
    assert float32.input_cast == "float64->float32"
    assert "module.double()" in float32.notes[0]


def test_export_is_reproducible_and_carries_no_build_paths(rows: np.ndarray) -> None:
    torch.manual_seed(0)
    module = MLP()
    first = convert(module, positional(rows)).model
    second = convert(module, positional(rows)).model
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )
    # The exporter annotates nodes with stack traces naming files on the build machine.
    assert not any(node.metadata_props for node in first.graph.node)
    assert __file__.encode() not in first.SerializeToString()


def test_model_files(tmp_path: Path, rows: np.ndarray) -> None:
    torch.manual_seed(0)
    module = MLP().eval()
    torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    torch.save(module, tmp_path / "whole.pth")
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")

    scripted = convert(load_model_file(tmp_path / "scripted.pt"), positional(rows))
    assert scripted.source["converter"] == "torch.onnx (TorchScript exporter)"
    assert scripted.source["estimator"] == "TorchScript MLP"
    whole = convert(load_model_file(tmp_path / "whole.pth"), positional(rows))
    assert whole.source["converter"] == "torch.onnx (dynamo exporter)"
    with torch.no_grad():
        expected = module(torch.tensor(rows, dtype=torch.float32)).numpy()
    for conversion in (scripted, whole):
        np.testing.assert_allclose(conversion.expected["output"], expected, rtol=1e-6)
        assert conversion.comparison.max_abs_diff < 1e-5
    with pytest.raises(UsageError, match="state_dict"):
        load_model_file(tmp_path / "weights.pt")
    with pytest.raises(UsageError, match="torch.save or torch.jit.save"):
        load_model_file(tmp_path / "junk.pt")


def test_missing_torch_or_onnxscript_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rows: np.ndarray
) -> None:
    module = MLP()
    torch.save(module, tmp_path / "whole.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ConversionError, match=r"needs onnxscript.*packager\[torch\]"):
        convert(module, positional(rows))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConversionError, match=r"needs torch.*pip install 'onnx-packager\[torch\]'"):
        load_model_file(tmp_path / "whole.pt")


def test_torch_options_are_refused_for_other_models(rows: np.ndarray) -> None:
    model = LogisticRegression().fit(rows, (rows[:, 0] > 0).astype(int))
    with pytest.raises(UsageError, match="input shape option is for PyTorch"):
        convert(model, positional(rows), Options(input_shape=(4,)))
    with pytest.raises(UsageError, match="task must be one of"):
        convert(MLP(), positional(rows), Options(task="ranking"))
    with pytest.raises(UsageError, match=r"classification needs an output of shape \[batch"):
        convert(torch.nn.Flatten(0), positional(rows), Options(task="classification"))
