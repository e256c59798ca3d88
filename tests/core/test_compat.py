from __future__ import annotations

from typing import Any

import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from packager.core.compat import check_runtime, minimum_runtime, version_tuple
from packager.errors import IncompatibleModelError
from packager.runtime import runtime_ir_version, runtime_opsets, runtime_version


def test_version_tuple() -> None:
    assert version_tuple("1.32.0") == (1, 32, 0)
    assert version_tuple("1.18.1+cpu") == (1, 18, 1)
    assert version_tuple("2.0.0rc1") == (2, 0, 0)


def test_minimum_runtime_from_opset() -> None:
    assert minimum_runtime({"ai.onnx": 13}, validated_with="1.32.0") == "1.10"
    assert minimum_runtime({"ai.onnx": 21, "ai.onnx.ml": 3}, validated_with="1.32.0") == "1.18"
    assert minimum_runtime({"": 27}, validated_with="1.32.0") == "1.32"


def test_minimum_runtime_from_ml_opset_and_ir_version() -> None:
    # onnxmltools' trees: opset 15 alone would do with 1.10; ai.onnx.ml 3 needs 1.11.
    assert minimum_runtime({"": 15, "ai.onnx.ml": 3}, validated_with="1.32.0") == "1.11"
    assert minimum_runtime({"": 15, "ai.onnx.ml": 5}, validated_with="1.32.0") == "1.18"
    # torch's exporter: opset 20 (1.17) in an IR 10 file (1.18).
    assert minimum_runtime({"": 20}, ir_version=10, validated_with="1.32.0") == "1.18"
    assert minimum_runtime({"": 13}, ir_version=11, validated_with="1.32.0") == "1.22"
    assert minimum_runtime({"": 13}, ir_version=14, validated_with="1.32.0") == "1.32"


def test_installed_runtime_reports_its_opsets() -> None:
    opsets = runtime_opsets()
    assert opsets["ai.onnx"] >= 21
    assert opsets["ai.onnx.ml"] >= 3


def _loads(ir_version: int) -> bool:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def test_runtime_ir_version_is_the_highest_it_loads() -> None:
    highest = runtime_ir_version()
    # The runtime reads at least what the installed onnx library writes.
    assert highest >= onnx.IR_VERSION
    assert _loads(highest)
    assert not _loads(highest + 1)


def check(**overrides: Any) -> None:
    arguments: dict[str, Any] = {
        "model_opsets": {"": 17, "ai.onnx.ml": 1},
        "model_ir_version": 8,
        "min_runtime": "1.10",
        "runtime_version": runtime_version(),
        "runtime_opsets": runtime_opsets(),
        "runtime_ir_version": runtime_ir_version(),
    }
    arguments.update(overrides)
    check_runtime(**arguments)


def test_check_runtime_against_installed_runtime() -> None:
    check()
    too_new = runtime_opsets()["ai.onnx"] + 1
    with pytest.raises(IncompatibleModelError, match=f"opset {too_new}") as info:
        check(model_opsets={"": too_new})
    assert info.value.exit_code == 5
    assert f"an onnxruntime newer than {runtime_version()}" in str(info.value)
    with pytest.raises(IncompatibleModelError, match="onnxruntime >= 99.1"):
        check(min_runtime="99.1")
    with pytest.raises(IncompatibleModelError, match="com.example"):
        check(model_opsets={"com.example": 1})


def test_known_opsets_and_ir_versions_name_the_release_needed() -> None:
    # An old runtime (as the tables know it) asked for a newer model.
    old = {"ai.onnx": 17, "ai.onnx.ml": 3}
    with pytest.raises(IncompatibleModelError, match=r"needs onnxruntime >= 1\.20"):
        check(model_opsets={"": 22}, runtime_version="1.12.1", runtime_opsets=old)
    with pytest.raises(IncompatibleModelError, match=r"ai\.onnx\.ml.*onnxruntime >= 1\.18"):
        check(model_opsets={"ai.onnx.ml": 5}, runtime_version="1.12.1", runtime_opsets=old)
    with pytest.raises(
        IncompatibleModelError,
        match=r"IR version 10, onnxruntime 1\.12\.1 reads up to IR 8.*>= 1\.18",
    ):
        check(model_ir_version=10, runtime_version="1.12.1", runtime_ir_version=8)


def test_ir_version_newer_than_the_runtime_is_refused() -> None:
    newest = runtime_ir_version()
    check(model_ir_version=newest)
    with pytest.raises(IncompatibleModelError, match=f"IR version {newest + 1}") as info:
        check(model_ir_version=newest + 1)
    assert info.value.exit_code == 5
    assert f"an onnxruntime newer than {runtime_version()}" in str(info.value)
