"""packager: signed, portable ONNX bundles from trained models, verified and installed.

The public Python API is exactly what ``__all__`` lists: :func:`load` (run an installed
model), :func:`package` with :class:`PackageOptions` (build a signed bundle),
:func:`verify_bundle` (check a bundle directory against public keys), :class:`Model`,
and the exception classes of :mod:`packager.errors`. Every other module, including the
subpackages (``packager.core``, ``packager.build``, ``packager.registry`` ...), is
internal and may change in any release.

Importing ``packager`` is cheap: onnxruntime, numpy and the training frameworks are
imported only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from packager import errors
from packager._version import __version__
from packager.errors import *

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from packager.build.api import package
    from packager.build.options import *
    from packager.core.manifest import Manifest
    from packager.runtime import Model

# Imported on first use: the building side's modules (and through Model numpy and
# onnxruntime) cost start-up time that an instance's commands and services need not pay.
# Every other name of __all__ not defined here is an options object of packager.build.options.
_LAZY = {"Model": "packager.runtime", "package": "packager.build.api"}


def load(
    name: str,
    version: str | None = None,
    *,
    home: str | Path | None = None,
    prepack: bool = False,
) -> Model:
    """Load an installed model: its current version, or ``version``. ``home`` defaults to
    ``$PACKAGER_HOME``, else ``~/.local/share/packager``.

    A model with external weights keeps them mapped from their files: memory about their
    size, shared by every process that loads it. ``prepack=True`` lets onnxruntime copy
    MatMul/Gemm weights into packed form instead: faster large batches, twice the memory.

    Raises:
        NotInstalledError: the model or version is not installed (a NotFoundError).
        TamperedError: the graph does not match its manifest.
        IncompatibleModelError: this machine's onnxruntime cannot run it.
    """
    from pathlib import Path

    from packager.instance.models import load as _load

    return _load(name, version, home=Path(home) if home is not None else None, prepack=prepack)


def verify_bundle(
    bundle: str | Path, *, keys: Sequence[str | Path | EllipticCurvePublicKey]
) -> Manifest:
    """Verify a bundle directory: its signature by one of ``keys`` (public keys, or paths
    of ``cosign.pub`` PEM files), its manifest, and every file's digest; returns the
    verified manifest.

    Raises:
        UsageError: not a bundle directory, no keys, or a key file that cannot be read.
        UntrustedError: none of ``keys`` signed it.
        TamperedError: unsigned, or a file differs from what was signed, is missing or extra.
    """
    from pathlib import Path

    from packager._io.bundledir import verify_bundle as _verify_bundle
    from packager._io.keys import load_public_key
    from packager.core.policy import Trusted, adhoc_policy

    def mode() -> Trusted:
        public = [k if not isinstance(k, (str, Path)) else load_public_key(Path(k)) for k in keys]
        if not public:
            raise errors.UsageError("verify_bundle needs at least one public key")
        return Trusted(adhoc_policy(public))

    return _verify_bundle(Path(bundle), mode=mode)


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'packager' has no attribute {name!r}")
    module = _LAZY.get(name, "packager.build.options")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ConvertOptions",
    "Metadata",
    "Model",
    "PackageOptions",
    "Provenance",
    "QuantizeOptions",
    "Tolerance",
    "__version__",
    "load",
    "package",
    "verify_bundle",
]
__all__ += errors.__all__
