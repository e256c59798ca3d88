"""Installed models on the instance and the state that protects them.

Layout under ``$PACKAGER_HOME``::

    models/<name>/<version>/   verified bundle, read-only regular files
    models/<name>/current      symlink -> <version>, switched with os.replace
    state.db                   SQLite (WAL): installs, activations, rollback floors, audit log,
                               the last channel document accepted per model and channel, and
                               the channel (and registry) each model follows, the root
                               of trust pinned and accepted since, the fingerprint of
                               each installed inode when its bytes were verified; its schema
                               version is PRAGMA user_version, migrated forward on open
    tmp/                       staging, and removals under way (tmp/<name>/), on the same
                               filesystem as models/
    locks/<name>.lock          serialises installs, rollbacks and removals of one model

``$PACKAGER_HOME``, ``tmp/`` and ``locks/`` must belong to the account running packager, and
``tmp/`` and ``locks/`` (and what packager opens in them) must not be symbolic links: another
account could otherwise point packager's deletions and writes anywhere. A state.db that
cannot be read is refused with what to do; a new one (state.db deleted) takes each model's
rollback floor from the highest version installed, and says so in the audit log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager._io.fs import fsync_dir, fsync_file
from packager.core.digests import Digest
from packager.core.fingerprint import Fingerprint, Held
from packager.core.manifest import MANIFEST, FileEntry, check_name, parse_manifest
from packager.core.semver import semver_key
from packager.core.text import printable
from packager.errors import (
    DISK_ERRNOS,
    LocalDiskError,
    LockTimeoutError,
    NotInstalledError,
    PackagerError,
    UsageError,
    WrongModelError,
)

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

# Audit entries keep their facts in columns of their own (NULL in entries written before).
_AUDIT_FACTS = tuple(
    f"ALTER TABLE audit ADD COLUMN {column}"
    for column in (
        "key TEXT",
        "digest TEXT",
        "source TEXT",
        "channel TEXT",
        "sequence INTEGER",
        "previous TEXT",
    )
)

# How long to wait for another install, rollback or removal of the same model (--lock-timeout).
LOCK_TIMEOUT = 600.0
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
    _AUDIT_FACTS,
    # The accepted document's expiry (`list` and `update` count the days left), and the
    # sequence whose expiry `update` has already reported (it says so once, not every run).
    (
        "ALTER TABLE channels ADD COLUMN expires TEXT",
        "ALTER TABLE channels ADD COLUMN expiry_reported INTEGER",
    ),
    # Fleet operations: the last `update` of each model and its outcome, and the versions
    # pinned against `prune`.
    (
        """CREATE TABLE attempts (
            name TEXT PRIMARY KEY, channel TEXT NOT NULL, at TEXT NOT NULL,
            outcome TEXT NOT NULL, version TEXT, exit_code INTEGER NOT NULL,
            detail TEXT NOT NULL)""",
        """CREATE TABLE pins (
            name TEXT NOT NULL, version TEXT NOT NULL, at TEXT NOT NULL,
            PRIMARY KEY (name, version))""",
    ),
    # The fingerprint of each installed inode when its bytes were verified, with their
    # digest: an upgrade reuses an unchanged one without hashing it (docs/adr/0011).
    # Device and inode numbers are unsigned 64-bit: kept as text.
    (
        """CREATE TABLE fingerprints (
            dev TEXT NOT NULL, ino TEXT NOT NULL, digest TEXT NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
            PRIMARY KEY (dev, ino))""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
# Details quote registries' messages: a hostile one must not grow state.db at every update.
MAX_AUDIT_DETAIL = 2000
# A sequence never goes down, whatever a caller passes: the rollback check relies on it.
_RECORD_SEEN = """
INSERT INTO channels (name, channel, sequence, version, manifest_sha256, at, expires)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, channel) DO UPDATE SET
    sequence = excluded.sequence, version = excluded.version,
    manifest_sha256 = excluded.manifest_sha256, at = excluded.at, expires = excluded.expires
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
    the audit log (the same document again). ``expires`` is the document's expiry.
    """

    following: Following
    seen: Seen
    detail: str | None
    expires: datetime | None = None


@dataclass(frozen=True)
class Followed:
    """The channel a model follows and when the document last accepted for it expires."""

    channel: str
    expires: datetime | None


@dataclass(frozen=True)
class AuditFacts:
    """What an audit entry is about, each in a column of its own: the signer (a key's hint,
    or the certificate), the manifest digest, the registry, the channel and its document's
    sequence, and the version current before."""

    key: str | None = None
    digest: str | None = None
    source: str | None = None
    channel: str | None = None
    sequence: int | None = None
    previous: str | None = None


_FACT_COLUMNS = tuple(f.name for f in fields(AuditFacts))


@dataclass(frozen=True)
class Attempt:
    """The last ``packager update`` of one model: ``outcome`` is "updated", "current" or
    "refused"; ``exit_code`` is 0 or the refusal's."""

    name: str
    channel: str
    at: datetime
    outcome: str
    version: str | None
    exit_code: int
    detail: str


