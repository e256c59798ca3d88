"""The version already current is checked again against the trust policy as it is now:
installing it again, or `packager update` finding the channel names it, judges its installed
signature and manifest.json with no registry, reads its required approvals (never its
files) from the registry, and refuses it (exit 3, audited, shown by `status`) once it no
longer passes; it stays installed and current."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packager.cli import main
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, SIGNATURE
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.approve import approve, revoke_approvals
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import RollbackError, UntrustedError, VerificationError
from packager.instance.install import InstallOptions, InstallResult, install
from packager.instance.status import status
from packager.instance.store import Following, Store
from packager.instance.trust import (
    add_key,
    allow_licenses,
    read_policy,
    require_approvals,
    revoke_key,
    set_minimum,
)
from packager.instance.update import UpdateReport, update
from packager.registry import LayoutRegistry
from packager.registry.memory import MemoryRegistry

from .conftest import KeyPair, cli, make_keypair
from .test_external_data import resign

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
NO_LONGER = "iris@1.0.0, the version current here, no longer passes the trust policy"


@pytest.fixture
def registry(
    memory_registry: MemoryRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> MemoryRegistry:
    """iris 1.0.0 and 1.1.0 signed by the builder's key, with stable naming 1.0.0, promoted
    by the successor's key."""
    for version in ("1.0.0", "1.1.0"):
        publish_bundle(
            bundles[version],
            registry=memory_registry,
            mode=Trusted(adhoc_policy([keypair.public])),
        )
    promote(
        "iris@1.0.0",
        channel="stable",
        registry=memory_registry,
        private_key=other_keypair.private,
        now=T0,
    )
    return memory_registry


@pytest.fixture
def trust_file(home: Path, keypair: KeyPair, other_keypair: KeyPair) -> Path:
    """The builder's key signs iris's bundles, its successor's the channel documents: both
    are trusted for iris, so revoking the builder's key leaves the channel trusted."""
    path = home / "trust.toml"
    add_key(path, "builder", keypair.pub_path)
    add_key(path, "successor", other_keypair.pub_path)
    return path


def do_install(ref: str, registry: MemoryRegistry, home: Path, say: list[str]) -> InstallResult:
    return install(
        ref,
        registry=registry,
        store=Store(home),
        now=T0 + HOUR,
        options=InstallOptions(
            verify=Trusted(read_policy(home / "trust.toml")),
            registry_ref=registry.location,
            progress=say.append,
        ),
    )


def do_update(registry: MemoryRegistry, home: Path) -> UpdateReport:
    return update(
        store=Store(home),
        now=T0 + 2 * HOUR,
        open_registry=lambda _ref: registry,
        options=InstallOptions(verify=Trusted(read_policy(home / "trust.toml"))),
    )


def files_of(registry: MemoryRegistry, version: str) -> dict[str, Digest]:
    return {p: d.digest for p, d in registry.resolve("iris", version).files.items()}


def weights_read(registry: MemoryRegistry, since: int, version: str = "1.0.0") -> set[str]:
    """The bundle files other than model.sig and manifest.json read after ``since`` reads."""
    read = set(registry.reads[since:])
    files = files_of(registry, version)
    return {p for p, d in files.items() if d in read and p not in (MANIFEST, SIGNATURE)}


def test_the_current_version_is_checked_again_without_reading_the_registry(
    registry: MemoryRegistry, home: Path, trust_file: Path
) -> None:
    said: list[str] = []
    assert do_install("iris@stable", registry, home, said).version == "1.0.0"
    assert weights_read(registry, 0) == {
        "model.onnx",
        "testvectors.npz",
        "provenance.intoto.json",
        "sbom.cdx.json",
    }
    entries = len(Store(home).audit_log("iris"))
    files = files_of(registry, "1.0.0")
    before = len(registry.reads)

    said.clear()
    again = do_install("iris@stable", registry, home, said)
    assert again.smoke_test is None and "iris@1.0.0 is already current" in said
    report = do_update(registry, home)
    assert [(m.status, m.version) for m in report.models] == [("current", "1.0.0")]
    # The installed signature and manifest.json were judged: no file of the registry read.
    assert not set(registry.reads[before:]) & set(files.values())
    assert len(Store(home).audit_log("iris")) == entries


def revoke_builder(trust_file: Path, _: MemoryRegistry) -> None:
    revoke_key(trust_file, "builder")


def refuse_unlicensed(trust_file: Path, _: MemoryRegistry) -> None:
    allow_licenses(trust_file, "iris*", ["MIT"])


def raise_minimum(trust_file: Path, _: MemoryRegistry) -> None:
    set_minimum(trust_file, "iris", "1.1.0")


POLICY_CHANGES: list[tuple[Callable[[Path, MemoryRegistry], None], type[Exception], str]] = [
    (revoke_builder, UntrustedError, "made with the revoked key 'builder'"),
    (refuse_unlicensed, UntrustedError, "the model: no licence recorded"),
    (raise_minimum, RollbackError, "below the minimum version 1.1.0"),
]


