"""Installed models on the instance and the state that protects them.

Layout under ``$PACKAGER_HOME``::

    models/<name>/<version>/   verified bundle, read-only regular files
    models/<name>/current      symlink -> <version>, switched with os.replace
    state.db                   SQLite (WAL): installs, activations, rollback floors, audit log,
                               the last channel document accepted per model and channel, and
                               the channel (and registry) each model follows, the root
                               of trust pinned and accepted since; its schema
                               version is PRAGMA user_version, migrated forward on open
    tmp/                       staging, on the same filesystem as models/
    locks/<name>.lock          serialises installs, rollbacks and removals of one model
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packager._io.fs import fsync_dir, fsync_file
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, check_name
from packager.core.semver import semver_key
from packager.core.text import printable
from packager.errors import NotFoundError, UsageError, WrongModelError

if TYPE_CHECKING:
    from packager.core.channel import Seen

CURRENT = "current"
STATE_DB = "state.db"
# The pinned root of trust, the newest root and delegations accepted since (see
# packager.instance.roots): one row per kind, whose version only goes up.
_TRUST_DOCUMENTS = (
    """CREATE TABLE trust_documents (
        kind TEXT PRIMARY KEY CHECK (kind IN ('root', 'delegations')),
        version INTEGER NOT NULL, data BLOB NOT NULL, at TEXT NOT NULL)""",
)
# Each step brings state.db from the version before it to its own (PRAGMA user_version).
# Version 0 is a database from before versioning (or a new, empty one): step 1 creates
# the tables it may already have, IF NOT EXISTS, and adds the indexes lookups by model use.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS installs (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL, source TEXT NOT NULL, at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS activations (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
            at TEXT NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS floors (name TEXT PRIMARY KEY, version TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS audit (
            id INTEGER PRIMARY KEY, at TEXT NOT NULL, action TEXT NOT NULL, name TEXT,
            version TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS channels (
            name TEXT NOT NULL, channel TEXT NOT NULL, sequence INTEGER NOT NULL,
            version TEXT NOT NULL, manifest_sha256 TEXT NOT NULL, at TEXT NOT NULL,
            PRIMARY KEY (name, channel))""",
        """CREATE TABLE IF NOT EXISTS follows (
            name TEXT PRIMARY KEY, channel TEXT NOT NULL, registry TEXT, at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS activations_by_name ON activations (name, id)",
        "CREATE INDEX IF NOT EXISTS audit_by_name ON audit (name, id)",
    ),
    _TRUST_DOCUMENTS,
)
SCHEMA_VERSION = len(MIGRATIONS)
# Details quote registries' messages: a hostile one must not grow state.db at every update.
MAX_AUDIT_DETAIL = 2000
# A sequence never goes down, whatever a caller passes: the rollback check relies on it.
_RECORD_SEEN = """
INSERT INTO channels (name, channel, sequence, version, manifest_sha256, at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (name, channel) DO UPDATE SET
    sequence = excluded.sequence, version = excluded.version,
    manifest_sha256 = excluded.manifest_sha256, at = excluded.at
WHERE excluded.sequence >= channels.sequence
"""
_RECORD_FOLLOW = """
INSERT INTO follows (name, channel, registry, at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    channel = excluded.channel, registry = excluded.registry, at = excluded.at
"""


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    current: bool
    directory: Path


@dataclass(frozen=True)
class Following:
    """A model that ``packager update`` keeps on the version its channel names.

    ``registry`` is the registry reference the channel is read from (never holding
    credentials); None is the default registry.
    """

    name: str
    channel: str
    registry: str | None


@dataclass(frozen=True)
class ChannelRecord:
    """A verified channel document to record together with what it caused.

    ``detail`` is the audit line of a promotion not seen before; None records nothing in
    the audit log (the same document again).
    """

    following: Following
    seen: Seen
    detail: str | None


@dataclass(frozen=True)
class AuditEntry:
    at: str
    action: str
    name: str | None
    version: str | None
    outcome: str
    detail: str


class Store:
    """Installed models and state.db under one PACKAGER_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.models = home / "models"
        self.tmp = home / "tmp"

    # -- state.db -----------------------------------------------------------------

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction: committed on success, rolled back on error."""
        self.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.home / STATE_DB, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _migrate(conn, self.home / STATE_DB)
            with conn:
                yield conn
        finally:
            conn.close()

    def floor(self, name: str) -> str | None:
        """The highest version ever installed for ``name``: the rollback floor."""
        if not (self.home / STATE_DB).exists():
            return None
        with self.db() as conn:
            row = conn.execute("SELECT version FROM floors WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def audit(
        self,
        *,
        action: str,
        outcome: str,
        now: datetime,
        name: str | None = None,
        version: str | None = None,
        detail: str = "",
    ) -> None:
        """Append one entry to the audit log: one row, each field in its own column.

        ``detail`` often quotes what a registry sent; it is stored escaped (see
        :func:`packager.core.text.printable`) and capped at :data:`MAX_AUDIT_DETAIL`
        characters, so a newline or an escape sequence in it can never read as another
        entry, whatever reads the log.
        """
        with self.db() as conn:
            _audit(conn, action, outcome, now, name, version, detail)

    # -- channels ---------------------------------------------------------------------

    def channel_seen(self, name: str, channel: str) -> Seen | None:
        """The last channel document accepted for ``name``@``channel``, or None."""
        # Deferred: core.channel brings in cryptography, which `packager list` never needs.
        from packager.core.channel import Seen

        if not (self.home / STATE_DB).exists():
            return None
        with self.db() as conn:
            row = conn.execute(
                "SELECT sequence, version, manifest_sha256 FROM channels "
                "WHERE name = ? AND channel = ?",
                (name, channel),
            ).fetchone()
        return None if row is None else Seen(int(row[0]), str(row[1]), Digest(str(row[2])))

    def following(self) -> list[Following]:
        """Every model that follows a channel, by name."""
        if not (self.home / STATE_DB).exists():
            return []
        with self.db() as conn:
            rows = conn.execute("SELECT name, channel, registry FROM follows ORDER BY name")
            return [Following(str(n), str(c), None if r is None else str(r)) for n, c, r in rows]

    def record_channel(self, record: ChannelRecord, *, now: datetime) -> None:
        """Record a verified channel document that needed no install (it names the version
        already current)."""
        with self.db() as conn:
            _record_channel(conn, record, now)

    def unfollow(self, name: str, *, now: datetime, reason: str) -> str | None:
        """Stop following a channel; returns the channel ``name`` followed, if any.

        ``reason`` ends the audit line, e.g. "installed 1.0.0 by version".
        """
        if not (self.home / STATE_DB).exists():
            return None
        with self.db() as conn:
            return _unfollow(conn, name, now, reason)

    def audit_log(self, name: str | None = None) -> list[AuditEntry]:
        if not (self.home / STATE_DB).exists():
            return []
        query = "SELECT at, action, name, version, outcome, detail FROM audit"
        args: tuple[str, ...] = ()
        if name is not None:
            query += " WHERE name = ?"
            args = (name,)
        with self.db() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [AuditEntry(*row) for row in rows]

    # -- installed models ------------------------------------------------------------

    def model_dir(self, name: str) -> Path:
        return self.models / check_name(name)

    def current_version(self, name: str) -> str | None:
        link = self.model_dir(name) / CURRENT
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        return target if "/" not in target else None

    def versions(self, name: str) -> list[str]:
        """Installed versions of ``name``, lowest first."""
        root = self.model_dir(name)
        if not root.is_dir():
            return []
        found = [
            p.name
            for p in root.iterdir()
            if p.name != CURRENT and not p.is_symlink() and p.is_dir()
        ]
        return sorted(found, key=semver_key)

    def installed(self) -> list[Installed]:
        result: list[Installed] = []
        if not self.models.is_dir():
            return result
        for root in sorted(self.models.iterdir()):
            current = self.current_version(root.name)
            for version in self.versions(root.name):
                result.append(Installed(root.name, version, version == current, root / version))
        return result

    def installed_dir(self, name: str, version: str | None = None) -> Path:
        """The directory of an installed version (``current`` when version is None).

        Raises:
            NotFoundError: not installed.
        """
        version = version or self.current_version(name)
        if version is None or version not in self.versions(name):
            what = f"{name}@{version}" if version else name
            raise NotFoundError(f"{what} is not installed; run `packager install {what}`")
        return self.model_dir(name) / version

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the per-model lock: installs, rollbacks and removals of one model serialise."""
        locks = self.home / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{check_name(name)}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh staging directory under tmp/<name>/, removed afterwards.

        Call it holding :meth:`lock`: leftovers of an install that was killed are then
        known to be stale and are removed first.
        """
        parent = self.tmp / check_name(name)
        if parent.exists():
            for stale in parent.iterdir():
                shutil.rmtree(stale, ignore_errors=True)
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(
        self,
        staged: Path,
        *,
        name: str,
        version: str,
        manifest_sha256: str,
        source: str,
        now: datetime,
        channel: ChannelRecord | None = None,
    ) -> Path:
        """Move a verified staging directory into place and make it ``current``.

        The move and the switch are each one rename, so a crash leaves either the old
        state or the new one. The rollback floor is raised before the switch, so a crash
        can only leave it higher, never lower. A version already installed with the
        same manifest is kept as it is.

        ``channel`` is the channel document the version was installed through: it is
        recorded (last seen, followed) in the same transaction as the install. Without
        one, the model stops following any channel: it was installed by version.

        Raises:
            WrongModelError: the version is installed with a different signed manifest.
        """
        root = self.model_dir(name)
        root.mkdir(parents=True, exist_ok=True)
        target = root / version
        if target.exists():
            if (target / MANIFEST).read_bytes() != (staged / MANIFEST).read_bytes():
                raise WrongModelError(
                    f"{name}@{version} is installed with different signed content than "
                    f"{source} serves; `packager remove {name}@{version}` first if you trust it"
                )
        else:
            for child in staged.iterdir():
                child.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                fsync_file(child)
            staged.chmod(0o755)
            fsync_dir(staged)
            os.rename(staged, target)
            fsync_dir(root)
        with self.db() as conn:
            conn.execute(
                "INSERT INTO installs (name, version, manifest_sha256, source, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, version, manifest_sha256, source, now.isoformat()),
            )
            conn.execute(
                "INSERT INTO activations (name, version, at) VALUES (?, ?, ?)",
                (name, version, now.isoformat()),
            )
            row = conn.execute("SELECT version FROM floors WHERE name = ?", (name,)).fetchone()
            if row is None or semver_key(version) > semver_key(row[0]):
                conn.execute(
                    "INSERT INTO floors (name, version) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET version = excluded.version",
                    (name, version),
                )
            if channel is None:
                _unfollow(conn, name, now, f"installed {version} by version")
            else:
                _record_channel(conn, channel, now)
        self._switch(name, version)
        return target

    def manifest_digest(self, name: str, version: str) -> Digest:
        """The sha256 of an installed version's manifest.json.

        Raises:
            NotFoundError: not installed.
        """
        return Digest.of((self.installed_dir(name, version) / MANIFEST).read_bytes())

    def _switch(self, name: str, version: str) -> None:
        root = self.model_dir(name)
        tmp_link = root / f".{CURRENT}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        os.symlink(version, tmp_link)
        os.replace(tmp_link, root / CURRENT)
        fsync_dir(root)

    def previous_version(self, name: str) -> str | None:
        """The most recently active installed version other than ``current``."""
        current = self.current_version(name)
        installed = set(self.versions(name))
        if not (self.home / STATE_DB).exists():
            return None
        with self.db() as conn:
            rows = conn.execute(
                "SELECT version FROM activations WHERE name = ? ORDER BY id DESC", (name,)
            ).fetchall()
        for (version,) in rows:
            if version != current and version in installed:
                return str(version)
        return None

    def activate(self, name: str, version: str, *, now: datetime) -> None:
        """Make an installed version ``current`` (used by rollback)."""
        self.installed_dir(name, version)
        self._switch(name, version)
        with self.db() as conn:
            conn.execute(
                "INSERT INTO activations (name, version, at) VALUES (?, ?, ?)",
                (name, version, now.isoformat()),
            )

    def remove(self, name: str, version: str) -> Path:
        """Delete an installed version that is not ``current``.

        Raises:
            NotFoundError: not installed.
            UsageError: it is the current version.
        """
        directory = self.installed_dir(name, version)
        if self.current_version(name) == version:
            raise UsageError(
                f"{name}@{version} is the current version; `packager rollback {name}` "
                "or install another version first"
            )
        self.tmp.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(prefix=f"{name}-rm-", dir=self.tmp))
        os.rename(directory, doomed / version)
        shutil.rmtree(doomed, ignore_errors=True)
        return directory


def _schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring state.db to :data:`SCHEMA_VERSION` in one transaction, or refuse a newer one.

    Raises:
        UsageError: the database was written by a newer packager: using it could lose
            what that version records.
    """
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # IMMEDIATE: two processes opening an old database migrate it one after the other.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _schema_version(conn)
        if found > SCHEMA_VERSION:
            raise UsageError(
                f"{path} has schema version {found}, newer than this packager knows "
                f"({SCHEMA_VERSION}); upgrade packager to use it"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        # PRAGMA takes no parameters; SCHEMA_VERSION is our own integer.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _audit(
    conn: sqlite3.Connection,
    action: str,
    outcome: str,
    now: datetime,
    name: str | None,
    version: str | None,
    detail: str,
) -> None:
    conn.execute(
        "INSERT INTO audit (at, action, name, version, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (now.isoformat(), action, name, version, outcome, printable(detail, MAX_AUDIT_DETAIL)),
    )


def _record_channel(conn: sqlite3.Connection, record: ChannelRecord, now: datetime) -> None:
    follow, seen = record.following, record.seen
    at = now.isoformat()
    conn.execute(
        _RECORD_SEEN,
        (follow.name, follow.channel, seen.sequence, seen.version, seen.manifest_digest.hex, at),
    )
    conn.execute(_RECORD_FOLLOW, (follow.name, follow.channel, follow.registry, at))
    if record.detail is not None:
        _audit(conn, "channel", "ok", now, follow.name, seen.version, record.detail)


def _unfollow(conn: sqlite3.Connection, name: str, now: datetime, reason: str) -> str | None:
    # SELECT then DELETE, not DELETE ... RETURNING: servers run SQLite older than 3.35.
    row = conn.execute("SELECT channel FROM follows WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM follows WHERE name = ?", (name,))
    channel = str(row[0])
    _audit(conn, "channel", "unfollow", now, name, None, f"no longer follows {channel}: {reason}")
    return channel