@dataclass(frozen=True)
class AuditEntry:
    at: str
    action: str
    name: str | None
    version: str | None
    outcome: str
    detail: str
    facts: AuditFacts = AuditFacts()


class Store:
    """Installed models and state.db under one PACKAGER_HOME.

    ``lock_timeout`` is how many seconds :meth:`lock` waits for another process.
    """

    def __init__(self, home: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.home = home
        self.models = home / "models"
        self.tmp = home / "tmp"
        self.lock_timeout = lock_timeout

    # -- state.db -----------------------------------------------------------------

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction: committed on success, rolled back on error.

        Raises:
            UsageError: $PACKAGER_HOME is another account's; state.db cannot be used
                (not a database, damaged, a directory); a new state.db cannot recover a
                model's rollback floor.
        """
        path, conn = self._connect()
        try:
            conn.execute("PRAGMA synchronous=FULL")
            _migrate(conn, path, self)
            with conn:
                yield conn
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from e
        finally:
            conn.close()

    def _connect(self) -> tuple[Path, sqlite3.Connection]:
        """state.db's path and a new connection to it in write-ahead-log mode.

        Raises:
            UsageError: as :meth:`db`.
        """
        path = _own_directory(self.home, follow=True) / STATE_DB
        try:
            conn = sqlite3.connect(path, timeout=30)
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from e
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise _unusable(path, e) from e
        return path, conn

    @contextlib.contextmanager
    def held_open(self) -> Iterator[None]:
        """Keep state.db open across the transactions of one operation (an install: its
        checks, its commit, its audit entry). Each transaction still reaches the disk when
        it commits (write-ahead log, synchronous=FULL). What is saved is SQLite's work when
        the last connection to a database closes: a checkpoint into state.db and the removal
        of the log, with syncs of their own, then the log made again (its directory synced)
        by the next transaction. Held open, that happens once, when this ends.

        Raises:
            UsageError: as :meth:`db`.
        """
        path, conn = self._connect()
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from e
        finally:
            conn.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to an existing state.db, for commands that only read: it
        takes no lock and migrates nothing where nothing can be written, so it works on a
        read-only $PACKAGER_HOME (rows of an older schema then lack the newer columns).
        Rows come as :class:`sqlite3.Row`.

        Raises:
            UsageError: state.db cannot be read (see :meth:`db`).
        """
        path = self.home / STATE_DB
        try:
            conn = _open_readonly(path)
            found = _schema_version(conn)
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from e
        try:
            if found > SCHEMA_VERSION:
                raise _newer(path, found)
            # An older schema is migrated first, which writes; where nothing can be
            # written, its rows are read as they are.
            if found < SCHEMA_VERSION and os.access(path.parent, os.W_OK):
                conn.close()
                with self.db() as conn:
                    conn.row_factory = sqlite3.Row
                    yield conn
                return
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from e
        finally:
            conn.close()

    def floor(self, name: str) -> str | None:
        """The highest version ever installed for ``name``: the rollback floor (recovered
        from the installed versions when state.db is new, see :meth:`db`)."""
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
        facts: AuditFacts | None = None,
    ) -> None:
        """Append one entry to the audit log: one row, each field and fact in its own column.

        ``detail`` often quotes what a registry sent; it is stored escaped (see
        :func:`packager.core.text.printable`) and capped at :data:`MAX_AUDIT_DETAIL`
        characters, so a newline or an escape sequence in it can never read as another
        entry, whatever reads the log.
        """
        with self.db() as conn:
            _audit(conn, action, outcome, now, name, version, detail, facts)

    def _select(
        self, query: str, args: tuple[str, ...] = (), *, read_only: bool = False
    ) -> list[Any]:
        """The rows ``query`` finds in state.db: none before state.db exists. ``read_only``
        reads through :meth:`reader` (rows as :class:`sqlite3.Row`), for commands that must
        work on a read-only home."""
        if not (self.home / STATE_DB).exists():
            return []
        with self.reader() if read_only else self.db() as conn:
            return list(conn.execute(query, args).fetchall())

    # -- channels ---------------------------------------------------------------------

    def channel_seen(self, name: str, channel: str) -> Seen | None:
        """The last channel document accepted for ``name``@``channel``, or None."""
        # Deferred: core.channel brings in cryptography, which `packager list` never needs.
        from packager.core.channel import Seen

        rows = self._select(
            "SELECT sequence, version, manifest_sha256 FROM channels "
            "WHERE name = ? AND channel = ?",
            (name, channel),
        )
        return next((Seen(int(s), str(v), Digest(str(d))) for s, v, d in rows), None)

    def following(self) -> list[Following]:
        """Every model that follows a channel, by name."""
        rows = self._select("SELECT name, channel, registry FROM follows ORDER BY name")
        return [Following(str(n), str(c), None if r is None else str(r)) for n, c, r in rows]

    def followed(self) -> dict[str, Followed]:
        """The channel each model follows, by name, with its accepted document's expiry
        (None: accepted before expiries were recorded)."""
        # Read-only: `list` and `status` work on a read-only home.
        rows = self._select(
            "SELECT f.name, f.channel, c.expires FROM follows f LEFT JOIN channels c "
            "ON c.name = f.name AND c.channel = f.channel ORDER BY f.name",
            read_only=True,
        )
        return {
            str(n): Followed(str(c), None if e is None else datetime.fromisoformat(e))
            for n, c, e in rows
        }

    def expiry_reported(self, name: str, channel: str) -> bool:
        """Whether the expiry of the document last accepted for ``name``@``channel`` has
        been reported (:meth:`report_expiry`); a newer document accepted since resets it."""
        rows = self._select(
            "SELECT expiry_reported = sequence FROM channels WHERE name = ? AND channel = ?",
            (name, channel),
        )
        return any(bool(reported) for (reported,) in rows)

    def report_expiry(self, name: str, channel: str) -> None:
        """Record that the expiry of the document last accepted has been reported."""
        with self.db() as conn:
            conn.execute(
                "UPDATE channels SET expiry_reported = sequence WHERE name = ? AND channel = ?",
                (name, channel),
            )

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

    def channel_expiry(self, name: str, channel: str) -> datetime | None:
        """When the last document accepted for ``name``@``channel`` expires, if recorded."""
        rows = self._select(
            "SELECT expires FROM channels WHERE name = ? AND channel = ?", (name, channel)
        )
        return next((datetime.fromisoformat(e) for (e,) in rows if e is not None), None)

    def record_attempt(self, attempt: Attempt) -> None:
        """Keep ``attempt`` as the last update of its model (replacing the one before)."""
        with self.db() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO attempts "
                "(name, channel, at, outcome, version, exit_code, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.name,
                    attempt.channel,
                    attempt.at.isoformat(),
                    attempt.outcome,
                    attempt.version,
                    attempt.exit_code,
                    printable(attempt.detail, MAX_AUDIT_DETAIL),
                ),
            )

    def attempts(self) -> dict[str, Attempt]:
        """The last update attempt of every model that had one, by name."""
        rows = self._select(
            "SELECT name, channel, at, outcome, version, exit_code, detail FROM attempts"
        )
        return {
            str(n): Attempt(str(n), str(c), datetime.fromisoformat(a), str(o), v, int(e), str(d))
            for n, c, a, o, v, e, d in rows
        }

    def last_refusals(self) -> dict[str, AuditEntry]:
        """The latest refusal in the audit log of every model that had one, by name."""
        rows = self._select(
            "SELECT at, action, name, version, outcome, detail FROM audit WHERE id IN "
            "(SELECT max(id) FROM audit WHERE outcome = 'refused' AND name IS NOT NULL "
            "GROUP BY name)"
        )
        return {str(row[2]): AuditEntry(*row) for row in rows}

    def repeats_latest(
        self, *, action: str, outcome: str, name: str, version: str | None, detail: str
    ) -> bool:
        """Whether the newest audit entry of model ``name`` is this one, its detail compared
        as :meth:`audit` stores it: a refusal ``update`` meets again at every run, with
        nothing audited for the model in between, is written once."""
        if not (self.home / STATE_DB).exists():
            return False
        with self.db() as conn:
            row = conn.execute(
                "SELECT action, outcome, version, detail FROM audit WHERE name = ? "
                "ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
        return row is not None and tuple(row) == (
            action,
            outcome,
            version,
            printable(detail, MAX_AUDIT_DETAIL),
        )

    # -- pins -------------------------------------------------------------------------

    def pin(self, name: str, version: str, *, now: datetime) -> None:
        """Keep ``name``@``version`` whatever ``prune`` or the retention setting say. Under
        the model's lock, as prune works: a version is not removed between being found
        installed and being pinned.

        Raises:
            NotFoundError: not installed.
            LockTimeoutError: the model's lock stayed taken (see :meth:`lock`).
        """
        with self.lock(name):
            self.installed_dir(name, version)
            with self.db() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO pins (name, version, at) VALUES (?, ?, ?)",
                    (name, version, now.isoformat()),
                )
                _audit(conn, "pin", "ok", now, name, version, "kept by prune and retention")

    def unpin(self, name: str, version: str, *, now: datetime) -> bool:
        """Let ``prune`` remove ``name``@``version`` again; False when it was not pinned."""
        if not (self.home / STATE_DB).exists():
            return False
        with self.db() as conn:
            gone = conn.execute(
                "DELETE FROM pins WHERE name = ? AND version = ?", (name, version)
            ).rowcount
            if gone:
                _audit(conn, "unpin", "ok", now, name, version, "prune may remove it")
        return bool(gone)

    def pinned(self, name: str) -> set[str]:
        """The pinned versions of ``name`` that are installed: a pin is dropped with its
        model by :meth:`uninstall`, and :meth:`remove` refuses a pinned version (a pin
        state.db kept from before is not shown for a version no longer installed)."""
        rows = self._select("SELECT version FROM pins WHERE name = ?", (name,))
        return {str(v) for (v,) in rows} & set(self.versions(name))

    def audit_log(self, name: str | None = None) -> list[AuditEntry]:
        if name is None:
            rows = self._select("SELECT * FROM audit ORDER BY id", read_only=True)
        else:
            rows = self._select(
                "SELECT * FROM audit WHERE name = ? ORDER BY id", (name,), read_only=True
            )
        return [_audit_entry(row) for row in rows]

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

    def installed_files(self, *, fingerprints: bool = True) -> dict[Digest, Held]:
        """A file of every digest the installed versions' manifests list (any model): what
        an install may reuse instead of fetching, with the fingerprint recorded for its
        inode and that digest when it was verified (a file that has one is preferred).
        ``fingerprints=False`` offers none: every file reused is hashed (``--force``). A
        version whose manifest.json cannot be read or parsed offers nothing; the files'
        bytes are checked by whoever reuses them.
        """
        found: dict[Digest, Held] = {}
        recorded = self._fingerprints() if fingerprints else {}
        for entry in self.installed():
            try:
                manifest = parse_manifest((entry.directory / MANIFEST).read_bytes())
            except (OSError, PackagerError):
                continue
            for file in manifest.files:
                held = found.get(file.digest)
                if held is None or held.recorded is None:
                    path = entry.directory / file.path
                    found[file.digest] = Held(path, _recorded(path, file.digest, recorded))
        return found

    def installed_manifest(self, name: str, version: str) -> Digest | None:
        """The sha256 of the manifest.json verified when ``name@version`` was last
        installed; None when state.db has no record of it (made anew since)."""
        rows = self._select(
            "SELECT manifest_sha256 FROM installs WHERE name = ? AND version = ? "
            "ORDER BY rowid DESC LIMIT 1",
            (name, version),
        )
        return Digest(str(rows[0][0])) if rows else None

    def verified_fingerprints(self) -> dict[tuple[int, int], tuple[Digest, Fingerprint]]:
        """The fingerprint each installed file's inode had when this instance verified its
        bytes, by device and inode, with the digest verified."""
        return self._fingerprints()

    def _fingerprints(self) -> dict[tuple[int, int], tuple[Digest, Fingerprint]]:
        """Every fingerprint recorded, by device and inode, with the digest verified."""
        rows = self._select("SELECT dev, ino, digest, size, mtime_ns, ctime_ns FROM fingerprints")
        found = {}
        for dev, ino, digest, size, mtime, ctime in rows:
            fingerprint = Fingerprint(int(dev), int(ino), int(size), int(mtime), int(ctime))
            found[fingerprint.dev, fingerprint.ino] = Digest(str(digest)), fingerprint
        return found

    def installed_dir(self, name: str, version: str | None = None) -> Path:
        """The directory of an installed version (``current`` when version is None).

        Raises:
            NotInstalledError: not installed.
        """
        version = version or self.current_version(name)
        if version is None or version not in self.versions(name):
            what = f"{name}@{version}" if version else name
            raise NotInstalledError(f"{what} is not installed; run `packager install {what}`")
        return self.model_dir(name) / version

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the per-model lock: installs, rollbacks and removals of one model serialise.

        Waiting for another process says so on stderr, for at most ``lock_timeout`` seconds.
        Once it is held, removals of the model that were killed part-way are finished or
        undone (:meth:`_recover_removals`).

        Raises:
            UsageError: locks/ or the lock file is a link, not ours, or not what it should be.
            LockTimeoutError: the lock stayed taken for ``lock_timeout`` seconds.
        """
        path = self._own_subdirectory("locks") / f"{check_name(name)}.lock"
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UsageError(
                    f"{path} is a symbolic link; packager never follows one there: remove it"
                ) from e
            error = LocalDiskError if e.errno in DISK_ERRNOS else UsageError
            raise error(f"cannot open the lock {path}: {e.strerror}") from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(f"{path} is not a regular file: remove it")
            _check_owner(path, info)
            os.fchmod(fd, 0o600)  # older versions made lock files 0644
            _acquire(fd, name, path, self.lock_timeout)
            try:
                self._recover_removals(name)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh staging directory under tmp/<name>/, removed afterwards.

        Call it holding :meth:`lock`: leftovers of an install that was killed are then
        known to be stale and are removed first.
        """
        import shutil  # here, not at every command's start (as in _io.fs)
        import tempfile

        parent = _own_directory(self._own_subdirectory("tmp") / check_name(name), follow=False)
        for stale in parent.iterdir():
            if stale.is_symlink() or not stale.is_dir():
                stale.unlink()
            else:
                shutil.rmtree(stale, ignore_errors=True)
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
        fingerprints: Mapping[str, Fingerprint] | None = None,
        files: Sequence[FileEntry] = (),
    ) -> Path:
        """Move a verified staging directory into place and make it ``current``.

        The move and the switch are each one rename, so a crash leaves either the old
        state or the new one. The rollback floor is raised before the switch, so a crash
        can only leave it higher, never lower. A version already installed with the
        same manifest is kept if its files are the verified ones; otherwise (damaged on
        disk) it is swapped for the staged copy in one rename, and the audit log says so.

        ``channel`` is the channel document the version was installed through: it is
        recorded (last seen, followed) in the same transaction as the install. Without
        one, the model stops following any channel: it was installed by version.

        ``fingerprints`` are the staged files' fingerprints taken when their bytes were
        verified (:attr:`~packager.registry.verified.Fetched.fingerprints`) and ``files``
        the verified manifest's entries (the digests they were verified against): a file
        that still has its own fingerprint is recorded with its digest (see
        :func:`_record_fingerprints`).

        Raises:
            WrongModelError: the version is installed with a different signed manifest.
        """
        root = self.model_dir(name)
        root.mkdir(parents=True, exist_ok=True)
        target = root / version
        damaged: list[str] = []
        if target.exists():
            installed = target / MANIFEST
            if installed.is_file() and installed.read_bytes() != (staged / MANIFEST).read_bytes():
                raise WrongModelError(
                    f"{name}@{version} is installed with different signed content than "
                    f"{source} serves; `packager remove {name}@{version}` first if you trust it"
                )
            damaged = _differences(target, staged)
            if damaged:
                _seal(staged)
                _exchange(staged, target)  # the damaged copy leaves with the staging directory
                fsync_dir(root)
        else:
            _seal(staged)
            os.rename(staged, target)
            fsync_dir(root)
        with self.db() as conn:
            if damaged:
                _audit(
                    conn,
                    "install",
                    "repaired",
                    now,
                    name,
                    version,
                    f"the installed copy differed from its signed manifest "
                    f"({', '.join(damaged)}): replaced with the copy verified from {source}",
                )
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
            _record_fingerprints(conn, target, files, fingerprints or {})
            self._forget_fingerprints(conn)
        self._switch(name, version)
        return target

    def manifest_digest(self, name: str, version: str) -> Digest:
        """The sha256 of an installed version's manifest.json.

        Raises:
            NotInstalledError: not installed.
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
        for version in self._activated(name):
            if version != current and version in installed:
                return version
        return None

    def recent_versions(self, name: str) -> list[str]:
        """Installed versions of ``name``, the most recently active first (versions never
        activated since state.db was new come last, highest first)."""
        installed = self.versions(name)
        order = [v for v in self._activated(name) if v in installed]
        current = self.current_version(name)
        first = [current] if current in installed else []
        rest = dict.fromkeys([*first, *order, *reversed(installed)])
        return list(rest)

    def _activated(self, name: str) -> list[str]:
        """The versions of ``name`` made current, the latest first (repeats kept)."""
        rows = self._select(
            "SELECT version FROM activations WHERE name = ? ORDER BY id DESC", (name,)
        )
        return [str(v) for (v,) in rows]

    def activate(self, name: str, version: str, *, now: datetime) -> None:
        """Make an installed version ``current`` (used by rollback)."""
        self.installed_dir(name, version)
        self._switch(name, version)
        with self.db() as conn:
            conn.execute(
                "INSERT INTO activations (name, version, at) VALUES (?, ?, ?)",
                (name, version, now.isoformat()),
            )

    def remove(
        self,
        name: str,
        version: str,
        *,
        action: str = "remove",
        now: datetime | None = None,
        detail: str = "",
    ) -> Path:
        """Delete an installed version that is not ``current``, and write ``action`` to the
        audit log (at ``now``, default the present); the caller holds the model's lock.

        The version leaves models/ in one rename (to tmp/<name>/, see
        :meth:`_recover_removals`), its audit entry is written, and only then are its files
        deleted: killed before the audit entry, the next command that takes the lock puts
        the version back; killed after, it deletes what is left.

        Raises:
            NotInstalledError: not installed.
            UsageError: it is the current version, or a pinned one.
        """
        directory = self.installed_dir(name, version)
        if self.current_version(name) == version:
            raise UsageError(
                f"{name}@{version} is the current version; `packager rollback {name}` "
                "or install another version first"
            )
        if version in self.pinned(name):
            raise UsageError(f"{name}@{version} is pinned; `packager unpin {name}@{version}` first")
        with self._unlinking():
            self._doomed(name, directory, action, detail=detail, now=now or datetime.now(UTC))
        return directory

    def uninstall(self, name: str, *, now: datetime) -> list[str]:
        """Delete every installed version of ``name`` and its ``current`` link; returns the
        versions deleted. The model's directory leaves in one rename, and comes back if
        state.db cannot record it (or, killed before, at the next command that takes its
        lock: see :meth:`_recover_removals`); its rollback floor and audit entries stay, it
        stops following its channel and its pins go.

        Raises:
            NotInstalledError: nothing of ``name`` is installed.
        """
        root = self.model_dir(name)
        if not os.path.lexists(root):
            raise NotInstalledError(f"{name} is not installed; `packager list` shows what is")
        versions = self.versions(name)
        deleted = ", ".join(versions) or "no version"
        with self._unlinking():
            self._doomed(name, root, "uninstall", detail=f"deleted {deleted}", now=now)
        return versions

    def _doomed(self, name: str, path: Path, action: str, *, detail: str, now: datetime) -> None:
        """Remove ``path`` (a version directory, or the model's whole directory when
        ``action`` is "uninstall") and audit it: renamed into
        tmp/<name>/<action>-<last audit id>-XXXXXXXX/, audited (uninstall also stops following
        and unpins, in the same transaction), then deleted. The directory's name says what
        :meth:`_recover_removals` needs to finish it or put it back."""
        import shutil
        import tempfile

        parent = _own_directory(self._own_subdirectory("tmp") / check_name(name), follow=False)
        with self.db() as conn:
            last = int(conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])
        doomed = Path(tempfile.mkdtemp(prefix=f"{action}-{last}-", dir=parent))
        os.rename(path, doomed / path.name)
        fsync_dir(path.parent)
        fsync_dir(doomed)
        try:
            with self.db() as conn:
                if action == "uninstall":
                    _unfollow(conn, name, now, "uninstalled")
                    conn.execute("DELETE FROM pins WHERE name = ?", (name,))
                    _audit(conn, action, "ok", now, name, None, detail)
                else:
                    _audit(conn, action, "ok", now, name, path.name, detail)
        except BaseException:
            os.rename(doomed / path.name, path)
            fsync_dir(path.parent)
            shutil.rmtree(doomed, ignore_errors=True)
            raise
        shutil.rmtree(doomed, ignore_errors=True)

    def _recover_removals(self, name: str) -> None:
        """Finish or undo the removals of ``name`` that were killed (the caller holds its
        lock, so none is running). One whose audit entry was written (an entry of its action
        and version after the id its directory names) is deleted; one without is put back
        where it was, as if it had not started: a removal deletes nothing before its audit
        entry is written."""
        import shutil

        parent = self.tmp / check_name(name)
        if parent.is_symlink() or not parent.is_dir():
            return
        for entry in sorted(parent.iterdir()):
            match = _DOOMED.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            action, last = match.group(1), int(match.group(2))
            whole = action == "uninstall"
            origin = self.models if whole else self.model_dir(name)
            for moved in list(entry.iterdir()):
                back = origin / moved.name
                if os.path.lexists(back) or self._audited(
                    name, None if whole else moved.name, action, after=last
                ):
                    continue
                origin.mkdir(parents=True, exist_ok=True)
                os.rename(moved, back)
                fsync_dir(origin)
            with self._unlinking():
                shutil.rmtree(entry, ignore_errors=True)

    def _audited(self, name: str, version: str | None, action: str, *, after: int) -> bool:
        """Whether the audit log has an entry of ``action`` on ``name``@``version`` (None:
        the whole model) after the entry of id ``after``."""
        with self.db() as conn:
            row = conn.execute(
                "SELECT 1 FROM audit WHERE id > ? AND name = ? AND action = ? AND version IS ?",
                (after, name, action, version),
            ).fetchone()
        return row is not None

    @contextlib.contextmanager
    def _unlinking(self) -> Iterator[None]:
        """Around a removal: unlinking a file moves the ctime of its inode, which a newer
        version may share. No record is carried over the removal: the row of an inode whose
        fingerprint is not the recorded one after it is deleted (the next upgrade hashes
        that file once, and records it again), and so are the rows of inodes no installed
        version holds any more."""
        yield
        moved = self._moved_fingerprints()
        with self.db() as conn:
            conn.executemany("DELETE FROM fingerprints WHERE dev = ? AND ino = ?", moved)
            self._forget_fingerprints(conn)

    def _moved_fingerprints(self) -> list[tuple[str, str]]:
        """The keys of installed inodes whose fingerprint is no longer the recorded one (a
        ctime moved by an unlink, a write, a chmod): their rows would never match again."""
        recorded = {key: fingerprint for key, (_, fingerprint) in self._fingerprints().items()}
        return [
            (str(f.dev), str(f.ino))
            for f in self._installed_inodes()
            if (f.dev, f.ino) in recorded and recorded[f.dev, f.ino] != f
        ]

    def _forget_fingerprints(self, conn: sqlite3.Connection) -> None:
        """Delete the fingerprints of inodes no installed version holds any more (removed,
        pruned, uninstalled, or repaired away): state.db does not grow with every upgrade.
        A row left behind would be harmless anyway: a new inode given the same number has
        another ctime, and a row only vouches for the digest it was recorded with."""
        held = {(str(f.dev), str(f.ino)) for f in self._installed_inodes()}
        rows = conn.execute("SELECT dev, ino FROM fingerprints").fetchall()
        gone = [(dev, ino) for dev, ino in rows if (str(dev), str(ino)) not in held]
        conn.executemany("DELETE FROM fingerprints WHERE dev = ? AND ino = ?", gone)

    def _installed_inodes(self) -> Iterator[Fingerprint]:
        for entry in self.installed():
            with contextlib.suppress(OSError), os.scandir(entry.directory) as files:
                for file in files:
                    with contextlib.suppress(OSError):
                        yield Fingerprint.of(file.stat(follow_symlinks=False))

    def _own_subdirectory(self, name: str) -> Path:
        """``$PACKAGER_HOME/name``, created if missing, checked as :func:`_own_directory`."""
        return _own_directory(_own_directory(self.home, follow=True) / name, follow=False)


def _recorded(
    path: Path, digest: Digest, recorded: dict[tuple[int, int], tuple[Digest, Fingerprint]]
) -> Fingerprint | None:
    """The fingerprint recorded for the inode at ``path`` when it was verified as ``digest``."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    found = recorded.get((info.st_dev, info.st_ino))
    return found[1] if found is not None and found[0] == digest else None


