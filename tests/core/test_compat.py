from __future__ import annotations

import pytest

from packager.core.compat import check_runtime, minimum_runtime, version_tuple
from packager.errors import IncompatibleModelError
from packager.runtime import runtime_opsets, runtime_version


def test_version_tuple() -> None:
    assert version_tuple("1.32.0") == (1, 32, 0)
    assert version_tuple("1.18.1+cpu") == (1, 18, 1)
    assert version_tuple("2.0.0rc1") == (2, 0, 0)


def test_minimum_runtime_from_opset() -> None:
    assert minimum_runtime({"ai.onnx": 13}, validated_with="1.32.0") == "1.10"
    assert minimum_runtime({"ai.onnx": 21, "ai.onnx.ml": 3}, validated_with="1.32.0") == "1.18"
    assert minimum_runtime({"": 27}, validated_with="1.32.0") == "1.32"


def test_installed_runtime_reports_its_opsets() -> None:
    opsets = runtime_opsets()
    assert opsets["ai.onnx"] >= 21
    assert opsets["ai.onnx.ml"] >= 3


def test_check_runtime_against_installed_runtime() -> None:
    supported = runtime_opsets()
    check_runtime(
        model_opsets={"": 17, "ai.onnx.ml": 1},
        min_runtime="1.10",
        runtime_version=runtime_version(),
        runtime_opsets=supported,
    )
    too_new = supported["ai.onnx"] + 1
    with pytest.raises(IncompatibleModelError, match=f"opset {too_new}") as info:
        check_runtime(
            model_opsets={"": too_new},
            min_runtime="1.10",
            runtime_version=runtime_version(),
            runtime_opsets=supported,
        )
    assert info.value.exit_code == 5
    with pytest.raises(IncompatibleModelError, match="onnxruntime >= 99.1"):
        check_runtime(
            model_opsets={"": 17},
            min_runtime="99.1",
            runtime_version=runtime_version(),
            runtime_opsets=supported,
        )
    with pytest.raises(IncompatibleModelError, match="com.example"):
        check_runtime(
            model_opsets={"com.example": 1},
            min_runtime="1.10",
            runtime_version=runtime_version(),
            runtime_opsets=supported,
        )
