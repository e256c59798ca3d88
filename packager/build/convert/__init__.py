"""Build side: a trained model becomes a checked ONNX graph plus proof it answers like the original.

:func:`convert` takes a fitted scikit-learn estimator or pipeline (XGBoost and
LightGBM models through their scikit-learn API, alone or as a pipeline's last
step), a PyTorch module, or an ONNX model, and a sample table. It returns a
:class:`Conversion`: the graph, its inputs and outputs, the sample as ONNX
feeds, the original model's outputs on the sample (the future test vectors)
and the comparison that passed.

Importing this package imports no framework, converter, nor onnx: each
converter loads what it needs when called, and a missing one is a
ConversionError naming the extra to install.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from packager.build.convert.base import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    MODULE_EXTRAS,
    PICKLE_SUFFIXES,
    PRECISIONS,
    SKLEARN_EXTRA,
    TORCH_SUFFIXES,
    Conversion,
    Options,
    Original,
    install_hint,
    parity_failure,
    require,
)
from packager.errors import ConversionError, UsageError

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "MODULE_EXTRAS",
    "PICKLE_SUFFIXES",
    "PRECISIONS",
    "SKLEARN_EXTRA",
    "TORCH_SUFFIXES",
    "Conversion",
    "Options",
    "Original",
    "convert",
    "install_hint",
    "load_model_file",
    "parity_failure",
    "require",
]

if TYPE_CHECKING:
    from packager._io.table import Table


def load_model_file(path: Path) -> object:
    """Load a model file: .onnx as an ONNX model, .pkl/.pickle/.joblib with joblib,
    .pt/.pth as a TorchScript file or a whole module saved with ``torch.save``.

    Unpickling runs code from the file (joblib, and ``torch.load`` with
    ``weights_only=False``, which a whole saved module needs): only load files
    you trust. This happens on the build side only; the instance never
    unpickles anything, it reads bundles.

    Raises:
        UsageError: unknown extension, or the file cannot be read or holds no model.
        ConversionError: joblib, torch, or a library the pickle needs (e.g.
            scikit-learn, xgboost) is not installed; the message names the
            extra to install.
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from packager.build.convert.onnxfile import load_onnx

        return load_onnx(path)
    if suffix not in PICKLE_SUFFIXES + TORCH_SUFFIXES:
        raise UsageError(
            f"{path}: unknown model format {suffix!r}; use .onnx, .pkl/.pickle/.joblib for a "
            "pickled scikit-learn, XGBoost or LightGBM model, or .pt/.pth for a PyTorch module"
        )
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    joblib = require("joblib", extra="sklearn", purpose=f"reading {path}")
    try:
        return joblib.load(os.fspath(path))
    except ImportError as e:
        raise _missing_library(path, e) from e
    except Exception as e:  # unpickling can fail with any exception a class raises
        raise UsageError(f"cannot unpickle {path}: {type(e).__name__}: {e}") from e


def _missing_library(path: Path, error: ImportError) -> ConversionError:
    """The pickle names classes of a library this environment lacks: say which extra has it."""
    missing = (error.name or "a missing module").partition(".")[0]
    extra = MODULE_EXTRAS.get(missing, "sklearn")
    return ConversionError(f"{path} needs {missing}, which is not installed: {install_hint(extra)}")


def _load_torch(path: Path) -> object:
    torch = require("torch", extra="torch", purpose=f"reading the PyTorch file {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            # TorchScript archives carry the module's code; torch.save archives only pickles.
            scripted = any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(
            f"{path} is not a PyTorch file saved with torch.save or torch.jit.save: {e}"
        ) from e
    try:
        if scripted:
            loaded = torch.jit.load(os.fspath(path), map_location="cpu")
        else:
            # A whole saved module is a pickle of its class: this runs code from the file.
            loaded = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    except ImportError as e:
        raise _missing_library(path, e) from e
    except Exception as e:  # torch and unpickling raise many kinds
        raise UsageError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    if isinstance(loaded, Mapping):
        raise UsageError(
            f"{path} holds a state_dict (weights without the module): save the whole module "
            "(torch.save(model, path)) or a TorchScript file (torch.jit.save)"
        )
    if not isinstance(loaded, torch.nn.Module):
        raise UsageError(f"{path} holds a {type(loaded).__name__}, not a torch.nn.Module")
    return loaded


def convert(model: object, sample: Table, options: Options | None = None) -> Conversion:
    """Convert ``model`` to ONNX and check it against the original on ``sample``.

    Unset tolerances default per task (see the converters). ``options.precision``
    "float64" converts to a double-precision graph where the
    converter supports it, else falls back to float32 inputs and records the
    cast (``Conversion.input_cast``). ``input_shape`` (the non-batch
    dimensions) and ``task`` ("classification" adds an argmax ``label``
    output, "regression") are for PyTorch modules.

    Raises:
        UsageError: a bad option, a model that is not fitted, or a sample that
            does not fit the model.
        ConversionError: the model type is not supported, a needed library is
            missing (the message names the extra), or the converter or
            onnxruntime fails.
        ParityError: ONNX answers differ from the original beyond tolerance.
    """
    options = options or Options()
    rtol, atol = options.rtol, options.atol
    roots = {cls.__module__.partition(".")[0] for cls in type(model).__mro__}
    if "torch" in roots:
        from packager.build.convert.pytorch import convert_torch

        return convert_torch(model, sample, options)
    for option, given in (
        ("input shape", options.input_shape is not None),
        ("task", options.task is not None),
    ):
        if given:
            raise UsageError(f"the {option} option is for PyTorch models only")
    if "onnx" in roots or type(model).__module__ == "packager.build.convert.onnxfile":
        import onnx

        from packager.build.convert.onnxfile import OnnxFile, convert_onnx

        if isinstance(model, OnnxFile):
            return convert_onnx(
                model.model, sample, rtol=rtol, atol=atol, external_data=model.external_data
            )
        if isinstance(model, onnx.ModelProto):
            return convert_onnx(model, sample, rtol=rtol, atol=atol)
    if "sklearn" in roots:
        from packager.build.convert.sklearn import convert_sklearn

        return convert_sklearn(model, sample, options)
    raise ConversionError(
        f"cannot convert a {type(model).__module__}.{type(model).__qualname__}: packager "
        "converts scikit-learn estimators and pipelines, XGBoost and LightGBM models through "
        "their scikit-learn API (XGBClassifier, LGBMRegressor, ...), PyTorch modules, and "
        "checks existing .onnx models"
    )