def _record_fingerprints(
    conn: sqlite3.Connection,
    directory: Path,
    files: Sequence[FileEntry],
    verified: Mapping[str, Fingerprint],
) -> None:
    """Record, with the digest its verified manifest entry (in ``files``) signs, the
    fingerprint of every file of an installed version that is still exactly the one
    ``verified`` took when its bytes were verified and it was made read-only (same device,
    inode, size, mtime and ctime: nothing wrote, chmod-ed or linked it since). Any other
    file is left out, and hashed by the next upgrade."""
    for file in files:
        try:
            f = Fingerprint.of(os.lstat(directory / file.path))
        except OSError:
            continue
        if verified.get(file.path) != f:
            continue
        conn.execute(
            "INSERT OR REPLACE INTO fingerprints (dev, ino, digest, size, mtime_ns, ctime_ns) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (str(f.dev), str(f.ino), file.digest.hex, f.size, f.mtime_ns, f.ctime_ns),
        )


def _seal(staged: Path) -> None:
    """Make a verified staging directory's files read-only and durable (a file already
    read-only is not chmod-ed again: that would move its ctime)."""
    for child in staged.iterdir():
        if stat.S_IMODE(os.lstat(child).st_mode) != _READ_ONLY:
            child.chmod(_READ_ONLY)
        fsync_file(child)
    staged.chmod(0o755)
    fsync_dir(staged)


