"""``packager prune`` and the retention setting: bounded disk without losing a way back.

Kept, whatever ``keep`` says: the current version, the one ``packager rollback`` would
return to, and every pinned version (``packager pin``). Beyond those, the ``keep`` most
recently active versions stay (current first) and the others are removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from packager.errors import UsageError
from packager.instance.store import Store


@dataclass(frozen=True)
class Pruned:
    """What prune did (or, ``dry_run``, would do) to one model."""

    name: str
    removed: tuple[str, ...]
    kept: tuple[str, ...]
    dry_run: bool


def keep_set(recent: list[str], *, keep: int, protected: set[str]) -> set[str]:
    """The versions to keep: the ``keep`` first of ``recent`` (most recently active first)
    and every protected one installed."""
    return set(recent[:keep]) | (protected & set(recent))


def remove_version(
    store: Store, name: str, version: str, *, action: str, now: datetime, detail: str = ""
) -> None:
    """Delete an installed, non-current, unpinned version and write ``action`` to the audit
    log (before its files are deleted: see :meth:`Store.remove`); the caller holds the
    model's lock.

    Raises:
        NotInstalledError, UsageError: see :meth:`Store.remove`.
    """
    store.remove(name, version, action=action, now=now, detail=detail)


def prune(
    store: Store,
    *,
    keep: int,
    now: datetime,
    names: list[str] | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[Pruned]:
    """Remove old installed versions of ``names`` (None: every installed model).

    Raises:
        UsageError: ``keep`` below 1.
        NotFoundError: a model named is not installed.
        LockTimeoutError: another install of a model held its lock too long.
    """
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, not {keep}")
    if names is None:
        names = sorted({i.name for i in store.installed()})
    results = []
    for name in names:
        store.installed_dir(name)
        with store.lock(name):
            results.append(_prune_one(store, name, keep=keep, now=now, dry_run=dry_run))
        if say is not None and results[-1].removed:
            verb = "would remove" if dry_run else "removed"
            say(f"{name}: {verb} {', '.join(results[-1].removed)}")
    return results


def _prune_one(store: Store, name: str, *, keep: int, now: datetime, dry_run: bool) -> Pruned:
    """Prune one model; the caller holds its lock."""
    recent = store.recent_versions(name)
    protected = store.pinned(name)
    for version in (store.current_version(name), store.previous_version(name)):
        if version is not None:
            protected.add(version)
    kept = keep_set(recent, keep=keep, protected=protected)
    removed = tuple(v for v in store.versions(name) if v not in kept)
    if not dry_run:
        for version in removed:
            detail = f"keeping {keep} (and current, rollback target, pinned)"
            remove_version(store, name, version, action="prune", now=now, detail=detail)
    return Pruned(name, removed, tuple(v for v in store.versions(name) if v in kept), dry_run)