def assert_refused_and_unchanged(
    home: Path, registry: MemoryRegistry, since: int, error: type[Exception], reason: str
) -> None:
    """Install again and update: both refused (exit 3, audited, in `status`), nothing changed."""
    store = Store(home)
    directory = store.installed_dir("iris", "1.0.0")
    contents = {p.name: p.read_bytes() for p in directory.iterdir()}
    for ref, action in (("iris@1.0.0", "install"), ("iris@stable", "channel")):
        with pytest.raises(error) as refused:
            do_install(ref, registry, home, [])
        assert isinstance(refused.value, VerificationError) and refused.value.exit_code == 3
        assert NO_LONGER in str(refused.value) and reason in str(refused.value)
        last = store.audit_log("iris")[-1]
        assert (last.action, last.outcome) == (action, "refused")
        assert NO_LONGER in last.detail and reason in last.detail
    report = do_update(registry, home)
    assert report.exit_code == 3
    (model,) = report.models
    assert model.status == "refused" and model.error is not None and reason in str(model.error)

    assert store.current_version("iris") == "1.0.0"
    assert store.following() == [Following("iris", "stable", registry.location)]
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == contents
    (shown,) = status(store, now=T0 + 3 * HOUR).models
    assert shown.current == "1.0.0"
    assert shown.last_refusal is not None and NO_LONGER in shown.last_refusal.detail
    assert shown.last_attempt is not None and shown.last_attempt.exit_code == 3
    assert weights_read(registry, since) == set()


@pytest.mark.parametrize(("change", "error", "reason"), POLICY_CHANGES)
def test_a_policy_changed_after_install_refuses_the_current_version(
    registry: MemoryRegistry,
    home: Path,
    trust_file: Path,
    change: Callable[[Path, MemoryRegistry], None],
    error: type[Exception],
    reason: str,
) -> None:
    assert do_install("iris@stable", registry, home, []).version == "1.0.0"
    since = len(registry.reads)
    change(trust_file, registry)
    assert_refused_and_unchanged(home, registry, since, error, reason)


def test_an_approval_revoked_in_the_registry_refuses_the_current_version(
    registry: MemoryRegistry, home: Path, trust_file: Path, tmp_path: Path
) -> None:
    reviewer = make_keypair(tmp_path / "alice")
    add_key(trust_file, "alice", reviewer.pub_path, models=None, roles=["security-review"])
    require_approvals(trust_file, "iris*", ["security-review"])
    approve(
        "iris@1.0.0",
        role="security-review",
        registry=registry,
        private_key=reviewer.private,
        now=T0,
    )
    assert do_install("iris@stable", registry, home, []).version == "1.0.0"
    assert do_update(registry, home).exit_code == 0  # the approval is read again and counts
    since = len(registry.reads)
    revoke_approvals("iris@1.0.0", registry=registry, private_key=reviewer.private, now=T0)
    assert_refused_and_unchanged(home, registry, since, UntrustedError, "revoked by its signer")


def test_approvals_of_another_bundle_of_the_version_do_not_count(
    registry: MemoryRegistry,
    home: Path,
    trust_file: Path,
    bundle_copy: Path,
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    """A registry serving another validly signed iris@1.0.0, approved, says nothing of the
    one installed: approvals are judged for the installed manifest.json."""
    reviewer = make_keypair(tmp_path / "alice")
    add_key(trust_file, "alice", reviewer.pub_path, models=None, roles=["security-review"])
    approve(
        "iris@1.0.0",
        role="security-review",
        registry=registry,
        private_key=reviewer.private,
        now=T0,
    )
    require_approvals(trust_file, "iris*", ["security-review"])
    assert do_install("iris@1.0.0", registry, home, []).version == "1.0.0"
    since = len(registry.reads)
    other = MemoryRegistry("memory://other")
    resign(bundle_copy, keypair, edit=lambda m: replace(m, version="1.0.0"))
    publish_bundle(bundle_copy, registry=other, mode=Trusted(adhoc_policy([keypair.public])))
    approve(
        "iris@1.0.0", role="security-review", registry=other, private_key=reviewer.private, now=T0
    )
    with pytest.raises(UntrustedError, match="lacks the approvals") as refused:
        do_install("iris@1.0.0", other, home, [])
    assert NO_LONGER in str(refused.value)
    assert Store(home).current_version("iris") == "1.0.0"
    assert weights_read(registry, since) == set()


def test_cli_exit_3_audit_and_status_once_the_key_is_revoked(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
    home: Path,
    trust_file: Path,
) -> None:
    other = other_keypair  # the promoter's key, trusted for iris as the successor
    layout = LayoutRegistry(tmp_path / "registry")
    publish_bundle(bundles["1.0.0"], registry=layout, mode=Trusted(adhoc_policy([keypair.public])))
    promote("iris@1.0.0", channel="stable", registry=layout, private_key=other.private, now=T0)
    reg = str(layout.root)
    assert cli(capsys, "install", "iris@stable", "--registry", reg)[0] == 0
    code, _, err = cli(capsys, "install", "iris@stable", "--registry", reg)
    assert code == 0 and "iris@1.0.0 is already current" in err

    assert cli(capsys, "trust", "revoke", "builder")[0] == 0
    code, out, err = cli(capsys, "update", "--json")
    assert code == 3 and NO_LONGER in err and "revoked key 'builder'" in err
    assert json.loads(out)["models"][0]["status"] == "refused"
    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
    assert code == 3 and NO_LONGER in err and "revoked key 'builder'" in err

    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0
    (model,) = json.loads(out)["models"]
    assert model["current"] == "1.0.0" and model["channel"] == "stable"
    assert model["lastRefusal"]["action"] == "install"
    assert NO_LONGER in model["lastRefusal"]["reason"]
    code, out, _ = cli(capsys, "log", "iris", "--json")
    refused = [e for e in json.loads(out) if e["outcome"] == "refused"]
    assert [e["action"] for e in refused] == ["channel", "install"]


@pytest.fixture
def offline(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair, home: Path, trust_file: Path
) -> tuple[LayoutRegistry, list[Path]]:
    """iris 1.0.0 installed from a registry directory; then two registries that cannot
    vouch for it: a path that does not exist, and an archive of 1.1.0 alone."""
    layout = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "1.1.0"):
        publish_bundle(
            bundles[version], registry=layout, mode=Trusted(adhoc_policy([keypair.public]))
        )
    assert main(["install", "iris@1.0.0", "--registry", str(layout.root)]) == 0
    newer = tmp_path / "newer.tar"
    assert main(["export", "iris@1.1.0", "--registry", str(layout.root), "-o", str(newer)]) == 0
    return layout, [tmp_path / "no-such-registry", newer]


