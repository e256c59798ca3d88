"""Build side: a trained model becomes a checked ONNX graph plus proof it answers like the original.

:func:`convert` takes a fitted scikit-learn estimator or pipeline, or an ONNX
model, and a sample table. It returns a :class:`Conversion`: the graph, its
inputs and outputs, the sample as ONNX feeds, the original model's outputs on
the sample (the future test vectors) and the comparison that passed.

Importing this package imports neither scikit-learn nor skl2onnx nor onnx:
the converters load them when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from packager.core.compare import Comparison
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, UsageError

if TYPE_CHECKING:
    import onnx

    from packager.table import Table

SKLEARN_EXTRA = "pip install 'packager[sklearn]'"
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


@dataclass(frozen=True)
class Conversion:
    """A converted model and the evidence that it answers like the original.

    ``expected`` holds the original model's outputs on ``feeds``, keyed by ONNX
    output name and shaped like the ONNX outputs (for an .onnx input, what
    onnxruntime answered: ``reference`` says which). ``comparison`` is ONNX
    against ``expected`` within ``rtol``/``atol``, and is always ok.
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


def load_model_file(path: Path) -> object:
    """Load a model file: .onnx as an ONNX model, .pkl/.pickle/.joblib with joblib.

    Unpickling runs code from the file: only load files you trust. The
    instance never does this; it only reads bundles.

    Raises:
        UsageError: unknown extension, or the file cannot be read.
        ConversionError: joblib, or a library the pickle needs (scikit-learn),
            is not installed; the message names the extra to install.
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from packager.convert.onnxfile import load_onnx

        return load_onnx(path)
    if suffix not in PICKLE_SUFFIXES:
        raise UsageError(
            f"{path}: unknown model format {suffix!r}; use .onnx, or .pkl/.pickle/.joblib "
            "for a pickled scikit-learn model"
        )
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        import joblib
    except ImportError as e:
        raise ConversionError(f"reading {path} needs joblib: {SKLEARN_EXTRA}") from e
    try:
        return joblib.load(os.fspath(path))
    except ImportError as e:
        # The pickle names classes of a library this environment lacks.
        missing = (e.name or "a missing module").partition(".")[0]
        raise ConversionError(f"{path} needs {missing}: {SKLEARN_EXTRA}") from e
    except Exception as e:  # unpickling can fail with any exception a class raises
        raise UsageError(f"cannot unpickle {path}: {type(e).__name__}: {e}") from e


def convert(
    model: object, sample: Table, *, rtol: float | None = None, atol: float | None = None
) -> Conversion:
    """Convert ``model`` to ONNX and check it against the original on ``sample``.

    Tolerances default per task (see the converters); given ones override.

    Raises:
        UsageError: a tolerance is negative or not finite, the model is not
            fitted, or the sample does not fit the model.
        ConversionError: the model type is not supported, a needed library is
            missing, or the converter or onnxruntime fails.
        ParityError: ONNX answers differ from the original beyond tolerance.
    """
    for label, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise UsageError(f"{label} must be a finite number >= 0, got {value!r}")
    import onnx

    if isinstance(model, onnx.ModelProto):
        from packager.convert.onnxfile import convert_onnx

        return convert_onnx(model, sample, rtol=rtol, atol=atol)
    if any(cls.__module__.partition(".")[0] == "sklearn" for cls in type(model).__mro__):
        from packager.convert.sklearn import convert_sklearn

        return convert_sklearn(model, sample, rtol=rtol, atol=atol)
    raise ConversionError(
        f"cannot convert a {type(model).__module__}.{type(model).__qualname__}: packager "
        "converts scikit-learn estimators and pipelines, and checks existing .onnx models"
    )
