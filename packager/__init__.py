"""packager: signed, portable ONNX bundles from trained models, verified and installed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from packager.runtime import Model


def load(name: str, version: str | None = None, *, home: Path | None = None) -> Model:
    """Load an installed model (see :func:`packager.instance.models.load`)."""
    from packager.instance.models import load as _load

    return _load(name, version, home=home)


def package(estimator_or_path: Any, **kwargs: Any) -> Path:
    """Package a model as a signed bundle (see :func:`packager.build.api.package`)."""
    from packager.build.api import package as _package

    return _package(estimator_or_path, **kwargs)


__all__ = ["__version__", "load", "package"]
