"""The build-side Python API: :func:`package`, exported as ``packager.package`` and called by
``packager package`` too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.build.options import PackageOptions
from packager.core.text import Progress
from packager.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from packager._io.table import Table
    from packager.build.resign import Resigned


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
    """The key itself, or the one read from a path (password from the environment or a prompt).

    Raises:
        UsageError: ``key`` is neither, or the file is not a private key.
        KeyDecryptionError: the password is wrong.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    from packager._io.keys import load_private_key, password_from_environment

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, (str, Path)):
        return load_private_key(Path(key), password=password_from_environment)
    raise UsageError("key must be a path to a private key or an EllipticCurvePrivateKey")


def package(
    model: Any,
    *,
    sample: Any,
    name: str,
    version: str,
    key: str | Path | EllipticCurvePrivateKey,
    out_dir: str | Path = "dist",
    options: PackageOptions | None = None,
    progress: Progress | None = None,
    certificate_chain: str | Path | None = None,
) -> Path:
    """Convert ``model``, check it against ``sample``, and write a signed bundle
    ``NAME-VERSION/`` in ``out_dir``; returns its directory.

    ``model``: a fitted scikit-learn estimator or pipeline (XGBoost, LightGBM through
    their scikit-learn API), a PyTorch module, an ``onnx.ModelProto``, or the path of a
    pickle/joblib, ``.pt``/``.pth`` or ``.onnx`` file (a pickle runs code: package only
    files you trust). ``sample``: rows of model inputs, as a path (.csv, .npy, .json), a
    pandas DataFrame, a mapping of columns or a 2-D array; they become the test vectors.
    ``key``: an EC private key or the path of one (``cosign.key``: password from
    ``$PACKAGER_KEY_PASSWORD``, ``$COSIGN_PASSWORD`` or a prompt). ``options``: how to
    convert, validate, quantize and describe the model; unset provenance fields get the
    git HEAD of the working directory and this packager's version, and a benchmark of a
    model file records the file's size. ``progress`` receives notes.
    ``certificate_chain``, a PEM file (the key's certificate first, then intermediates),
    signs with that chain instead of a bare key.

    Raises:
        UsageError: a bad name, version, sample, key file, certificate chain or option;
            ``out_dir/NAME-VERSION`` exists and ``options.overwrite`` is false.
        KeyDecryptionError: the key's password is wrong.
        ConversionError: the model cannot be converted, or a library it needs is missing.
        ParityError: the ONNX model answers differently from the original beyond tolerance.
    """
    from packager.build.bundle import check_destination
    from packager.build.bundle import package as build
    from packager.build.convert import load_model_file

    # Before the key's password is asked for and anything is converted.
    check_destination(
        Path(out_dir), name, version, overwrite=options is not None and options.overwrite
    )
    private_key, chain = _signing_material(key, certificate_chain)
    table = as_table(sample)
    options = _with_defaults(options or PackageOptions(), model)
    if progress is not None:
        what = model if isinstance(model, (str, Path)) else f"the {type(model).__name__}"
        progress(f"converting {what} and checking it against {table.rows} sample rows")
    return build(
        load_model_file(Path(model)) if isinstance(model, (str, Path)) else model,
        sample=table,
        name=name,
        version=version,
        key=private_key,
        out_dir=Path(out_dir),
        options=options,
        progress=progress,
        certificate_chain=chain,
    )


def resign(
    bundle: str | Path,
    *,
    key: str | Path | EllipticCurvePrivateKey,
    certificate_chain: str | Path | None = None,
    shard_size: int | None = None,
) -> Resigned:
    """Sign the bundle directory ``bundle`` again with ``key`` (as :func:`package` takes
    it), once every file matches manifest.json; only model.sig changes.

    ``certificate_chain``: a PEM file, as :func:`package` takes it. ``shard_size``: sign
    by shards of that many bytes; 0: by whole files; None: as :func:`package` chooses.

    Raises:
        UsageError: a bad key file, certificate chain or shard size; not a bundle directory.
        KeyDecryptionError: the key's password is wrong.
        TamperedError: a file is missing, extra or differs from manifest.json (model.sig
            is then unchanged).
    """
    from packager.build.resign import resign as sign_again

    private_key, chain = _signing_material(key, certificate_chain)
    return sign_again(Path(bundle), key=private_key, certificate_chain=chain, shard_size=shard_size)


def _signing_material(
    key: str | Path | EllipticCurvePrivateKey, certificate_chain: str | Path | None
) -> tuple[EllipticCurvePrivateKey, tuple[bytes, ...]]:
    """The private key and the DER certificates (none without ``certificate_chain``) to
    sign with; raises as :func:`package` says."""
    private_key = as_private_key(key)
    if certificate_chain is None:
        return private_key, ()
    from packager._io.keys import load_certificate_chain

    return private_key, load_certificate_chain(Path(certificate_chain), private_key=private_key)


def _with_defaults(options: PackageOptions, model: Any) -> PackageOptions:
    """``options`` with the provenance and benchmark fields packaging can fill itself."""
    from packager._version import __version__
    from packager.build.bundle import git_head

    provenance = options.provenance
    provenance = replace(
        provenance,
        git_commit=provenance.git_commit or git_head(Path.cwd()),
        built_by=provenance.built_by or f"packager {__version__}",
    )
    benchmark = options.benchmark
    if benchmark is not None and benchmark.original_size is None and isinstance(model, (str, Path)):
        benchmark = replace(benchmark, original_size=Path(model).stat().st_size)
    return replace(options, provenance=provenance, benchmark=benchmark)
