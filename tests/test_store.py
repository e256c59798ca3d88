"""state.db carries a schema version: older databases are migrated, newer ones refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.errors import UsageError
from packager.instance.store import SCHEMA_VERSION, STATE_DB, Store

NOW = datetime(2026, 12, 1, tzinfo=UTC)
# state.db as packager wrote it before the schema was versioned (user_version 0).
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS installs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL, source TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS floors (name TEXT PRIMARY KEY, version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, action TEXT NOT NULL, name TEXT,
    version TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    name TEXT NOT NULL, channel TEXT NOT NULL, sequence INTEGER NOT NULL,
    version TEXT NOT NULL, manifest_sha256 TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (name, channel));
CREATE TABLE IF NOT EXISTS follows (
    name TEXT PRIMARY KEY, channel TEXT NOT NULL, registry TEXT, at TEXT NOT NULL);
INSERT INTO floors VALUES ('iris', '1.2.0');
INSERT INTO activations (name, version, at) VALUES ('iris', '1.1.0', '2026-11-01T00:00:00');
INSERT INTO activations (name, version, at) VALUES ('iris', '1.2.0', '2026-11-02T00:00:00');
INSERT INTO audit (at, action, name, version, outcome, detail)
    VALUES ('2026-11-02T00:00:00', 'install', 'iris', '1.2.0', 'ok', 'from the old code');
INSERT INTO follows VALUES ('iris', 'stable', NULL, '2026-11-02T00:00:00');
"""


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def make_db(path: Path, script: str, version: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


def test_new_database_has_current_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.audit(action="test", outcome="ok", now=NOW)
    assert user_version(tmp_path / STATE_DB) == SCHEMA_VERSION >= 1


def test_version_0_database_is_migrated_in_place(tmp_path: Path) -> None:
    make_db(tmp_path / STATE_DB, V0_SCHEMA)
    store = Store(tmp_path)
    assert store.floor("iris") == "1.2.0"
    assert user_version(tmp_path / STATE_DB) == SCHEMA_VERSION
    # Everything the old code recorded is still there and still used.
    assert [e.detail for e in store.audit_log("iris")] == ["from the old code"]
    assert [(f.name, f.channel) for f in store.following()] == [("iris", "stable")]
    store.audit(action="test", outcome="ok", now=NOW, name="iris")
    assert len(store.audit_log("iris")) == 2
    conn = sqlite3.connect(tmp_path / STATE_DB)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert {"activations_by_name", "audit_by_name"} <= indexes


def test_failed_migration_leaves_version_0(tmp_path: Path) -> None:
    # A table the migration cannot index: the whole step rolls back, version stays 0.
    make_db(tmp_path / STATE_DB, "CREATE TABLE audit (x TEXT);")
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path).audit_log()
    assert user_version(tmp_path / STATE_DB) == 0
    conn = sqlite3.connect(tmp_path / STATE_DB)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"audit"}


def test_newer_database_is_refused(tmp_path: Path) -> None:
    make_db(tmp_path / STATE_DB, V0_SCHEMA, version=SCHEMA_VERSION + 1)
    with pytest.raises(UsageError, match=r"schema version \d+, newer than this packager"):
        Store(tmp_path).floor("iris")
    # Refused, not touched.
    assert user_version(tmp_path / STATE_DB) == SCHEMA_VERSION + 1


def test_newer_database_exits_2_with_one_line(tmp_path: Path) -> None:
    make_db(tmp_path / STATE_DB, V0_SCHEMA, version=SCHEMA_VERSION + 1)
    result = subprocess.run(
        [sys.executable, "-m", "packager", "--home", str(tmp_path), "log"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "newer than this packager knows" in lines[0]


def test_the_audit_log_stores_what_registries_said_as_escaped_capped_text(tmp_path: Path) -> None:
    store = Store(tmp_path)
    forged = (
        "TamperedError: \x1b[2K\rinstall ok\n2026-12-02T00:00:00+00:00  install  ok  iris@9.9.9"
    )
    store.audit(action="install", outcome="refused", now=NOW, name="iris", detail=forged)
    store.audit(action="install", outcome="refused", now=NOW, name="iris", detail="x" * 10_000)
    first, second = store.audit_log("iris")
    assert first.detail == (
        "TamperedError: \\x1b[2K\\rinstall ok\\n2026-12-02T00:00:00+00:00  install  ok  iris@9.9.9"
    )
    assert second.detail == "x" * 2000 + "… (8000 more characters)"
    # Whatever reads state.db directly sees one row per entry, with no control characters.
    with sqlite3.connect(tmp_path / STATE_DB) as conn:
        rows = conn.execute("SELECT detail FROM audit").fetchall()
    assert all(row[0].isprintable() for row in rows)
