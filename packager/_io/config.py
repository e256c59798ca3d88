"""Where things live: PACKAGER_HOME and the default registry reference."""

from __future__ import annotations

import os
from pathlib import Path

from packager.errors import UsageError

DEFAULT_HOME = Path("~/.local/share/packager")


def resolve_home(home: Path | str | None = None) -> Path:
    """``home`` if given, else ``$PACKAGER_HOME``, else ``~/.local/share/packager``."""
    if home is None:
        home = os.environ.get("PACKAGER_HOME") or DEFAULT_HOME
    return Path(home).expanduser().absolute()


def resolve_registry(ref: str | None) -> str | None:
    """``ref`` if given, else ``$PACKAGER_REGISTRY``, else None (the embedded registry)."""
    return ref or os.environ.get("PACKAGER_REGISTRY") or None


CONFIG_FILE = "config.toml"


def read_retention(home: Path) -> int | None:
    """The ``keep`` of ``[retention]`` in ``home/config.toml``: how many installed versions
    of each model to keep after every install and update (None: no such setting).

    Raises:
        UsageError: the file is not valid TOML (or not UTF-8), or the setting is not a
            whole number ≥ 1 (an unknown key in ``[retention]`` is refused, not ignored).
    """
    path = home / CONFIG_FILE
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, once TOML is imported)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    # Here, and only for a file that exists: the parser costs what imports it.
    import tomllib

    with f:
        try:
            doc = tomllib.load(f)
        # TOML is UTF-8: other bytes fail to decode before they fail to parse.
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"cannot read {path}: {e}") from e
    section = doc.get("retention")
    if section is None:
        return None
    if not isinstance(section, dict) or set(section) - {"keep"}:
        raise UsageError(f"{path}: [retention] takes one setting, keep = N")
    keep = section.get("keep")
    if keep is None:
        return None
    if type(keep) is not int or keep < 1:
        raise UsageError(f"{path}: [retention] keep must be a whole number, at least 1")
    return keep
