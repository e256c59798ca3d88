"""Registries: where bundles are published and fetched from.

:func:`open_registry` is the one place a registry reference becomes a :class:`Registry`;
new kinds (OCI distribution, HTTPS mirrors, archives) are added here and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

from packager.errors import UsageError
from packager.registry.archive import ArchiveRegistry, is_archive_ref
from packager.registry.base import Artifact, Descriptor, Registry
from packager.registry.layout import LayoutRegistry
from packager.registry.options import RegistryOptions

__all__ = [
    "ArchiveRegistry",
    "Artifact",
    "Descriptor",
    "LayoutRegistry",
    "Registry",
    "RegistryOptions",
    "open_registry",
]

# Anything that looks like a URL must never fall through to "a relative directory".
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_registry(
    ref: str | Path | None, *, home: Path, options: RegistryOptions | None = None
) -> Registry:
    """Open the registry ``ref`` names; None is the embedded one at ``home/registry``.

    ``oci://host[:port]/namespace`` is an OCI distribution registry and
    ``https://host[:port]/path`` a read-only static mirror of a registry directory, both
    reached with ``options`` (credentials, TLS, timeouts; default: anonymous, verified
    HTTPS); local kinds ignore them.

    Raises:
        UsageError: ``ref`` is malformed or names a kind of registry not supported yet.
    """
    if ref is None:
        return LayoutRegistry(home / "registry")
    text = str(ref)
    scheme = _URL_RE.match(text)
    if text.startswith("oci://"):
        # Imported here: requests is needed only by remote registries.
        from packager.registry.oci import OciRegistry

        return OciRegistry(text, options=options or RegistryOptions())
    if scheme and scheme.group(0).lower() in ("http://", "https://"):
        from packager.registry.http import StaticMirrorRegistry

        return StaticMirrorRegistry(text, options=options or RegistryOptions())
    if scheme:
        # Only the scheme is echoed: the rest of a URL may carry credentials.
        raise UsageError(f"{scheme.group(0)} registries are not supported yet; use a directory")
    if is_archive_ref(text):
        return ArchiveRegistry(Path(text).expanduser())
    return LayoutRegistry(Path(ref).expanduser())
