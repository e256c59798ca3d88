"""What every converter shares: the options, the result of a conversion, tolerances, the
extras hint."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from packager.build.options import ConvertOptions, Tolerance
from packager.core.compare import Comparison
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, ParityError, UsageError

if TYPE_CHECKING:
    import onnx


DEFAULT_RTOL = 1e-3


DEFAULT_ATOL = 1e-4


PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


TORCH_SUFFIXES = (".pt", ".pth")


PRECISIONS = ("float32", "float64")


# Which extra brings each module a model file or a converter may need.
MODULE_EXTRAS: Mapping[str, str] = {
    "sklearn": "sklearn",
    "skl2onnx": "sklearn",
    "joblib": "sklearn",
    "pandas": "sklearn",
    "scipy": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "torch": "torch",
    "onnxscript": "torch",
    "matplotlib": "plot",
}


@dataclass(frozen=True)
class Options:
    """What a conversion was asked for: tolerances (None: the converter's default for the
    task), the graph's ``precision``, and for PyTorch modules ``input_shape`` (the
    non-batch dimensions) and ``task``.

    Raises:
        UsageError: a tolerance is not a finite number >= 0, or an unknown precision.
    """

    rtol: float | None = None
    atol: float | None = None
    precision: str = "float32"
    input_shape: tuple[int, ...] | None = None
    task: str | None = None

    @classmethod
    def of(cls, conversion: ConvertOptions | None, tolerance: Tolerance | None = None) -> Options:
        """What ``packager package`` asks for: its conversion options and parity tolerance."""
        conversion, tolerance = conversion or ConvertOptions(), tolerance or Tolerance()
        shape, task = conversion.input_shape, conversion.task
        return cls(tolerance.rtol, tolerance.atol, conversion.precision, shape, task)

    def __post_init__(self) -> None:
        for label, value in (("rtol", self.rtol), ("atol", self.atol)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise UsageError(f"{label} must be a finite number >= 0, got {value!r}")
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


# The name on PyPI; the import package and the command stay ``packager``.
DISTRIBUTION = "onnx-packager"


def install_hint(extra: str) -> str:
    """The command that installs an extra: ``pip install 'onnx-packager[xgboost]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


SKLEARN_EXTRA = install_hint("sklearn")


def require(module: str, *, extra: str, purpose: str) -> Any:
    """Import ``module``, or fail with the extra that brings it.

    Raises:
        ConversionError: the module (or one it imports) is not installed; the
            message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or module).partition(".")[0]
        raise ConversionError(
            f"{purpose} needs {missing}, which is not installed: {install_hint(extra)}"
        ) from e


def parity_failure(
    subject: str, comparison: Comparison, *, rtol: float, atol: float, advice: str = ""
) -> ParityError:
    """The error for a failed comparison: how far off, the worst rows, and what to do.

    ``advice`` replaces the default suggestion (raise rtol/atol).
    """
    agreement = comparison.label_agreement
    hints = []
    if agreement is not None and agreement < 1:
        hints.append("Labels must agree exactly; no tolerance changes that.")
    hints.append(advice or "If these differences are acceptable, raise rtol/atol.")
    return ParityError(
        f"{subject} beyond rtol={rtol:g}, atol={atol:g} (max abs diff "
        f"{comparison.max_abs_diff:.3g}, max rel diff {comparison.max_rel_diff:.3g}, label "
        f"agreement {'n/a' if agreement is None else f'{agreement:.1%}'}): "
        + "; ".join(comparison.worst)
        + ". "
        + " ".join(hints)
    )


@dataclass(frozen=True)
class Original:
    """The original model, runnable on ONNX feeds (build side only; used for benchmarks).

    ``prepare`` turns ONNX feeds into what the model takes natively (a float64
    array, a DataFrame, a torch tensor); ``predict`` is the model's own call on
    that, the one worth timing; ``outputs`` gives its answers keyed and shaped
    like the ONNX outputs.
    """

    framework: str
    prepare: Callable[[Mapping[str, np.ndarray]], Any]
    predict: Callable[[Any], Any]
    outputs: Callable[[Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Conversion:
    """A converted model and the evidence that it answers like the original.

    ``expected`` holds the original model's outputs on ``feeds``, keyed by ONNX
    output name and shaped like the ONNX outputs (for an .onnx input, what
    onnxruntime answered: ``reference`` says which). ``comparison`` is ONNX
    against ``expected`` within ``rtol``/``atol``, and is always ok.

    ``external_data`` asks the bundle to keep the weights in ``model.onnx.data``
    (PyTorch's default, an .onnx file that had external data); graphs over
    2 GiB always get it. ``input_cast`` says how sample values were narrowed
    for the graph ("float64->float32"), None when they were fed as they are.
    ``original`` runs the original model again (None for an .onnx file).
    ``notes`` are things the user should know, e.g. why a float64 graph was not made.
    ``accepts_missing``: whether instances may feed missing values (see
    :func:`packager.build.convert.parity.probe_missing`); None when there is no original
    to ask (an .onnx file).
    """

    model: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    reference: str
    task: str
    label_outputs: tuple[str, ...]
    source: dict[str, str]
    rtol: float
    atol: float
    comparison: Comparison
    original: Original | None = None
    external_data: bool = False
    input_cast: str | None = None
    notes: tuple[str, ...] = ()
    accepts_missing: bool | None = None