def _differences(installed: Path, verified: Path) -> list[str]:
    """The names of the files that differ between an installed version directory and its
    verified copy: changed, missing, extra or not regular files."""
    names = {entry.name for entry in os.scandir(installed)}
    names |= {entry.name for entry in os.scandir(verified)}
    return sorted(n for n in names if not _same_file(installed / n, verified / n))


def _same_file(installed: Path, verified: Path) -> bool:
    try:
        if not stat.S_ISREG(os.lstat(installed).st_mode):
            return False
        with open(installed, "rb") as a, open(verified, "rb") as b:
            while True:
                chunk = a.read(1 << 20)
                if chunk != b.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except FileNotFoundError:
        return False


# What :meth:`Store._doomed` names a removal's directory under tmp/<name>/: the action and
# the id of the last audit entry before it (mkdtemp's suffix has no '-').
_DOOMED = re.compile(r"([a-z]+)-([0-9]+)-[^-]+")
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories: in one step (renameat2 RENAME_EXCHANGE) where the system can,
    else in two renames."""
    import ctypes  # here: `packager list` and the other readers never need it

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        paths = os.fsencode(a), os.fsencode(b)
        if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # the filesystem cannot: two renames
            raise OSError(code, os.strerror(code), str(b))
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _own_directory(path: Path, *, follow: bool) -> Path:
    """``path``, created if missing, once it is a directory of this account's;
    ``follow=False`` (tmp/, locks/: private, 0700) also refuses a symbolic link.

    Raises:
        UsageError: a link (``follow=False``), not a directory, or another account's.
    """
    with contextlib.suppress(FileExistsError):
        # $PACKAGER_HOME itself stays readable to the services that load its models.
        path.mkdir(mode=0o777 if follow else 0o700, parents=follow)
    try:
        info = os.stat(path, follow_symlinks=follow)
    except OSError as e:
        raise UsageError(f"cannot use {path}: {e.strerror}") from e
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"{path} is a symbolic link; packager never follows one there: remove it")
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path} is not a directory: remove it")
    _check_owner(path, info)
    return path


def _check_owner(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid():
        raise UsageError(
            f"{path} belongs to uid {info.st_uid}, not to this account (uid {os.geteuid()}): "
            "run packager as its owner, or set PACKAGER_HOME to a directory of your own"
        )


def _acquire(fd: int, name: str, path: Path, timeout: float) -> None:
    """Take the lock on ``fd``, saying on stderr when another process holds it.

    Raises:
        LockTimeoutError: still held after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"another install, rollback or removal of {name} still holds {path} "
                    f"after {timeout:g} s; try again later, or wait longer with --lock-timeout"
                ) from None
        if not delay:
            print(f"waiting for another install of {name} (lock {path})...", file=sys.stderr)
        delay = min(max(2 * delay, 0.05), 0.5)
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))


