"""Registries: where bundles are published and fetched from.

:func:`open_registry` is the one place a registry reference becomes a :class:`Registry`;
new kinds (OCI distribution, HTTPS mirrors, archives) are added here and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

from packager.errors import UsageError
from packager.registry.base import Artifact, Descriptor, Registry
from packager.registry.layout import LayoutRegistry

__all__ = ["Artifact", "Descriptor", "LayoutRegistry", "Registry", "open_registry"]

# Anything that looks like a URL must never fall through to "a relative directory".
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_registry(ref: str | Path | None, *, home: Path) -> Registry:
    """Open the registry ``ref`` names; None is the embedded one at ``home/registry``.

    Raises:
        UsageError: ``ref`` names a kind of registry that is not supported yet.
    """
    if ref is None:
        return LayoutRegistry(home / "registry")
    text = str(ref)
    scheme = _URL_RE.match(text)
    if scheme or text.endswith(".tar"):
        # Only the scheme is echoed: the rest of a URL may carry credentials.
        kind = scheme.group(0) if scheme else ".tar"
        raise UsageError(f"{kind} registries are not supported yet; use a directory")
    return LayoutRegistry(Path(ref).expanduser())
