"""Installed models, by name: what a service on the instance loads."""

from __future__ import annotations

from pathlib import Path

from packager._io.config import resolve_home
from packager.core.names import parse_ref
from packager.instance.store import Store
from packager.runtime import Model


def load(
    name: str, version: str | None = None, *, home: Path | None = None, prepack: bool = False
) -> Model:
    """Load an installed model: the ``current`` version, or ``version`` if given.
    ``prepack``: see :class:`~packager.runtime.Model`.

    Raises:
        NotFoundError: the model or version is not installed.
        TamperedError: the graph does not match its manifest (external data, opsets).
        IncompatibleModelError: this instance's onnxruntime cannot run it.
    """
    store = Store(resolve_home(home))
    return Model.open(store.installed_dir(name, version), prepack=prepack)


def model_path(ref: str, *, home: Path | None = None) -> Path:
    """``ref`` itself when a file or directory of that name exists, else the directory of
    the installed model ``ref`` names (NAME: its current version, or NAME@VERSION).

    Raises:
        UsageError: ``ref`` is neither a path nor a model reference.
        NotFoundError: the model or version is not installed.
    """
    path = Path(ref)
    if path.exists():
        return path
    return Store(resolve_home(home)).installed_dir(*parse_ref(ref))