def _open_readonly(path: Path) -> sqlite3.Connection:
    uri = f"{path.absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.parent, os.W_OK):
            raise
    # A read-only directory: SQLite cannot create the WAL index beside state.db, and
    # nothing can write state.db there either, so it is read as it is on disk.
    return sqlite3.connect(f"{uri}&immutable=1", uri=True)


_ROOM_NEEDED = 1 << 20
_DISK_FAILURES = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PERM}


def _no_room(directory: Path) -> bool:
    """Whether ``directory`` cannot be written: read-only, not ours to write, or full."""
    if not os.access(directory, os.W_OK):
        return True
    try:
        info = os.statvfs(directory)
    except OSError:
        return False
    # SQLite needs a few pages for its journal: less than that is a full disk.
    return info.f_bavail * info.f_frsize < _ROOM_NEEDED


def _unusable(path: Path, error: sqlite3.DatabaseError) -> PackagerError:
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    if code in _DISK_FAILURES or (
        code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR) and _no_room(path.parent)
    ):
        return LocalDiskError(
            f"local disk: cannot write {path} ({error}); free space, or give a --home "
            "this account may write"
        )
    return UsageError(
        f"{path} cannot be used as packager's state database ({error}); restore it from a "
        "backup, or move it aside: a new one recovers each model's rollback floor from the "
        "installed versions"
    )


