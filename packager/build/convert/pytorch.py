"""PyTorch modules to ONNX with torch.onnx.export, checked against the module itself.

One input ``"input"`` of shape ``[batch, *input_shape]`` (dtype of the module's
parameters), the batch dimension dynamic; the sample's columns fill each row in
C order, so a CNN on 1x28x28 images takes 784 columns. Outputs are ``output``
(``output0``, ``output1``... for a module returning a tuple); with task
"classification" an ``ArgMax`` node adds a ``label`` output (int64, one per
row) that must agree exactly with the module's argmax.

``nn.Module`` goes through the dynamo exporter (torch's default, which needs
onnxscript); a TorchScript module through the TorchScript exporter, the only
one that takes it. Weights are kept in ``model.onnx.data`` as torch itself
does. Build metadata the exporter attaches to nodes (stack traces with file
paths) is dropped: it would leak build paths and make bundles differ from one
checkout to another.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from packager._io.table import Table, to_feeds
from packager.build.convert.base import Conversion, Options, Original, require
from packager.build.convert.onnxfile import first_line
from packager.build.convert.parity import Graph, check_parity, run_graph
from packager.core.graph import walk_graphs
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, PackagerError, UsageError

INPUT_NAME = "input"
LABEL_NAME = "label"
TASKS = ("classification", "regression")
EXTRA = "torch"


def convert_torch(module: Any, sample: Table, options: Options) -> Conversion:
    """Export a module (put in eval mode) and check it against the module on ``sample``.

    ``options.input_shape`` is the shape of one row without the batch dimension
    (default: the sample's column count); ``options.task`` "classification" adds
    the ``label`` output. Default tolerances: rtol 1e-3, atol 1e-4 x max(1, max
    |output|); labels exactly.

    Raises:
        ConversionError: torch or onnxscript is missing (the message names the
            extra), the module's outputs are not tensors, or the exporter or
            onnxruntime fails.
        UsageError: a bad task or input shape, or the sample does not fit it.
        ParityError: ONNX answers differ from the module's beyond tolerance.
    """
    torch = require("torch", extra=EXTRA, purpose="converting PyTorch models")
    task = options.task
    if task is not None and task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    source = _source(module, torch)
    # Inference behaviour of dropout and batch norm; exporting in training mode is wrong.
    module.eval()
    dtype = _parameter_dtype(module, torch)
    table = Table(sample.columns, sample.values, named=False)
    shape = _input_shape(options.input_shape, len(table.columns))
    feeds = to_feeds(table, (TensorSpec(INPUT_NAME, dtype, ("batch", *shape)),))
    graph, output_names = _graph(module, table, feeds, task, torch)
    original = Original(
        framework=f"pytorch {torch.__version__}",
        prepare=lambda f: torch.from_numpy(f[INPUT_NAME]),
        predict=lambda t: _call(module, t, torch),
        outputs=lambda t: _expected(module, t, output_names, task, torch),
    )
    return check_parity(
        graph,
        original,
        options,
        task=task or "unknown",
        labels=(LABEL_NAME,) if task == "classification" else (),
        source=source,
        scaled=True,
        notes=_precision_notes(options.precision, dtype),
        external_data=True,
    )


def _graph(
    module: Any, table: Table, feeds: dict[str, np.ndarray], task: str | None, torch: Any
) -> tuple[Graph, list[str]]:
    """The exported graph run on ``feeds``, and the names of the module's outputs in it.

    Raises:
        ConversionError: the module's outputs are not tensors, or the exporter or
            onnxruntime fails.
        UsageError: the module fails on the sample.
    """
    x = torch.from_numpy(feeds[INPUT_NAME])
    # Two rows at least: an example batch of 1 would fix the batch dimension at 1.
    example = x[:2] if len(x) >= 2 else x.repeat(2, *([1] * (x.dim() - 1)))
    output_names = _output_names(_call(module, example, torch))
    onnx_model = _export(module, example, output_names, torch=torch)
    if task == "classification":
        _add_argmax(onnx_model, output_names[0])
    return run_graph(onnx_model, table, feeds), output_names


def _source(module: Any, torch: Any) -> dict[str, str]:
    """The manifest's ``model.source``; the exporter is the one that takes ``module``.

    Raises:
        ConversionError: onnxscript, which the dynamo exporter needs, is not installed.
    """
    if _scripted(module, torch):
        converter, version = "torch.onnx (TorchScript exporter)", str(torch.__version__)
    else:
        onnxscript = require("onnxscript", extra=EXTRA, purpose="exporting PyTorch models")
        converter = "torch.onnx (dynamo exporter)"
        version = f"{torch.__version__}+onnxscript-{onnxscript.__version__}"
    return {
        "framework": "pytorch",
        "frameworkVersion": str(torch.__version__),
        "estimator": _describe(module),
        "converter": converter,
        "converterVersion": version,
    }


def _scripted(module: Any, torch: Any) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _precision_notes(precision: str, dtype: str) -> tuple[str, ...]:
    if precision == "float64" and dtype != "float64":
        return (
            f"the module's parameters are {dtype}, so its inputs are too and float64 values "
            "are cast; call module.double() before packaging for a float64 graph",
        )
    return ()


def _describe(module: Any) -> str:
    original = getattr(module, "original_name", None)
    if original and type(module).__name__ == "RecursiveScriptModule":
        return f"TorchScript {original}"
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _parameter_dtype(module: Any, torch: Any) -> str:
    """float64 for a module whose floating parameters are double, else float32."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return "float64" if tensor.dtype == torch.float64 else "float32"
    return "float32"


def _input_shape(input_shape: Sequence[int] | None, columns: int) -> tuple[int, ...]:
    if input_shape is None:
        return (columns,)
    shape = tuple(input_shape)
    if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
        raise UsageError(
            f"input shape must be positive whole numbers (the dimensions after the batch, "
            f"e.g. 1,28,28), got {list(shape)}"
        )
    if int(np.prod(shape)) != columns:
        raise UsageError(
            f"input shape {list(shape)} holds {int(np.prod(shape))} values per row, "
            f"the sample has {columns} column(s)"
        )
    return shape


def _call(module: Any, x: Any, torch: Any) -> Any:
    try:
        with torch.no_grad():
            return module(x)
    except Exception as e:  # whatever the module raises on inputs it refuses
        raise UsageError(
            f"the PyTorch module fails on the sample: {type(e).__name__}: {first_line(e)}"
        ) from e


def _as_tensors(result: Any) -> list[Any]:
    items = list(result) if isinstance(result, tuple | list) else [result]
    if not items or not all(hasattr(item, "detach") for item in items):
        raise ConversionError(
            f"the module must return a tensor or a tuple of tensors, got {type(result).__name__}"
        )
    return items


def _output_names(result: Any) -> list[str]:
    count = len(_as_tensors(result))
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _expected(
    module: Any, x: Any, output_names: Sequence[str], task: str | None, torch: Any
) -> dict[str, np.ndarray]:
    tensors = _as_tensors(_call(module, x, torch))
    expected = {
        name: t.detach().cpu().numpy() for name, t in zip(output_names, tensors, strict=True)
    }
    if task == "classification":
        expected[LABEL_NAME] = np.argmax(expected[output_names[0]], axis=-1).astype(np.int64)
    return expected


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress on stdout (which --json owns), graph dumps on
    stderr when tracing fails, and warnings about optional packages; keep all of it
    out of the user's output (a failure is reported by the exception it raises)."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.fx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(module: Any, example: Any, output_names: list[str], *, torch: Any) -> Any:
    import onnx

    with tempfile.TemporaryDirectory(prefix="packager-torch-") as tmp, _quiet_exporter():
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=output_names,
                **_exporter_options(module, output_names, torch),
            )
            model = onnx.load(str(path))
        except PackagerError:
            raise
        except Exception as e:  # the exporters raise many kinds, all meaning "cannot export"
            # torch wraps the reason (e.g. a data-dependent branch) in a generic error.
            reason = e.__cause__ or e
            raise ConversionError(
                f"torch.onnx.export cannot export {_describe(module)}: "
                f"{type(reason).__name__}: {first_line(reason)}"
            ) from e
    _strip_build_metadata(model)
    return model


