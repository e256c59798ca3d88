"""``packager status``: how each model on the instance stands, for people and for monitoring.

Everything comes from what the instance already holds (the installed directories and
state.db); nothing is fetched, so a status check never touches a registry.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from packager.instance.servers import Server, running
from packager.instance.store import Attempt, AuditEntry, Store


@dataclass(frozen=True)
class ModelStatus:
    """One model: ``channel`` is the one it follows (None: installed by version),
    ``channel_expires`` when the last document accepted for it expires, ``disk_bytes``
    the size of its installed files (a file hard-linked into several versions counts once).
    """

    name: str
    current: str | None
    versions: tuple[str, ...]
    pinned: tuple[str, ...]
    channel: str | None
    registry: str | None
    channel_expires: datetime | None
    last_attempt: Attempt | None
    last_refusal: AuditEntry | None
    disk_bytes: int


@dataclass(frozen=True)
class Status:
    """Every model the instance knows of (installed, followed or refused), by name, at ``at``;
    ``servers``: the ``packager serve`` processes running, by pid."""

    at: datetime
    models: tuple[ModelStatus, ...]
    servers: tuple[Server, ...] = ()

    def served(self, name: str) -> list[tuple[Server, str]]:
        """Each running server that serves ``name``, with the version it answers with."""
        return [(s, m.version) for s in self.servers for m in s.models if m.name == name]

    def days_left(self, model: ModelStatus) -> float | None:
        """Days until the model's channel document expires (negative: expired)."""
        if model.channel_expires is None:
            return None
        return (model.channel_expires - self.at).total_seconds() / 86400


def status(store: Store, *, now: datetime) -> Status:
    """Gather the status of every model ``store`` knows of.

    Raises:
        UsageError: state.db cannot be used (see :meth:`Store.db`).
    """
    following = {f.name: f for f in store.following()}
    attempts = store.attempts()
    refusals = store.last_refusals()
    names = {i.name for i in store.installed()} | set(following) | set(attempts) | set(refusals)
    models = []
    for name in sorted(names):
        follow = following.get(name)
        models.append(
            ModelStatus(
                name=name,
                current=store.current_version(name),
                versions=tuple(store.versions(name)),
                pinned=tuple(sorted(store.pinned(name))),
                channel=None if follow is None else follow.channel,
                registry=None if follow is None else follow.registry,
                channel_expires=None
                if follow is None
                else store.channel_expiry(name, follow.channel),
                last_attempt=attempts.get(name),
                last_refusal=refusals.get(name),
                disk_bytes=disk_usage(store.model_dir(name)),
            )
        )
    return Status(now, tuple(models), tuple(running(store.home)))


def disk_usage(root: Path) -> int:
    """Bytes of the regular files under ``root``, each inode counted once; 0 if missing."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(root):
        for file in files:
            info = os.lstat(os.path.join(directory, file))
            key = (info.st_dev, info.st_ino)
            if stat.S_ISREG(info.st_mode) and key not in seen:
                seen.add(key)
                total += info.st_size
    return total
