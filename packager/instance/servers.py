"""The ``packager serve`` processes running on this instance, for ``packager status``.

Each server keeps one file, ``$PACKAGER_HOME/run/serve-<pid>.json``: where it listens and
the version of each model it answers with. It writes the file (in one rename) when it
starts listening and whenever a version switches, and removes it when it stops. A file
whose process is gone (a server that was killed) is ignored and removed by the next
reader; so is one whose process id now names another process (on Linux, where the
process's start time is recorded beside its id).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager._io.fs import atomic_write
from packager.core.jsonio import Limits, loads
from packager.errors import UsageError

RUN_DIR = "run"
_FILE = re.compile(r"serve-([0-9]{1,10})\.json")
_LIMITS = Limits(max_bytes=1 << 20, max_depth=4, max_string=4096)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str


@dataclass(frozen=True)
class Server:
    """One running ``packager serve``: its process, its address and what it serves."""

    pid: int
    address: str
    models: tuple[ServedModel, ...]
    # When the process started (clock ticks since boot, from /proc); None where unknown.
    started: str | None = None


def record_path(home: Path, pid: int) -> Path:
    return home / RUN_DIR / f"serve-{pid}.json"


def record(home: Path, server: Server) -> None:
    """Write (or replace) ``server``'s file.

    Raises:
        OSError: the file cannot be written; the one before (if any) is unchanged.
    """
    directory = home / RUN_DIR
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    doc = {
        "pid": server.pid,
        "started": server.started,
        "address": server.address,
        "models": [{"name": m.name, "version": m.version} for m in server.models],
    }
    atomic_write(record_path(home, server.pid), json.dumps(doc).encode(), sync_dir=False)


def forget(home: Path, pid: int) -> None:
    """Remove the file of the server ``pid`` (nothing if there is none)."""
    with contextlib.suppress(OSError):
        record_path(home, pid).unlink()


def running(home: Path) -> list[Server]:
    """The servers running now, by pid. Files of processes that are gone, or whose id
    names another process since, are removed; files that cannot be read or parsed are
    skipped."""
    try:
        entries = sorted(os.scandir(home / RUN_DIR), key=lambda e: e.name)
    except OSError:
        return []
    servers = []
    for entry in entries:
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            forget(home, pid)
            continue
        server = _read(Path(entry.path), pid)
        if server is None:
            continue  # not readable: skipped, and left to whoever wrote it
        now = started(pid)
        if server.started is not None and now is not None and now != server.started:
            forget(home, pid)  # the id names another process since
            continue
        servers.append(server)
    return sorted(servers, key=lambda s: s.pid)


def started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc); None when
    that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat[stat.rfind(b")") + 1 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True


def _read(path: Path, pid: int) -> Server | None:
    """The server ``path`` records; None unless it is a regular file (a symlink is not
    followed, a FIFO not waited on) holding a valid record."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(_LIMITS.max_bytes + 1)
        doc = loads(data, what=str(path), error=UsageError, limits=_LIMITS)
    except (OSError, UsageError):
        return None
    return _server(doc, pid)


def _server(doc: Any, pid: int) -> Server | None:
    if not isinstance(doc, dict) or doc.get("pid") != pid:
        return None
    address, models = doc.get("address"), doc.get("models")
    if not isinstance(address, str) or not isinstance(models, list):
        return None
    served = []
    for m in models:
        if not isinstance(m, dict):
            return None
        name, version = m.get("name"), m.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            return None
        served.append(ServedModel(name, version))
    when = doc.get("started")
    if when is not None and not isinstance(when, str):
        return None
    return Server(pid, address, tuple(served), when)


__all__: Sequence[str] = ("Server", "ServedModel", "forget", "record", "running", "started")
