"""Registries: where bundles are published and fetched from.

This is the one place a registry reference becomes a registry:
:func:`open_registry` for reading (any kind) and :func:`open_destination` for writing
(every kind but static mirrors, which are filled by copying). New kinds are added here and
nowhere else.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError
from packager.registry.base import (
    Artifact,
    Descriptor,
    Registry,
    RegistryReader,
    RegistryWriter,
)
from packager.registry.options import RegistryOptions

if TYPE_CHECKING:
    from packager.registry.archive import ArchiveRegistry
    from packager.registry.layout import LayoutRegistry

__all__ = [
    "ArchiveRegistry",
    "Artifact",
    "Descriptor",
    "LayoutRegistry",
    "Registry",
    "RegistryOptions",
    "RegistryReader",
    "RegistryWriter",
    "open_destination",
    "open_registry",
]

# Imported on first use: every module of the package imports this one first, and an install
# from a remote registry needs neither the archive reader (nor its tar scanner) nor, from
# an OCI registry, the directory layout.
_LAZY = {
    "ArchiveRegistry": "packager.registry.archive",
    "LayoutRegistry": "packager.registry.layout",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'packager.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


# Anything that looks like a URL must never fall through to "a relative directory".
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_registry(
    ref: str | Path | None, *, home: Path, options: RegistryOptions | None = None
) -> RegistryReader:
    """Open the registry ``ref`` names for reading; None is the embedded one at
    ``home/registry``.

    ``oci://host[:port]/namespace`` is an OCI distribution registry and
    ``https://host[:port]/path`` a read-only static mirror of a registry directory, both
    reached with ``options`` (credentials, TLS, timeouts; default: anonymous, verified
    HTTPS); a path ending in ``.tar`` is an archive; any other path a directory. Local
    kinds ignore ``options``.

    Raises:
        UsageError: ``ref`` is malformed or names a kind of registry not supported yet.
    """
    text = "" if ref is None else str(ref)
    if _is_mirror(text):
        from packager.registry.http import StaticMirrorRegistry

        return StaticMirrorRegistry(text, options=options or RegistryOptions())
    return open_destination(ref, home=home, options=options)


def open_destination(
    ref: str | Path | None, *, home: Path, options: RegistryOptions | None = None
) -> Registry:
    """Open the registry ``ref`` names for writing (and reading); see :func:`open_registry`.

    An archive that does not exist yet is created by the first write (which raises
    UsageError when its directory does not exist).

    Raises:
        UsageError: ``ref`` is malformed, names a kind not supported yet, or a registry
            that cannot be written: a static mirror.
    """
    from packager.registry.layout import LayoutRegistry

    if ref is None:
        return LayoutRegistry(home / "registry")
    text = str(ref)
    scheme = _URL_RE.match(text)
    if text.startswith("oci://"):
        # Imported here: the HTTP client (http.client, ssl) is needed only by remote registries.
        from packager.registry.oci import OciRegistry

        return OciRegistry(text, options=options or RegistryOptions())
    if _is_mirror(text):
        from packager.registry.http import mirror_base

        raise UsageError(
            f"{mirror_base(text)} is a read-only mirror; publish to the registry it mirrors "
            "and copy that directory to the web server again"
        )
    if scheme:
        # Only the scheme is echoed: the rest of a URL may carry credentials.
        raise UsageError(f"{scheme.group(0)} registries are not supported yet; use a directory")
    from packager.registry.archive import ArchiveRegistry, is_archive_ref

    if is_archive_ref(text):
        return ArchiveRegistry(Path(text).expanduser())
    return LayoutRegistry(Path(text).expanduser())


def _is_mirror(ref: str) -> bool:
    scheme = _URL_RE.match(ref)
    return scheme is not None and scheme.group(0).lower() in ("http://", "https://")
