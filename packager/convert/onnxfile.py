"""Existing .onnx files, and the ONNX helpers every converter shares.

An .onnx file is already converted: there is no original model to compare
with, so onnxruntime's own answers on the sample become the expected outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from packager.convert import DEFAULT_ATOL, DEFAULT_RTOL, Conversion
from packager.core.compare import compare_outputs
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, ParityError, UsageError
from packager.table import Table, to_feeds

ELEM_DTYPES: Mapping[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
_FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an .onnx file with its external data (files next to it).

    Raises:
        UsageError: the file is missing, unreadable or not an ONNX model, or
            its external data is missing or outside the model's directory.
    """
    try:
        return onnx.load(os.fspath(path))
    except Exception as e:  # protobuf DecodeError, OSError, onnx's external-data checks
        raise UsageError(f"cannot read ONNX model {path}: {first_line(e)}") from e


def check_model(model: onnx.ModelProto) -> None:
    """Run onnx's full checker (graph rules and strict shape inference).

    Raises:
        ConversionError: the model is not valid ONNX.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        raise ConversionError(f"the ONNX model is not valid: {first_line(e)}") from e


def tensor_specs(
    model: onnx.ModelProto,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's real inputs (initializers excluded) and its outputs.

    Raises:
        ConversionError: an input or output is not a tensor (e.g. ZipMap's
            sequence of maps) or has an element type packager cannot store.
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = tuple(_spec(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in graph.output)
    return inputs, outputs


def run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the model once with onnxruntime on the CPU; text outputs come back as str arrays.

    Raises:
        ConversionError: onnxruntime cannot load or run the model.
    """
    return _run(_session(model), feeds)


def convert_onnx(
    model: onnx.ModelProto, sample: Table, *, rtol: float | None, atol: float | None
) -> Conversion:
    """Check an existing ONNX model and record onnxruntime's answers on the sample.

    The model runs twice; answers that change between runs could never be
    reproduced on an instance, so they fail like a parity error.

    Raises:
        ConversionError: the model is invalid or onnxruntime cannot run it.
        UsageError: the sample does not fit the model's inputs.
        ParityError: two runs on the same sample disagree.
    """
    check_model(model)
    inputs, outputs = tensor_specs(model)
    feeds = to_feeds(sample, inputs)
    session = _session(model)
    expected = _run(session, feeds)
    again = _run(session, feeds)
    rtol = DEFAULT_RTOL if rtol is None else rtol
    atol = DEFAULT_ATOL if atol is None else atol
    labels = tuple(o.name for o in outputs if o.dtype not in _FLOAT_DTYPES)
    comparison = compare_outputs(again, expected, rtol=rtol, atol=atol, label_outputs=labels)
    if not comparison.ok:
        raise ParityError(
            "the ONNX model gives different answers on two runs of the same sample, "
            "so an instance could not check it: " + "; ".join(comparison.worst)
        )
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return Conversion(
        model=model,
        inputs=inputs,
        outputs=outputs,
        feeds=feeds,
        expected=expected,
        reference="onnxruntime",
        task="unknown",
        label_outputs=labels,
        source={
            "framework": "onnx",
            "frameworkVersion": onnx.__version__,
            "estimator": model.graph.name or producer or "unknown",
            "converter": model.producer_name or "unknown",
            "converterVersion": model.producer_version or "unknown",
        },
        rtol=rtol,
        atol=atol,
        comparison=comparison,
    )


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        hint = ""
        if kind == "sequence_type":
            hint = "; for scikit-learn classifiers convert with the option {'zipmap': False}"
        raise ConversionError(
            f"{value.name!r} is a {kind or 'value of unknown type'}, not a tensor{hint}"
        )
    tensor = value.type.tensor_type
    dtype = ELEM_DTYPES.get(tensor.elem_type)
    if dtype is None:
        name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ConversionError(
            f"{value.name!r} has element type {name}, which packager cannot store"
        )
    if not tensor.HasField("shape"):
        return TensorSpec(value.name, dtype, None)
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            shape.append(str(dim.dim_param))
        else:
            shape.append(None)
    return TensorSpec(value.name, dtype, tuple(shape))


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort  # deferred: only converting needs a session here

    options = ort.SessionOptions()
    # One thread: parallel reductions may sum in another order and change the last bits.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise ConversionError(f"onnxruntime cannot load the model: {first_line(e)}") from e


def _run(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        values = session.run(None, dict(feeds))
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise ConversionError(f"onnxruntime cannot run the model: {first_line(e)}") from e
    results = {}
    for meta, value in zip(session.get_outputs(), values, strict=True):
        array = np.asarray(value)
        # Text comes back as object arrays; test vectors must never need pickle.
        results[meta.name] = array.astype(str) if array.dtype.kind == "O" else array
    return results


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message, at most ``limit`` characters (converters are verbose)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