def _exporter_options(module: Any, output_names: list[str], torch: Any) -> dict[str, Any]:
    """What differs between the exporters: a TorchScript module goes through the
    TorchScript exporter, the only one that takes it; an nn.Module through dynamo,
    which keeps the weights in a data file as torch itself does."""
    if _scripted(module, torch):
        return {
            "dynamo": False,
            "dynamic_axes": {name: {0: "batch"} for name in [INPUT_NAME, *output_names]},
        }
    return {
        "dynamo": True,
        "dynamic_shapes": ({0: torch.export.Dim("batch")},),
        "external_data": True,
        "verbose": False,
    }


def _strip_build_metadata(model: Any) -> None:
    model.doc_string = ""
    for graph in walk_graphs(model.graph):
        graph.doc_string = ""
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        for value in (*graph.input, *graph.output, *graph.value_info):
            del value.metadata_props[:]
            value.doc_string = ""
        for tensor in graph.initializer:
            del tensor.metadata_props[:]


def _add_argmax(model: Any, scores: str) -> None:
    """Append ``label = ArgMax(scores, axis=-1)``: the class index per row."""
    from onnx import TensorProto, helper

    graph = model.graph
    output = next(o for o in graph.output if o.name == scores)
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 2:
        raise UsageError(
            f"task classification needs an output of shape [batch, classes]; "
            f"{scores!r} has rank {len(dims)}"
        )
    names = {n for node in graph.node for n in (*node.input, *node.output)}
    if LABEL_NAME in names or LABEL_NAME in {v.name for v in graph.input}:
        raise ConversionError(f"the exported graph already has a tensor named {LABEL_NAME!r}")
    graph.node.append(
        helper.make_node(
            "ArgMax", [scores], [LABEL_NAME], name="packager_label", axis=-1, keepdims=0
        )
    )
    batch = dims[0].dim_param or (dims[0].dim_value if dims[0].HasField("dim_value") else None)
    graph.output.append(helper.make_tensor_value_info(LABEL_NAME, TensorProto.INT64, [batch]))
