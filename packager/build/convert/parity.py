"""How a converter of an original model ends: the graph run on the sample, the original
run on the same values, and the comparison that decides whether the graph may be packaged.

scikit-learn and PyTorch conversions end the same way; an .onnx file has no original
to compare with (:mod:`packager.build.convert.onnxfile`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from packager._io.table import Table, to_feeds
from packager.build.convert.base import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    Conversion,
    Options,
    Original,
    parity_failure,
)
from packager.build.convert.onnxfile import check_model, run_onnx, tensor_specs
from packager.core.compare import compare_outputs
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Graph:
    """A converted graph that passed onnx's checker, the sample as fed to it, and
    onnxruntime's answers. ``input_cast`` says how sample values were narrowed for
    the graph ("float64->float32"), None when they were fed as they are."""

    model: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feeds: dict[str, np.ndarray]
    answers: dict[str, np.ndarray]
    input_cast: str | None


def run_graph(
    model: onnx.ModelProto, sample: Table, feeds: dict[str, np.ndarray] | None = None
) -> Graph:
    """Check ``model`` with onnx's full checker and run it once with onnxruntime.

    The sample is cast to the graph's inputs, unless ``feeds`` (the sample as the
    exporter already saw it) are given.

    Raises:
        ConversionError: the checker or onnxruntime fails, an input or output is not
            a tensor packager can store, or the graph's inputs are not the ``feeds``.
        UsageError: the sample does not fit the graph's inputs.
    """
    check_model(model)
    inputs, outputs = tensor_specs(model)
    if feeds is None:
        feeds = to_feeds(sample, inputs)
    elif [s.name for s in inputs] != list(feeds):
        raise ConversionError(
            f"the graph has inputs {[s.name for s in inputs]}, the sample feeds {list(feeds)}"
        )
    answers = run_onnx(model, feeds)
    return Graph(model, inputs, outputs, feeds, answers, input_cast(sample, inputs))


def input_cast(sample: Table, inputs: Sequence[TensorSpec]) -> str | None:
    """ "float64->float32" when a float64 sample column feeds a float32 input, else None."""
    float_columns = any(v.dtype == np.float64 for v in sample.values)
    narrow_inputs = any(spec.dtype == "float32" for spec in inputs)
    return "float64->float32" if float_columns and narrow_inputs else None


def check_parity(
    graph: Graph,
    original: Original,
    options: Options,
    *,
    task: str,
    labels: tuple[str, ...],
    source: dict[str, str],
    scaled: bool,
    notes: Sequence[str] = (),
    external_data: bool = False,
) -> Conversion:
    """Run ``original`` on the values the graph was fed and compare the two.

    ``labels`` name the outputs that must agree exactly. Tolerances not given in
    ``options`` default to rtol 1e-3 and atol 1e-4, ``scaled`` by
    max(1, the largest finite |value| among the other outputs). ``source`` is the
    manifest's ``model.source``; ``notes`` and ``external_data`` go to the Conversion.

    Whether instances may feed the model missing values is then asked of the original
    (:func:`probe_missing`).

    Raises:
        UsageError: the original model fails on the sample.
        ConversionError: the original's answers do not match the graph's outputs.
        ParityError: the graph answers differently from the original beyond tolerance.
    """
    expected = original.outputs(original.prepare(graph.feeds))
    rtol, atol = _tolerances(options, expected, labels, scaled=scaled)
    comparison = compare_outputs(
        graph.answers, expected, rtol=rtol, atol=atol, label_outputs=labels
    )
    if not comparison.ok:
        raise parity_failure(
            f"the ONNX model answers differently from the original {source['estimator']} "
            f"({original.framework})",
            comparison,
            rtol=rtol,
            atol=atol,
        )
    accepts_missing, missing_notes = probe_missing(
        graph, original, rtol=rtol, atol=atol, labels=labels
    )
    return Conversion(
        model=graph.model,
        inputs=graph.inputs,
        outputs=graph.outputs,
        feeds=graph.feeds,
        expected=expected,
        reference="original",
        task=task,
        label_outputs=labels,
        source=source,
        rtol=rtol,
        atol=atol,
        comparison=comparison,
        original=original,
        external_data=external_data,
        input_cast=graph.input_cast,
        notes=(*notes, *missing_notes),
        accepts_missing=accepts_missing,
    )


def probe_missing(
    graph: Graph, original: Original, *, rtol: float, atol: float, labels: tuple[str, ...]
) -> tuple[bool, tuple[str, ...]]:
    """Whether missing values may reach the model on an instance, and a note when the
    answer needs one.

    The sample's first row gets NaN for every number. The model takes missing values when
    the original answers that without raising and without NaN or infinity in its outputs
    (a model that passes NaN through does not handle it), and the graph answers as the
    original does there. The whole row is blanked, not one value, so that a model which
    handles missing values in some columns only is recorded as not taking them.
    """
    blanked = {name: _blank_first_row(feed) for name, feed in graph.feeds.items()}
    if all(blanked[name] is feed for name, feed in graph.feeds.items()):
        return False, ()  # no number to blank: only text inputs
    try:
        expected = original.outputs(original.prepare(blanked))
    except Exception:  # the original refuses NaN its own way (ValueError, RuntimeError, ...)
        return False, ()
    if not all(np.isfinite(v).all() for v in expected.values() if v.dtype.kind == "f"):
        return False, ()
    try:
        answers = run_onnx(graph.model, blanked)
    except ConversionError:
        answers = {}  # compares as every output missing
    if compare_outputs(answers, expected, rtol=rtol, atol=atol, label_outputs=labels).ok:
        return True, ()
    return False, (
        f"the original {original.framework} model takes missing values (NaN) but the ONNX "
        "model answers differently on them: installed, the model refuses missing values",
    )


def _blank_first_row(feed: np.ndarray) -> np.ndarray:
    """``feed`` with its first row NaN when it holds floats; the same object otherwise."""
    if feed.dtype.kind != "f" or not len(feed):
        return feed
    blanked = feed.copy()
    blanked[0] = np.nan
    return blanked


def _tolerances(
    options: Options, expected: Mapping[str, np.ndarray], labels: Sequence[str], *, scaled: bool
) -> tuple[float, float]:
    # Float32 sums and trees err in proportion to the outputs' size (logits, regression targets).
    largest = 0.0
    if scaled:
        for name, values in expected.items():
            finite = values[np.isfinite(values)] if name not in labels else values[:0]
            if finite.size:
                largest = max(largest, float(np.abs(finite).max()))
    atol = DEFAULT_ATOL * max(1.0, largest) if options.atol is None else options.atol
    return (DEFAULT_RTOL if options.rtol is None else options.rtol, atol)
