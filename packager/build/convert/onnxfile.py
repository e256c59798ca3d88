"""Existing .onnx files, and the ONNX helpers every converter shares.

An .onnx file is already converted: there is no original model to compare
with, so onnxruntime's own answers on the sample become the expected outputs.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper

from packager._io.table import Table, to_feeds
from packager.build.convert.base import DEFAULT_ATOL, DEFAULT_RTOL, Conversion
from packager.core.compare import compare_outputs
from packager.core.graph import is_external, stored_tensors
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, ParityError, UsageError

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
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Protobuf cannot serialize a message over 2 GiB: larger models need external data.
MAX_PROTOBUF_BYTES = (2 << 30) - 1
# Tensors below this stay inside the graph (onnx's own default threshold).
EXTERNAL_DATA_THRESHOLD = 1024


@dataclass(frozen=True)
class OnnxFile:
    """An .onnx file read into memory; ``external_data`` says whether its weights were
    in separate files (the bundle keeps them separate too)."""

    model: onnx.ModelProto
    external_data: bool


def load_onnx(path: Path) -> OnnxFile:
    """Load an .onnx file with its external data (files next to it).

    Raises:
        UsageError: the file is missing, unreadable or not an ONNX model, or
            its external data is missing or outside the model's directory.
    """
    try:
        # The graph alone first, to learn whether weights live elsewhere; then
        # onnx.load, whose own checks refuse data outside the model's directory.
        graph_only = onnx.load(os.fspath(path), load_external_data=False)
        external = any(is_external(t) for t in stored_tensors(graph_only))
        return OnnxFile(onnx.load(os.fspath(path)), external)
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
    model: onnx.ModelProto,
    sample: Table,
    *,
    rtol: float | None,
    atol: float | None,
    external_data: bool = False,
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
        external_data=external_data,
    )


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Whether the model is too large for one protobuf file (2 GiB) and must keep weights apart."""
    return int(model.ByteSize()) > MAX_PROTOBUF_BYTES


def save_onnx(
    model: onnx.ModelProto, directory: Path, name: str, *, external_data: bool
) -> tuple[str, ...]:
    """Write ``directory/name``, and with ``external_data`` its weights to ``name + ".data"``.

    Tensors of at least 1 KiB go to the data file, in graph order, so the same
    model gives the same bytes. Returns the data files written (none when no
    tensor is that large). ``model`` itself is left unchanged.

    Raises:
        OSError: a file cannot be written.
    """
    path = directory / name
    if not (external_data or needs_external_data(model)):
        path.write_bytes(model.SerializeToString(deterministic=True))
        return ()
    data_name = f"{name}.data"
    (directory / data_name).unlink(missing_ok=True)  # onnx appends to an existing file
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    external_data_helper.convert_model_to_external_data(
        copy,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=EXTERNAL_DATA_THRESHOLD,
        convert_attribute=False,
    )
    copy = external_data_helper.write_external_data_tensors(copy, os.fspath(directory))
    path.write_bytes(copy.SerializeToString(deterministic=True))
    return (data_name,) if (directory / data_name).exists() else ()


def make_session(model: onnx.ModelProto, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session over an in-memory model (through a temporary
    directory when the model is over 2 GiB).

    Raises:
        ConversionError: onnxruntime cannot load the model.
    """
    import onnxruntime as ort  # deferred: only converting needs a session here

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    try:
        if not needs_external_data(model):
            return ort.InferenceSession(
                model.SerializeToString(), sess_options=options, providers=providers
            )
        with tempfile.TemporaryDirectory(prefix="packager-onnx-") as tmp:
            save_onnx(model, Path(tmp), "model.onnx", external_data=True)
            return ort.InferenceSession(
                os.fspath(Path(tmp) / "model.onnx"), sess_options=options, providers=providers
            )
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise ConversionError(f"onnxruntime cannot load the model: {first_line(e)}") from e


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
    # One thread: parallel reductions may sum in another order and change the last bits.
    return make_session(model, threads=1)


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
    # Some converters color their messages for terminals; the escapes are noise here.
    lines = _ANSI_ESCAPE.sub("", str(error)).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
