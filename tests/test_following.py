"""What an instance says about the channel a model follows: installing or rolling back by
version stops following it (and says so), installing the current version again does nothing
without --force, and an expiring or expired channel is shown ahead and reported once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packager.core.manifest import MANIFEST, SIGNATURE
from packager.core.policy import TrustPolicy
from packager.distribution.mirror import export
from packager.distribution.promote import promote
from packager.errors import ExpiredError
from packager.instance.store import Store
from packager.registry import LayoutRegistry

from .conftest import KeyPair
from .test_channels import DAY, HOUR, T0, cli, install_channel, registry, run_update, store, trust

__all__ = ["registry", "store", "trust"]  # fixtures shared with test_channels


def follow_stable(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair
) -> None:
    code, _, err = cli(
        capsys, "install", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path
    )
    assert code == 0, err


def test_install_by_version_from_an_archive_and_rollback_say_the_channel_is_no_longer_followed(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    store: Store,
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    def promote_stable(version: str) -> None:
        promote(
            f"iris@{version}",
            channel="stable",
            registry=registry,
            private_key=keypair.private,
            now=datetime.now(UTC),
        )

    promote_stable("1.0.0")
    follow_stable(capsys, registry, keypair)
    code, out, err = cli(
        capsys,
        "install",
        "iris@1.1.0",
        "--registry",
        registry.root,
        "--key",
        keypair.pub_path,
        "--json",
    )
    assert code == 0, err
    assert "WARNING: iris no longer follows channel stable" in err
    assert "`packager install iris@stable` to follow it again" in err
    assert json.loads(out)["unfollowed"] == "stable"
    assert store.following() == []

    promote_stable("2.0.0")
    follow_stable(capsys, registry, keypair)
    code, out, err = cli(capsys, "rollback", "iris", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "name": "iris",
        "current": "1.1.0",
        "previous": "2.0.0",
        "unfollowed": "stable",
    }
    assert "iris no longer follows channel stable: `packager update` keeps 1.1.0" in err
    assert store.following() == []

    follow_stable(capsys, registry, keypair)  # 2.0.0 again
    archive = tmp_path / "models.tar"
    export(["iris@1.0.0"], registry=registry, out=archive)
    code, _, err = cli(capsys, "install", archive, "--key", keypair.pub_path, "--allow-downgrade")
    assert code == 0, err
    assert "iris no longer follows channel stable" in err
    assert store.current_version("iris") == "1.0.0" and store.following() == []
    # Nothing followed, nothing said.
    code, _, err = cli(capsys, "rollback", "iris")
    assert code == 0 and "no longer follows" not in err


def test_installing_the_current_version_again_does_nothing_unless_forced(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, store: Store, keypair: KeyPair
) -> None:
    install = ("install", "iris@1.1.0", "--registry", registry.root, "--key", keypair.pub_path)
    code, _, err = cli(capsys, *install)
    assert code == 0, err
    entries = len(store.audit_log("iris"))
    # Only model.sig and manifest.json can still be read: fetching any file would fail.
    artifact = registry.resolve("iris", "1.1.0")
    for path, desc in artifact.files.items():
        if path not in (MANIFEST, SIGNATURE):
            (registry.root / "iris" / "blobs" / "sha256" / desc.digest.hex).unlink()

    code, out, err = cli(capsys, *install, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["alreadyCurrent"], result["installed"], result["testVectors"]) == (
        True,
        False,
        None,
    )
    assert "iris@1.1.0 is already current; --force installs it again" in err
    assert "smoke test" not in err
    code, out, err = cli(capsys, *install)
    assert code == 0 and "iris@1.1.0 is already current (nothing installed" in out
    assert len(store.audit_log("iris")) == entries

    # --force installs again: the files the registry lost are the installed ones, re-hashed.
    code, _, err = cli(capsys, *install, "--force")
    assert code == 0 and "reused model.onnx" in err and "smoke test passed" in err
    assert len(store.audit_log("iris")) > entries


def test_force_installs_the_current_version_again_and_repairs_it(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, store: Store, keypair: KeyPair
) -> None:
    install = ("install", "iris@1.1.0", "--registry", registry.root, "--key", keypair.pub_path)
    assert cli(capsys, *install)[0] == 0
    vectors = store.installed_dir("iris", "1.1.0") / "testvectors.npz"
    vectors.chmod(0o644)
    vectors.write_bytes(b"damaged")
    code, out, err = cli(capsys, *install, "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["installed"] is True and "smoke test passed" in err
    assert store.audit_log("iris")[-2].outcome == "repaired"
    assert vectors.read_bytes() != b"damaged"


def test_list_and_update_show_the_days_left_and_warn_a_week_ahead(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, store: Store, keypair: KeyPair
) -> None:
    issued = datetime.now(UTC) - HOUR
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=issued,
        expires_in=timedelta(days=30),
    )
    follow_stable(capsys, registry, keypair)
    code, out, err = cli(capsys, "list")
    assert code == 0
    assert out == "* iris  1.1.0  follows stable (expires in 29 days)\n"
    assert "WARNING" not in err

    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=issued,
        expires_in=timedelta(days=6, hours=12),
    )
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 0, err
    assert out == "current  iris@stable  1.1.0  (expires in 6 days)\n"
    assert "WARNING: channel iris@stable expires in 6 days" in err
    assert "warned 7 days ahead" in err
    code, out, err = cli(capsys, "list", "--json")
    [row] = json.loads(out)
    assert row["channel"]["channel"] == "stable" and row["channel"]["daysLeft"] == 6
    assert "WARNING: channel iris@stable expires in 6 days" in err


def test_update_audits_an_expired_channel_once_fails_every_run_and_keeps_serving(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair, home: Path
) -> None:
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0,
        expires_in=DAY,
    )
    install_channel(registry, store, trust, T0 + HOUR)

    def refusals() -> int:
        return sum(e.outcome == "refused" for e in store.audit_log("iris"))

    first = run_update(store, trust, T0 + 2 * DAY, home)
    [refused] = first.models
    assert isinstance(refused.error, ExpiredError) and first.exit_code == 3
    assert "iris@1.1.0 stays current" in str(refused.error)
    assert refusals() == 1
    for later in (T0 + 3 * DAY, T0 + 4 * DAY):
        report = run_update(store, trust, later, home)
        [quiet] = report.models
        assert (quiet.status, quiet.version, report.exit_code) == ("expired", "1.1.0", 3)
        assert isinstance(quiet.error, ExpiredError)
        assert quiet.expires == T0 + DAY
    assert refusals() == 1
    assert store.current_version("iris") == "1.1.0"

    # A new document accepted, then expired in its turn: reported again, once.
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + 4 * DAY,
        expires_in=DAY,
    )
    assert run_update(store, trust, T0 + 4 * DAY + HOUR, home).models[0].status == "updated"
    again = run_update(store, trust, T0 + 6 * DAY, home)
    assert isinstance(again.models[0].error, ExpiredError) and refusals() == 2
    assert run_update(store, trust, T0 + 7 * DAY, home).models[0].status == "expired"


def test_cli_update_exits_3_while_the_channel_is_expired(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, store: Store, keypair: KeyPair
) -> None:
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - 3 * DAY,
        expires_in=2 * DAY,
    )
    code, _, err = cli(
        capsys,
        "install",
        "iris@stable",
        "--registry",
        registry.root,
        "--key",
        keypair.pub_path,
    )
    assert code == 3 and "expired" in err  # never installed through an expired document
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - 2 * DAY,
        expires_in=2 * DAY + HOUR,
    )
    follow_stable(capsys, registry, keypair)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - 2 * DAY,
        expires_in=DAY,
    )
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 3, err
    assert "stays current" in out and "expired" in err
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path, "--json")
    assert code == 3, err
    [model] = json.loads(out)["models"]
    assert (model["status"], model["version"], model["exitCode"]) == ("expired", "1.1.0", 3)
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 3
    assert "1 of 1 models not updated: iris@stable: " in err and "stays current" in err
    assert out == "expired  iris@stable  1.1.0 (stays current)\n"


def test_list_still_lists_installed_versions_when_state_db_is_unusable(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair, home: Path
) -> None:
    install = ("install", "iris@1.1.0", "--registry", registry.root, "--key", keypair.pub_path)
    assert cli(capsys, *install)[0] == 0
    for suffix in ("", "-wal", "-shm"):
        (home / f"state.db{suffix}").unlink(missing_ok=True)
    (home / "state.db").write_bytes(b"not a database" * 100)
    code, out, err = cli(capsys, "list")
    assert (code, out) == (0, "* iris  1.1.0\n")
    assert "WARNING: channels not shown:" in err and "state.db" in err
