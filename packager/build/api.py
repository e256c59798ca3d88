"""The build-side Python API: ``packager.package(estimator, sample=X, ...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from packager._io.table import Table


def as_table(sample: Any) -> Table:
    """A Table from a path, a Table, a pandas DataFrame, a mapping of columns or a 2-D array.

    Raises:
        UsageError: the sample cannot be read as rows of model inputs.
    """
    import numpy as np

    from packager._io.table import Table, from_mapping, read_table

    if isinstance(sample, Table):
        return sample
    if isinstance(sample, (str, Path)):
        return read_table(Path(sample))
    if hasattr(sample, "columns") and hasattr(sample, "to_dict"):  # a pandas DataFrame
        return from_mapping({str(c): sample[c].to_numpy() for c in sample.columns})
    if isinstance(sample, Mapping):
        return from_mapping(sample)
    array = np.asarray(sample)
    if array.ndim != 2:
        raise UsageError(f"sample must be 2-D (rows x features), got shape {array.shape}")
    return from_mapping({f"x{i}": array[:, i] for i in range(array.shape[1])}, named=False)


def as_private_key(key: Any) -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    from packager._io.keys import load_private_key, password_from_environment

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, (str, Path)):
        return load_private_key(Path(key), password=password_from_environment)
    raise UsageError("key must be a path to a private key or an EllipticCurvePrivateKey")


def package(
    estimator_or_path: Any,
    *,
    sample: Any,
    name: str,
    version: str,
    key: Any,
    out_dir: str | Path = "dist",
    rtol: float | None = None,
    atol: float | None = None,
    license: str | None = None,
    description: str | None = None,
    readme: str | Path | None = None,
    git_commit: str | None = None,
    training_data: Sequence[str | Path] = (),
    hyperparameters: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    precision: str = "float32",
    input_shape: Sequence[int] | None = None,
    task: str | None = None,
    quantize: str | None = None,
    quantize_rtol: float | None = None,
    quantize_atol: float | None = None,
) -> Path:
    """Package a fitted estimator, a PyTorch module, an ONNX model or a model file as a
    signed bundle. ``precision``, ``input_shape``, ``task`` and the quantization options
    are those of :func:`packager.build.bundle.package`.

    Raises:
        UsageError, ConversionError, ParityError: see :func:`packager.build.bundle.package`.
    """
    from packager import __version__
    from packager.build.bundle import Provenance, git_head
    from packager.build.bundle import package as build
    from packager.build.convert import load_model_file

    model = (
        load_model_file(Path(estimator_or_path))
        if isinstance(estimator_or_path, (str, Path))
        else estimator_or_path
    )
    provenance = Provenance(
        git_commit=git_commit or git_head(Path.cwd()),
        training_data=tuple(Path(p) for p in training_data),
        hyperparameters=dict(hyperparameters or {}),
        built_by=f"packager {__version__}",
    )
    return build(
        model,
        sample=as_table(sample),
        name=name,
        version=version,
        key=as_private_key(key),
        out_dir=Path(out_dir),
        rtol=rtol,
        atol=atol,
        provenance=provenance,
        license=license,
        description=description,
        readme=Path(readme) if readme is not None else None,
        labels=labels,
        precision=precision,
        input_shape=tuple(input_shape) if input_shape is not None else None,
        task=task,
        quantize=quantize,
        quantize_rtol=quantize_rtol,
        quantize_atol=quantize_atol,
    )