def _newer(path: Path, found: int) -> UsageError:
    return UsageError(
        f"{path} has schema version {found}, newer than this packager knows "
        f"({SCHEMA_VERSION}); upgrade packager to use it"
    )


def _schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, path: Path, store: Store) -> None:
    """Bring state.db to :data:`SCHEMA_VERSION` in one transaction, or refuse a newer one.
    A new, empty database gets the rollback floors :func:`_recover_floors` finds.

    Raises:
        UsageError: the database was written by a newer packager: using it could lose
            what that version records; a floor that cannot be recovered.
    """
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # IMMEDIATE: two processes opening an old database migrate it one after the other.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _schema_version(conn)
        if found > SCHEMA_VERSION:
            raise _newer(path, found)
        new = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if new:
            _recover_floors(conn, store)
        # PRAGMA takes no parameters; SCHEMA_VERSION is our own integer.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _recover_floors(conn: sqlite3.Connection, store: Store) -> None:
    """In a new state.db, set each installed model's rollback floor to its highest installed
    version: deleting state.db must not reopen the way to older versions.

    Raises:
        UsageError: a model directory holds no installed version: its floor is unknown.
    """
    if not store.models.is_dir():
        return
    now = datetime.now(UTC)
    for root in sorted(store.models.iterdir()):
        versions = store.versions(root.name)
        if not versions:
            raise UsageError(
                f"{store.home / STATE_DB} is new and the rollback floor of {root.name} cannot "
                f"be recovered: {root} holds no installed version; restore state.db from a "
                f"backup, or remove {root}"
            )
        floor = versions[-1]
        conn.execute("INSERT INTO floors (name, version) VALUES (?, ?)", (root.name, floor))
        _audit(
            conn,
            "floor",
            "recovered",
            now,
            root.name,
            floor,
            f"state.db was new: rollback floor set to the highest installed version "
            f"(installed: {', '.join(versions)})",
        )


