"""Where things live: PACKAGER_HOME and the default registry reference."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.local/share/packager")


def resolve_home(home: Path | str | None = None) -> Path:
    """``home`` if given, else ``$PACKAGER_HOME``, else ``~/.local/share/packager``."""
    if home is None:
        home = os.environ.get("PACKAGER_HOME") or DEFAULT_HOME
    return Path(home).expanduser().absolute()


def resolve_registry(ref: str | None) -> str | None:
    """``ref`` if given, else ``$PACKAGER_REGISTRY``, else None (the embedded registry)."""
    return ref or os.environ.get("PACKAGER_REGISTRY") or None
