"""Opt-in quantization of a converted model, kept only while it still passes the parity check.

``dynamic`` is onnxruntime's ``quantize_dynamic``: weights of MatMul/Gemm-like
nodes stored as int8, activations quantized at run time. The quantized graph
is compared with the ORIGINAL model's outputs on the sample (the test vectors
keep those), within the tolerance the caller gives; a model that drifts further
is refused rather than shipped. Graphs without such nodes (tree ensembles)
come out the same size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.build.convert import Conversion, parity_failure
from packager.build.convert.onnxfile import check_model, first_line, run_onnx, save_onnx
from packager.core.compare import compare_outputs
from packager.errors import ConversionError, PackagerError, UsageError

METHODS = ("dynamic",)


@dataclass(frozen=True)
class Quantization:
    """What quantizing did: the method and the model's bytes (graph + weights) before and after."""

    method: str
    size_before: int
    size_after: int

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "sizeBefore": self.size_before, "sizeAfter": self.size_after}

    def describe(self) -> str:
        change = (self.size_after - self.size_before) / self.size_before if self.size_before else 0
        return (
            f"quantized ({self.method}): {self.size_before} -> {self.size_after} bytes "
            f"({change:+.1%})"
        )


def quantize(
    conversion: Conversion,
    *,
    method: str,
    rtol: float | None = None,
    atol: float | None = None,
) -> tuple[Conversion, Quantization]:
    """Quantize ``conversion.model`` and check it against the original's outputs.

    ``rtol``/``atol`` default to the conversion's own tolerances. Returns the
    conversion with the quantized graph, the new comparison and the
    tolerances the bundle must record, and the size change.

    Raises:
        UsageError: an unknown method or a bad tolerance.
        ConversionError: onnxruntime cannot quantize or run the quantized model.
        ParityError: the quantized model answers beyond the tolerance.
    """
    if method not in METHODS:
        raise UsageError(f"quantization method must be one of {', '.join(METHODS)}, got {method!r}")
    for label, value in (("quantize rtol", rtol), ("quantize atol", atol)):
        if value is not None and not (value >= 0 and value != float("inf")):
            raise UsageError(f"{label} must be a finite number >= 0, got {value!r}")
    rtol = conversion.rtol if rtol is None else rtol
    atol = conversion.atol if atol is None else atol
    with tempfile.TemporaryDirectory(prefix="packager-quantize-") as tmp:
        work = Path(tmp)
        before = _write(conversion, work / "before")
        after_dir = work / "after"
        after_dir.mkdir()
        quantized = _quantize_dynamic(
            work / "before" / "model.onnx", after_dir / "model.onnx", conversion.external_data
        )
        check_model(quantized)
        after = _write(dataclasses.replace(conversion, model=quantized), work / "final")
    actual = run_onnx(quantized, conversion.feeds)
    comparison = compare_outputs(
        actual,
        conversion.expected,
        rtol=rtol,
        atol=atol,
        label_outputs=conversion.label_outputs,
    )
    if not comparison.ok:
        raise parity_failure(
            f"the {method}-quantized model answers differently from the original",
            comparison,
            rtol=rtol,
            atol=atol,
            advice="Package without --quantize, or allow more with "
            "--quantize-rtol/--quantize-atol.",
        )
    result = dataclasses.replace(
        conversion, model=quantized, comparison=comparison, rtol=rtol, atol=atol
    )
    return result, Quantization(method, before, after)


def _write(conversion: Conversion, directory: Path) -> int:
    """Write the model as the bundle would; returns its bytes on disk (graph + weights)."""
    directory.mkdir()
    data = save_onnx(
        conversion.model, directory, "model.onnx", external_data=conversion.external_data
    )
    return sum((directory / name).stat().st_size for name in ("model.onnx", *data))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # quantize_dynamic logs advice ("consider pre-processing") on the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize_dynamic(source: Path, dest: Path, external_data: bool) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet():
            quantize_dynamic(
                os.fspath(source),
                os.fspath(dest),
                weight_type=QuantType.QInt8,
                use_external_data_format=external_data,
            )
        return onnx.load(os.fspath(dest))
    except PackagerError:
        raise
    except Exception as e:  # onnxruntime.quantization raises many kinds
        raise ConversionError(
            f"onnxruntime cannot quantize this model: {type(e).__name__}: {first_line(e)}"
        ) from e