def _audit(
    conn: sqlite3.Connection,
    action: str,
    outcome: str,
    now: datetime,
    name: str | None,
    version: str | None,
    detail: str,
    facts: AuditFacts | None = None,
) -> None:
    facts = facts or AuditFacts()
    conn.execute(
        "INSERT INTO audit (at, action, name, version, outcome, detail, "
        "key, digest, source, channel, sequence, previous) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now.isoformat(),
            action,
            name,
            version,
            outcome,
            printable(detail, MAX_AUDIT_DETAIL),
            *(_fact(getattr(facts, column)) for column in _FACT_COLUMNS),
        ),
    )


def _fact(value: str | int | None) -> str | int | None:
    # Facts quote registries too (a source, a certificate's names): escaped like details.
    return printable(value, MAX_AUDIT_DETAIL) if isinstance(value, str) else value


def _audit_entry(row: sqlite3.Row) -> AuditEntry:
    """An audit row, of this schema or an older one (without the fact columns)."""
    present = set(row.keys())
    facts = AuditFacts(**{c: row[c] for c in _FACT_COLUMNS if c in present})
    return AuditEntry(
        row["at"], row["action"], row["name"], row["version"], row["outcome"], row["detail"], facts
    )


def _record_channel(conn: sqlite3.Connection, record: ChannelRecord, now: datetime) -> None:
    follow, seen = record.following, record.seen
    at = now.isoformat()
    conn.execute(
        _RECORD_SEEN,
        (
            follow.name,
            follow.channel,
            seen.sequence,
            seen.version,
            seen.manifest_digest.hex,
            at,
            None if record.expires is None else record.expires.isoformat(),
        ),
    )
    conn.execute(_RECORD_FOLLOW, (follow.name, follow.channel, follow.registry, at))
    if record.detail is not None:
        facts = AuditFacts(
            digest=str(seen.manifest_digest),
            source=follow.registry,
            channel=follow.channel,
            sequence=seen.sequence,
        )
        _audit(conn, "channel", "ok", now, follow.name, seen.version, record.detail, facts)


def _unfollow(conn: sqlite3.Connection, name: str, now: datetime, reason: str) -> str | None:
    # SELECT then DELETE, not DELETE ... RETURNING: servers run SQLite older than 3.35.
    row = conn.execute("SELECT channel FROM follows WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM follows WHERE name = ?", (name,))
    channel = str(row[0])
    detail = f"no longer follows {channel}: {reason}"
    _audit(conn, "channel", "unfollow", now, name, None, detail, AuditFacts(channel=channel))
    return channel