def test_the_current_version_is_judged_without_the_registry(
    capsys: pytest.CaptureFixture[str],
    offline: tuple[LayoutRegistry, list[Path]],
    home: Path,
    trust_file: Path,
) -> None:
    _, registries = offline
    capsys.readouterr()
    for reg in registries:
        code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
        assert code == 0 and "iris@1.0.0 is already current" in err, err
    set_minimum(trust_file, "iris", "0.9.0")
    assert all(cli(capsys, "install", "iris@1.0.0", "--registry", r)[0] == 0 for r in registries)

    revoke_key(trust_file, "builder")
    for reg in registries:
        code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
        assert code == 3 and NO_LONGER in err and "revoked key 'builder'" in err, err
    store = Store(home)
    assert store.current_version("iris") == "1.0.0"
    last = store.audit_log("iris")[-1]
    assert (last.action, last.outcome) == ("install", "refused")
    assert "revoked key 'builder'" in last.detail


def test_required_approvals_need_the_registry(
    capsys: pytest.CaptureFixture[str],
    offline: tuple[LayoutRegistry, list[Path]],
    home: Path,
    trust_file: Path,
    tmp_path: Path,
) -> None:
    """Approvals live in the registry: with a rule requiring them, a registry that cannot
    be read or no longer has the version refuses (exit 4, audited); the version stays."""
    layout, registries = offline
    reviewer = make_keypair(tmp_path / "alice")
    add_key(trust_file, "alice", reviewer.pub_path, models=None, roles=["security-review"])
    approve(
        "iris@1.0.0", role="security-review", registry=layout, private_key=reviewer.private, now=T0
    )
    require_approvals(trust_file, "iris*", ["security-review"])
    capsys.readouterr()
    assert cli(capsys, "install", "iris@1.0.0", "--registry", layout.root)[0] == 0
    store = Store(home)
    for reg in registries:
        code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
        assert code == 4 and "iris@1.0.0, the version current here, cannot be checked" in err, err
        assert "approvals are read from the registry" in err
        last = store.audit_log("iris")[-1]
        assert (last.action, last.outcome) == ("install", "refused")
    assert store.current_version("iris") == "1.0.0"


def test_update_records_the_channel_and_audits_the_same_refusal_once(
    registry: MemoryRegistry, home: Path, trust_file: Path, other_keypair: KeyPair
) -> None:
    assert do_install("iris@stable", registry, home, []).version == "1.0.0"
    store = Store(home)
    revoke_key(trust_file, "builder")

    def refusals() -> list[str]:
        return [
            e.detail
            for e in store.audit_log("iris")
            if (e.action, e.outcome) == ("channel", "refused")
        ]

    for _ in range(3):
        assert do_update(registry, home).exit_code == 3
    assert len(refusals()) == 1 and NO_LONGER in refusals()[0]
    (shown,) = status(store, now=T0 + 3 * HOUR).models
    assert shown.last_refusal is not None and NO_LONGER in shown.last_refusal.detail

    # A newer document naming the same version is recorded (the replay floor rises)
    # though the version is refused, and that refusal is audited after it.
    promote(
        "iris@1.0.0",
        channel="stable",
        registry=registry,
        private_key=other_keypair.private,
        now=T0 + HOUR,
    )
    assert do_update(registry, home).exit_code == 3
    seen = store.channel_seen("iris", "stable")
    assert seen is not None and seen.sequence == 2
    assert len(refusals()) == 2
    accepted = [e for e in store.audit_log("iris") if "stable sequence 2" in e.detail]
    assert [(e.action, e.outcome) for e in accepted] == [("channel", "ok")]
