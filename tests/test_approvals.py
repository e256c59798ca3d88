"""Review before release, end to end: a security-related model cannot be installed until
security and legal have approved those exact bytes; every attack on approvals is refused
with exit 3 and audited; `packager log --json` says who approved what runs here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packager.core.approval import APPROVAL_KIND, MAX_APPROVAL_BYTES
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.approve import approve, revoke_approvals
from packager.distribution.mirror import export
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import UntrustedError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.instance.trust import add_key, read_policy, require_approvals, revoke_key
from packager.instance.update import update
from packager.registry import ArchiveRegistry, LayoutRegistry, open_registry
from packager.registry.attachments import put_attachment, read_attachments

from .conftest import KeyPair, cli, make_keypair

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def reviewers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    return {n: make_keypair(tmp_path_factory.mktemp(n)) for n in ("alice", "bob", "carol")}


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    return registry


@pytest.fixture
def trust_file(home: Path, keypair: KeyPair, reviewers: dict[str, KeyPair]) -> Path:
    """The builder's key signs; alice reviews security, bob and carol legal; iris needs
    one approval of each."""
    path = home / "trust.toml"
    add_key(path, "builder", keypair.pub_path)
    add_key(path, "alice", reviewers["alice"].pub_path, models=None, roles=["security-review"])
    for name in ("bob", "carol"):
        add_key(path, name, reviewers[name].pub_path, models=None, roles=["legal"])
    require_approvals(path, "iris*", ["security-review", "legal=1"])
    return path


def do_install(
    registry: LayoutRegistry | ArchiveRegistry,
    home: Path,
    trust_file: Path,
    *,
    now: datetime = T0,
) -> str:
    return install(
        "iris@1.0.0",
        registry=registry,
        store=Store(home),
        now=now,
        options=InstallOptions(verify=Trusted(read_policy(trust_file))),
    ).version


def sign_off(registry: LayoutRegistry, reviewer: KeyPair, role: str, **kw: object) -> None:
    approve(
        kw.pop("ref", "iris@1.0.0"),  # type: ignore[arg-type]
        role=role,
        registry=registry,
        private_key=reviewer.private,
        now=kw.pop("now", T0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def approval_log(home: Path) -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in Store(home).audit_log("iris") if e.action == "approval"]


def test_install_waits_for_every_required_approval_and_audits_each(
    registry: LayoutRegistry, home: Path, trust_file: Path, reviewers: dict[str, KeyPair]
) -> None:
    with pytest.raises(UntrustedError, match="1 more legal, 1 more security-review"):
        do_install(registry, home, trust_file)
    assert approval_log(home) == [
        ("missing", "role legal, key -: 1 more approval(s) required"),
        ("missing", "role security-review, key -: 1 more approval(s) required"),
    ]
    assert Store(home).current_version("iris") is None

    sign_off(registry, reviewers["alice"], "security-review", note="threat model ok")
    with pytest.raises(UntrustedError, match="1 more legal") as refused:
        do_install(registry, home, trust_file)
    assert "security-review" not in str(refused.value).split("requires:")[1].split("(")[0]

    sign_off(registry, reviewers["bob"], "legal", expires_in=90 * DAY)
    assert do_install(registry, home, trust_file) == "1.0.0"
    accepted = [d for outcome, d in approval_log(home) if outcome == "ok"]
    assert sorted({d.split(":")[0] for d in accepted}) == [
        "role legal, key bob",
        "role security-review, key alice",
    ]
    (legal,) = [d for d in accepted if d.startswith("role legal")]
    assert "expires 2027-02-25T12:00:00Z" in legal


def test_models_without_a_rule_need_no_approval(
    registry: LayoutRegistry, home: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    path = home / "trust.toml"
    add_key(path, "builder", keypair.pub_path)
    require_approvals(path, "security-*", ["security-review"])
    assert do_install(registry, home, path) == "1.0.0"
    assert approval_log(home) == []


def test_an_approval_of_another_version_is_not_replayed(
    registry: LayoutRegistry, home: Path, trust_file: Path, reviewers: dict[str, KeyPair]
) -> None:
    sign_off(registry, reviewers["alice"], "security-review")
    sign_off(registry, reviewers["bob"], "legal", ref="iris@1.1.0")
    # The registry attaches bob's 1.1.0 approval to 1.0.0 as well.
    other = registry.resolve("iris", "1.1.0")
    (replayed,) = read_attachments(registry, other, APPROVAL_KIND, max_size=MAX_APPROVAL_BYTES)
    put_attachment(registry, registry.resolve("iris", "1.0.0"), APPROVAL_KIND, replayed)
    with pytest.raises(UntrustedError, match="is for iris@1.1.0, not iris@1.0.0"):
        do_install(registry, home, trust_file)
    assert (
        "refused",
        "role legal, key bob: legal approval by key bob is for iris@1.1.0, not iris@1.0.0",
    ) in approval_log(home)


def test_expired_and_revoked_approvals_do_not_count(
    registry: LayoutRegistry, home: Path, trust_file: Path, reviewers: dict[str, KeyPair]
) -> None:
    sign_off(registry, reviewers["alice"], "security-review")
    sign_off(registry, reviewers["bob"], "legal", expires_in=DAY)
    with pytest.raises(UntrustedError, match="expired at 2026-11-28T12:00:00Z"):
        do_install(registry, home, trust_file, now=T0 + 2 * DAY)

    sign_off(registry, reviewers["carol"], "legal")
    revoke_approvals(
        "iris@1.0.0", registry=registry, private_key=reviewers["carol"].private, now=T0
    )
    with pytest.raises(UntrustedError, match="revoked by its signer"):
        do_install(registry, home, trust_file, now=T0 + 2 * DAY)
    with pytest.raises(UsageError, match="no legal approval"):
        revoke_approvals(
            "iris@1.0.0",
            registry=registry,
            private_key=reviewers["alice"].private,
            now=T0,
            role="legal",
        )

    # Within bob's expiry it installs; once the instance revokes bob's key it no longer
    # passes, even as the version already current (checked again, not installed again).
    assert do_install(registry, home, trust_file) == "1.0.0"
    with pytest.raises(UntrustedError, match="no longer passes.*expired at 2026-11-28T12"):
        do_install(registry, home, trust_file, now=T0 + 2 * DAY)
    revoke_key(trust_file, "bob")
    with pytest.raises(
        UntrustedError, match="legal approval by key bob was made with a revoked key"
    ):
        do_install(registry, home, trust_file)
    assert Store(home).current_version("iris") == "1.0.0"


def test_the_builder_key_cannot_approve_its_own_bundle(
    registry: LayoutRegistry,
    home: Path,
    trust_file: Path,
    keypair: KeyPair,
    reviewers: dict[str, KeyPair],
) -> None:
    with pytest.raises(UsageError, match="separation of duties"):
        sign_off(registry, keypair, "legal")
    # Even when the builder key holds the role and its approval is attached anyway.
    add_key(trust_file, "builder", keypair.pub_path, models=None, roles=["legal"])
    from packager.core.approval import Approval, sign_approval

    manifest = registry.resolve("iris", "1.0.0").files["manifest.json"].digest
    forged = sign_approval(
        Approval("iris", "1.0.0", manifest, "legal", T0), private_key=keypair.private
    )
    put_attachment(registry, registry.resolve("iris", "1.0.0"), APPROVAL_KIND, forged)
    sign_off(registry, reviewers["alice"], "security-review")
    with pytest.raises(UntrustedError, match="separation of duties"):
        do_install(registry, home, trust_file)


def test_approvals_travel_in_an_archive(
    registry: LayoutRegistry,
    home: Path,
    trust_file: Path,
    reviewers: dict[str, KeyPair],
    tmp_path: Path,
) -> None:
    sign_off(registry, reviewers["alice"], "security-review")
    sign_off(registry, reviewers["bob"], "legal")
    out = tmp_path / "models.tar"
    export(["iris@1.0.0"], registry=registry, out=out)
    assert do_install(ArchiveRegistry(out), home, trust_file) == "1.0.0"


def test_update_through_a_channel_needs_the_approvals_too(
    registry: LayoutRegistry,
    home: Path,
    trust_file: Path,
    keypair: KeyPair,
    reviewers: dict[str, KeyPair],
) -> None:
    sign_off(registry, reviewers["alice"], "security-review")
    sign_off(registry, reviewers["bob"], "legal")
    promote("iris@1.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    options = InstallOptions(
        verify=Trusted(read_policy(trust_file)), registry_ref=str(registry.root)
    )
    store = Store(home)
    assert (
        install("iris@stable", registry=registry, store=store, now=T0, options=options).version
        == "1.0.0"
    )

    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    report = update(
        store=store,
        now=T0 + DAY,
        open_registry=lambda ref: open_registry(ref, home=home),
        options=InstallOptions(verify=Trusted(read_policy(trust_file))),
    )
    assert report.exit_code == 3
    (refused,) = report.models
    assert "lacks the approvals" in str(refused.error)
    assert store.current_version("iris") == "1.0.0"

    # Without a trust policy there is nothing to require approvals: audited as insecure.
    unverified = InstallOptions(verify=Unverified("--insecure-skip-verify"))
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=unverified)
    assert result.version == "1.1.0"
    assert store.audit_log("iris")[-1].outcome == "insecure"


def test_review_before_release_through_the_cli(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    keypair: KeyPair,
    reviewers: dict[str, KeyPair],
) -> None:
    reg = str(registry.root)
    alice, bob, mallory = reviewers["alice"], reviewers["bob"], reviewers["carol"]
    assert cli(capsys, "trust", "add-key", "builder", keypair.pub_path)[0] == 0
    assert (
        cli(capsys, "trust", "add-key", "alice", alice.pub_path, "--role", "security-review")[0]
        == 0
    )
    assert cli(capsys, "trust", "add-key", "bob", bob.pub_path, "--role", "legal")[0] == 0
    assert cli(capsys, "trust", "add-key", "mallory", mallory.pub_path, "--role", "ops")[0] == 0
    assert cli(capsys, "trust", "require-approval", "iris", "security-review", "legal")[0] == 0
    code, out, _ = cli(capsys, "trust", "list", "--json")
    listed = json.loads(out)
    assert listed["approvals"] == [
        {"models": "iris", "require": {"legal": 1, "security-review": 1}}
    ]
    assert {k["name"]: k["roles"] for k in listed["keys"]}["alice"] == ["security-review"]
    # A reviewer key is not a signer: no rule lets it sign models.
    assert [r["keys"] for r in listed["rules"]] == [["builder"]]

    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
    assert code == 3 and "1 more legal, 1 more security-review" in err

    code, out, _ = cli(
        capsys,
        "approve",
        "iris@1.0.0",
        "--role",
        "security-review",
        "--key",
        alice.key_path,
        "--note",
        "threat model reviewed",
        "--expires",
        "90d",
        "--registry",
        reg,
        "--json",
    )
    assert code == 0
    approved = json.loads(out)
    assert approved["role"] == "security-review" and approved["note"] == "threat model reviewed"
    assert approved["tag"].startswith("sha256-") and ".approval." in approved["tag"]
    # mallory approves as legal without holding the role; the builder may not approve at all.
    assert (
        cli(
            capsys,
            "approve",
            "iris@1.0.0",
            "--role",
            "legal",
            "--key",
            mallory.key_path,
            "--registry",
            reg,
        )[0]
        == 0
    )
    code, _, err = cli(
        capsys,
        "approve",
        "iris@1.0.0",
        "--role",
        "legal",
        "--key",
        keypair.key_path,
        "--registry",
        reg,
    )
    assert code == 2 and "separation of duties" in err

    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
    assert code == 3 and "does not hold the role legal" in err and "1 more legal" in err

    assert (
        cli(
            capsys,
            "approve",
            "iris@1.0.0",
            "--role",
            "legal",
            "--key",
            bob.key_path,
            "--registry",
            reg,
        )[0]
        == 0
    )
    code, out, _ = cli(capsys, "search", "iris", "--attachments", "--registry", reg, "--json")
    versions = json.loads(out)["versions"]
    assert sorted(a["role"] for a in versions["1.0.0"]) == ["legal", "legal", "security-review"]
    assert versions["1.1.0"] == []
    code, out, err = cli(capsys, "search", "iris", "--attachments", "--registry", reg)
    assert "approval   security-review" in out and "not verified" in err

    assert cli(capsys, "install", "iris@1.0.0", "--registry", reg)[0] == 0
    code, out, _ = cli(capsys, "log", "iris", "--json")
    entries = json.loads(out)
    who = sorted(
        {
            e["detail"].split(":")[0]
            for e in entries
            if e["action"] == "approval" and e["outcome"] == "ok"
        }
    )
    assert who == ["role legal, key bob", "role security-review, key alice"]
    assert entries[-1]["action"] == "install" and entries[-1]["outcome"] == "ok"

    code, _, _ = cli(
        capsys, "revoke-approval", "iris@1.0.0", "--key", bob.key_path, "--registry", reg
    )
    assert code == 0
    # The version current no longer passes: installing it again is refused.
    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg)
    assert code == 3 and "revoked by its signer" in err
