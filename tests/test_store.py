"""state.db carries a schema version: older databases are migrated, newer ones refused. Local
state is no weak point: a damaged state.db is refused in one line, a deleted one recovers the
rollback floors, a damaged installed copy is repaired, locks are private and bounded, and
nothing of another account's (or a link planted in the home) is used."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import RollbackError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.store import SCHEMA_VERSION, STATE_DB, Store
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair

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
    with pytest.raises(UsageError, match="cannot be used as packager's state database"):
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


# -- local state is no weak point: damage, deletion, locks, other accounts' files ----------


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path]) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "2.0.0"):
        publish_bundle(bundles[version], registry=registry, mode=Unverified("no --key"))
    return registry


def install_as(
    ref: str, registry: LayoutRegistry, home: Path, keypair: KeyPair, *, force: bool = False
) -> Path:
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])), force=force)
    return install(ref, registry=registry, store=Store(home), now=NOW, options=options).directory


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACKAGER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "packager", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"\x00garbage" * 512),
        truncate,
        lambda p: (p.unlink(), p.mkdir()),
    ],
    ids=["garbage", "truncated", "directory"],
)
def test_a_damaged_state_db_is_one_line_exit_2(
    tmp_path: Path,
    home: Path,
    registry: LayoutRegistry,
    keypair: KeyPair,
    damage: Callable[[Path], object],
) -> None:
    install_as("iris@1.0.0", registry, home, keypair)
    for number in range(200):  # enough pages that a third of the file loses some
        Store(home).audit(action="test", outcome="ok", now=NOW, detail=f"{number}" * 100)
    damage(home / STATE_DB)
    one_line(cli(home, "log"), 2, str(home / STATE_DB), "restore it from a backup")
    installed = cli(
        home,
        "install",
        "iris@2.0.0",
        "--registry",
        str(registry.root),
        "--key",
        str(keypair.pub_path),
    )
    one_line(installed, 2, str(home / STATE_DB))
    assert Store(home).current_version("iris") == "1.0.0"


def test_a_deleted_state_db_recovers_the_floor_from_what_is_installed(
    home: Path, registry: LayoutRegistry, keypair: KeyPair
) -> None:
    install_as("iris@1.0.0", registry, home, keypair)
    install_as("iris@2.0.0", registry, home, keypair)
    for path in home.glob(STATE_DB + "*"):
        path.unlink()
    with pytest.raises(RollbackError):
        install_as("iris@1.0.0", registry, home, keypair)
    assert Store(home).current_version("iris") == "2.0.0"
    recovered = [e for e in Store(home).audit_log("iris") if e.outcome == "recovered"]
    assert [(e.action, e.version) for e in recovered] == [("floor", "2.0.0")]
    assert "installed: 1.0.0, 2.0.0" in recovered[0].detail


def test_a_floor_that_cannot_be_recovered_is_refused(
    home: Path, registry: LayoutRegistry, keypair: KeyPair
) -> None:
    install_as("iris@1.0.0", registry, home, keypair)
    (home / STATE_DB).unlink()
    shutil.rmtree(home / "models" / "iris" / "1.0.0")
    with pytest.raises(UsageError, match="rollback floor of iris cannot be recovered"):
        install_as("iris@1.0.0", registry, home, keypair)
    one_line(cli(home, "log"), 2, "cannot be recovered", "restore state.db from a backup")


@pytest.mark.parametrize("damage", ["flip", "delete", "extra"])
def test_reinstalling_a_damaged_version_repairs_it(
    home: Path, registry: LayoutRegistry, keypair: KeyPair, bundles: dict[str, Path], damage: str
) -> None:
    directory = install_as("iris@1.0.0", registry, home, keypair)
    model = directory / "model.onnx"
    if damage == "flip":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.chmod(0o644)
        model.write_bytes(bytes(data))
    elif damage == "delete":
        model.unlink()
    else:
        (directory / "planted.py").write_text("import os\n")
    assert install_as("iris@1.0.0", registry, home, keypair, force=True) == directory
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        p.name for p in bundles["1.0.0"].iterdir()
    )
    assert model.read_bytes() == (bundles["1.0.0"] / "model.onnx").read_bytes()
    assert Store(home).current_version("iris") == "1.0.0"
    repaired = [e for e in Store(home).audit_log("iris") if e.outcome == "repaired"]
    assert len(repaired) == 1
    assert ("planted.py" if damage == "extra" else "model.onnx") in repaired[0].detail
    # Nothing is left behind in staging.
    assert not [p for p in (home / "tmp").rglob("*") if not p.is_dir()]


def test_lock_files_are_private_and_a_planted_link_is_not_followed(
    home: Path, tmp_path: Path
) -> None:
    store = Store(home)
    with store.lock("iris"):
        pass
    assert stat.S_IMODE((home / "locks" / "iris.lock").stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    (home / "locks" / "spam.lock").symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"), store.lock("spam"):
        pass
    assert not victim.exists()


def test_waiting_for_a_lock_says_so_and_gives_up(
    home: Path, registry: LayoutRegistry, keypair: KeyPair
) -> None:
    args = ["install", "iris@1.0.0", "--registry", str(registry.root)]
    args += ["--key", str(keypair.pub_path), "--lock-timeout", "1"]
    with Store(home).lock("iris"):
        start = time.monotonic()
        result = cli(home, *args)
        assert time.monotonic() - start < 30
    assert result.returncode == 4, result.stderr
    waiting, error = result.stderr.strip().splitlines()
    lock = home / "locks" / "iris.lock"
    assert waiting == f"waiting for another install of iris (lock {lock})..."
    assert "still holds" in error and "--lock-timeout" in error
    assert Store(home).versions("iris") == []
    assert cli(home, *args).returncode == 0


@pytest.mark.parametrize("where", ["home", "tmp", "locks"])
def test_directories_of_another_account_are_refused(
    home: Path, registry: LayoutRegistry, keypair: KeyPair, where: str
) -> None:
    install_as("iris@1.0.0", registry, home, keypair)
    path = home if where == "home" else home / where
    os.chown(path, 12345, 12345)
    with pytest.raises(UsageError, match="belongs to uid 12345"):
        install_as("iris@2.0.0", registry, home, keypair)
    assert Store(home).current_version("iris") == "1.0.0"


@pytest.mark.parametrize("where", ["tmp", "tmp/iris", "locks"])
def test_links_planted_in_the_home_are_not_followed(
    home: Path, tmp_path: Path, registry: LayoutRegistry, keypair: KeyPair, where: str
) -> None:
    install_as("iris@1.0.0", registry, home, keypair)
    victim = tmp_path / "victim"
    (victim / "data").mkdir(parents=True)
    (victim / "data" / "precious").write_text("keep me")
    planted = home / where
    shutil.rmtree(planted)
    planted.symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        install_as("iris@2.0.0", registry, home, keypair)
    assert (victim / "data" / "precious").read_text() == "keep me"
    assert sorted(p.name for p in victim.iterdir()) == ["data"]
    assert Store(home).current_version("iris") == "1.0.0"
