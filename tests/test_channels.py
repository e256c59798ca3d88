"""Channels end to end: promote, install NAME@CHANNEL, update; and every refusal a hostile
registry can provoke (freeze, replay, equivocation, mix-and-match, an untrusted signer),
with fixed clocks through the library and a few real CLI runs for the exit codes."""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from packager._io.keys import encode_public_key
from packager.core.channel import ARTIFACT_TYPE, MAX_CHANNEL_BYTES, Channel, Seen, sign_channel
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, parse_manifest
from packager.core.names import Target, parse_target
from packager.core.policy import Rule, Trusted, TrustedKey, TrustPolicy, Unverified, adhoc_policy
from packager.distribution.mirror import export, mirror
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.distribution.pull import pull
from packager.errors import (
    ExpiredError,
    IncompatibleModelError,
    NotFoundError,
    PackagerError,
    RegistryError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
    WrongModelError,
)
from packager.instance.install import InstallOptions, install, rollback
from packager.instance.store import Following, Store
from packager.instance.update import Updated, UpdateReport, update
from packager.registry import ArchiveRegistry, LayoutRegistry, open_registry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.base import Registry, RegistryReader
from packager.registry.memory import MemoryRegistry

from .conftest import KeyPair, cli, immutable
from .hostile import serve_bundle_dir

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
TAG = "channel.stable"


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    return registry


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


@pytest.fixture
def trust(keypair: KeyPair) -> TrustPolicy:
    return adhoc_policy([keypair.public])


def manifest_digest(bundle: Path) -> Digest:
    return Digest.of((bundle / MANIFEST).read_bytes())


def install_channel(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, now: datetime
) -> str:
    result = install(
        "iris@stable",
        registry=registry,
        store=store,
        now=now,
        options=InstallOptions(verify=Trusted(trust), registry_ref=str(registry.root)),
    )
    return result.version


def run_update(store: Store, trust: TrustPolicy, now: datetime, home: Path) -> UpdateReport:
    return update(
        store=store,
        now=now,
        open_registry=lambda ref: open_registry(ref, home=home),
        options=InstallOptions(verify=Trusted(trust)),
    )


def channel_log(store: Store, name: str = "iris") -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in store.audit_log(name) if e.action == "channel"]


def craft(
    keypair: KeyPair,
    *,
    version: str,
    digest: Digest,
    sequence: int,
    issued: datetime = T0,
    expires: datetime = T0 + 30 * DAY,
) -> bytes:
    """A validly signed channel document saying whatever the test needs."""
    doc = Channel("iris", "stable", version, digest, issued, expires, sequence)
    return sign_channel(doc, private_key=keypair.private)


def put_channel(registry: Registry, data: bytes) -> None:
    registry.put_document("iris", TAG, data, artifact_type=ARTIFACT_TYPE)


def state(store: Store) -> tuple[str | None, Seen | None, list[Following]]:
    return store.current_version("iris"), store.channel_seen("iris", "stable"), store.following()


# -- the happy path ---------------------------------------------------------------------------


def test_promote_install_promote_update(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    first = promote(
        "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0
    )
    doc = first.channel
    assert (doc.version, doc.sequence, doc.issued, doc.expires) == ("1.1.0", 1, T0, T0 + 30 * DAY)
    assert doc.manifest_digest == manifest_digest(bundles["1.1.0"])
    assert first.signed_by_promoter and first.registry == str(registry.root)
    assert registry.versions("iris") == ["1.0.0", "1.1.0", "2.0.0"]

    assert install_channel(registry, store, trust, T0 + HOUR) == "1.1.0"
    assert state(store) == (
        "1.1.0",
        Seen(1, "1.1.0", doc.manifest_digest),
        [Following("iris", "stable", str(registry.root))],
    )

    report = run_update(store, trust, T0 + 2 * HOUR, home)
    assert [(m.status, m.version) for m in report.models] == [("current", "1.1.0")]
    assert report.exit_code == 0

    second = promote(
        "iris@2.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0 + DAY
    )
    assert second.channel.sequence == 2
    report = run_update(store, trust, T0 + DAY + HOUR, home)
    assert [(m.status, m.previous, m.version) for m in report.models] == [
        ("updated", "1.1.0", "2.0.0")
    ]
    assert report.exit_code == 0
    current, seen, following = state(store)
    assert (current, seen) == ("2.0.0", Seen(2, "2.0.0", manifest_digest(bundles["2.0.0"])))
    assert following == [Following("iris", "stable", str(registry.root))]

    # One "channel ok" line per promotion seen, not one per update run.
    log = channel_log(store)
    assert [outcome for outcome, _ in log] == ["ok", "ok"]
    assert "stable sequence 1: 1.1.0" in log[0][1] and "stable sequence 2: 2.0.0" in log[1][1]
    installs = [e.detail for e in store.audit_log("iris") if e.action == "install"]
    assert installs[-1].endswith("channel stable sequence 2")


def test_a_new_promotion_of_the_current_version_is_recorded_without_installing(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair, home: Path
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    install_channel(registry, store, trust, T0 + HOUR)
    # Promoting the same version again only moves the expiry on.
    promote(
        "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0 + DAY
    )
    report = run_update(store, trust, T0 + DAY + HOUR, home)
    assert [(m.status, m.version) for m in report.models] == [("current", "1.1.0")]
    assert store.channel_seen("iris", "stable") == Seen(
        2, "1.1.0", store.manifest_digest("iris", "1.1.0")
    )
    assert [e.action for e in store.audit_log("iris")] == ["channel", "install", "channel"]


def test_installing_by_version_or_rolling_back_stops_following(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair, home: Path
) -> None:
    promote("iris@1.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    install_channel(registry, store, trust, T0 + HOUR)
    install(
        "iris@1.1.0",
        registry=registry,
        store=store,
        now=T0 + HOUR,
        options=InstallOptions(verify=Trusted(trust)),
    )
    assert store.following() == []
    assert run_update(store, trust, T0 + 2 * HOUR, home).models == ()
    assert store.current_version("iris") == "1.1.0"

    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + HOUR,
    )
    assert install_channel(registry, store, trust, T0 + 3 * HOUR) == "2.0.0"
    # Following would undo the rollback at the next update.
    assert rollback("iris", store=store, now=T0 + 3 * HOUR).version == "1.1.0"
    assert store.following() == []
    assert run_update(store, trust, T0 + 4 * HOUR, home).models == ()
    assert [outcome for outcome, _ in channel_log(store)] == ["ok", "unfollow", "ok", "unfollow"]


def test_parse_target() -> None:
    assert parse_target("iris@stable").channel == "stable"
    assert parse_target("iris@1.2.0").version == "1.2.0"
    assert parse_target("iris") == Target("iris")
    for bad in ("iris@Stable", "iris@1.2", "iris@", "Iris@stable"):
        with pytest.raises(UsageError):
            parse_target(bad)


# -- refusals ----------------------------------------------------------------------------------


def test_an_expired_channel_is_refused_and_nothing_changes(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair, home: Path
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    install_channel(registry, store, trust, T0 + HOUR)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + DAY,
        expires_in=DAY,
    )
    before = state(store)
    report = run_update(store, trust, T0 + 2 * DAY, home)
    [refused] = report.models
    assert refused.status == "refused" and isinstance(refused.error, ExpiredError)
    assert report.exit_code == 3
    assert state(store) == before
    assert channel_log(store)[-1][0] == "refused"
    assert "ExpiredError" in channel_log(store)[-1][1]
    with pytest.raises(ExpiredError, match="expired"):
        install_channel(registry, store, trust, T0 + 2 * DAY)
    # Refused from the second it expires on; accepted a second before.
    assert install_channel(registry, store, trust, T0 + 2 * DAY - timedelta(seconds=1)) == "2.0.0"


def test_a_replayed_older_document_is_refused_as_a_rollback(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    old = registry.get_document(
        "iris", TAG, artifact_type=ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES
    )
    install_channel(registry, store, trust, T0 + HOUR)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + HOUR,
    )
    assert run_update(store, trust, T0 + 2 * HOUR, home).exit_code == 0
    seen = store.channel_seen("iris", "stable")

    put_channel(registry, old)  # the registry replays sequence 1, still unexpired
    report = run_update(store, trust, T0 + 3 * HOUR, home)
    assert isinstance(report.models[0].error, RollbackError)
    with pytest.raises(RollbackError, match="replaying"):
        install_channel(registry, store, trust, T0 + 3 * HOUR)
    assert (store.current_version("iris"), store.channel_seen("iris", "stable")) == ("2.0.0", seen)
    assert "RollbackError" in channel_log(store)[-1][1]

    # The same sequence naming another bundle: two signed documents for one sequence.
    put_channel(
        registry,
        craft(keypair, version="1.1.0", digest=manifest_digest(bundles["1.1.0"]), sequence=2),
    )
    with pytest.raises(TamperedError, match="two different"):
        install_channel(registry, store, trust, T0 + 3 * HOUR)
    assert store.current_version("iris") == "2.0.0"


def test_the_rollback_floor_still_applies(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair
) -> None:
    promote("iris@2.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    install_channel(registry, store, trust, T0 + HOUR)
    promote(
        "iris@1.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + HOUR,
    )
    with pytest.raises(RollbackError, match="rollback floor"):
        install_channel(registry, store, trust, T0 + 2 * HOUR)
    assert store.current_version("iris") == "2.0.0"
    assert store.channel_seen("iris", "stable") == Seen(
        1, "2.0.0", store.manifest_digest("iris", "2.0.0")
    )


def test_mix_and_match_version_with_another_versions_digest(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    put_channel(
        registry,
        craft(keypair, version="1.1.0", digest=manifest_digest(bundles["2.0.0"]), sequence=1),
    )
    with pytest.raises(TamperedError, match="mix-and-match"):
        install_channel(registry, store, trust, T0 + HOUR)
    assert state(store) == (None, None, [])
    assert not (store.models / "iris").exists()
    assert "mix-and-match" in channel_log(store)[-1][1]


def test_mix_and_match_tag_pointing_at_other_content(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    # The registry now serves 2.0.0's validly signed files under the tag 1.1.0.
    serve_bundle_dir(registry.root, bundles["2.0.0"], name="iris", tag="1.1.0")
    with pytest.raises(TamperedError, match="mix-and-match"):
        install_channel(registry, store, trust, T0 + HOUR)
    assert state(store) == (None, None, [])


def test_a_channel_pulled_by_version_is_the_bundle_the_document_names(
    memory_registry: MemoryRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    """What `benchmark --baseline iris@stable` fetches: the channel read, then the version
    by its tag; a tag moved in between (here, to another validly signed build of the same
    version) is refused, not measured."""
    from packager.build.api import package

    mode = Trusted(adhoc_policy([keypair.public]))
    empty = memory_registry.snapshot()
    rebuilt = package(iris_model, sample=iris[0][::7], name="iris", version="1.0.0",
                      key=keypair.private, out_dir=tmp_path / "rebuilt")  # fmt: skip
    publish_bundle(rebuilt, registry=memory_registry, mode=mode)
    moved = memory_registry.resolve("iris", "1.0.0")
    memory_registry.roll_back(empty)
    publish_bundle(bundles["1.0.0"], registry=memory_registry, mode=mode)
    promote("iris@1.0.0", channel="stable", registry=memory_registry,
            private_key=keypair.private, now=T0)  # fmt: skip
    pull_stable = functools.partial(pull, "iris@stable", registry=memory_registry, mode=mode,
                             now=T0 + HOUR)  # fmt: skip
    pulled = pull_stable(out_dir=tmp_path / "first")
    assert manifest_digest(pulled) == manifest_digest(bundles["1.0.0"])

    entry = {"digest": str(moved.manifest_digest), "size": len(moved.oci_manifest)}
    memory_registry.set_tag("iris", "1.0.0", {"mediaType": OCI_MANIFEST_MEDIA_TYPE, **entry})
    assert memory_registry.resolve("iris", "1.0.0").manifest_digest == moved.manifest_digest
    with pytest.raises(TamperedError, match="mix-and-match") as refused:
        pull_stable(out_dir=tmp_path / "second")
    assert refused.value.exit_code == 3
    assert list((tmp_path / "second").iterdir()) == []


def test_a_signer_the_policy_does_not_allow_for_the_model_is_refused(
    registry: LayoutRegistry, store: Store, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    def key(name: str, pair: KeyPair) -> TrustedKey:
        return TrustedKey(name, encode_public_key(pair.public), pair.public)

    # The other key is trusted, but only for spam-* models.
    policy = TrustPolicy(
        {"publisher": key("publisher", keypair), "spam-team": key("spam-team", other_keypair)},
        (Rule("iris", ("publisher",)), Rule("spam-*", ("spam-team",))),
    )
    messages: list[str] = []
    promotion = promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=other_keypair.private,
        now=T0,
        progress=messages.append,
    )
    assert not promotion.signed_by_promoter
    assert any("does not verify with the promoting key" in m for m in messages)
    with pytest.raises(UntrustedError, match="not one of the trusted keys"):
        install_channel(registry, store, policy, T0 + HOUR)
    assert state(store) == (None, None, [])
    # A model no rule covers has no trusted key at all.
    with pytest.raises(UntrustedError, match="no rule covers"):
        install(
            "other@stable",
            registry=registry,
            store=store,
            now=T0,
            options=InstallOptions(verify=Trusted(policy)),
        )


def test_channels_need_a_trust_policy(registry: LayoutRegistry, store: Store) -> None:
    with pytest.raises(UsageError, match="channel"):
        install(
            "iris@stable",
            registry=registry,
            store=store,
            now=T0,
            options=InstallOptions(verify=Unverified("--insecure-skip-verify")),
        )


def test_a_missing_channel_says_how_to_promote(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy
) -> None:
    with pytest.raises(NotFoundError, match="packager promote iris@VERSION --channel stable"):
        install_channel(registry, store, trust, T0)


def test_credentials_are_never_recorded(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    with pytest.raises(UsageError, match="no credentials"):
        install(
            "iris@stable",
            registry=registry,
            store=store,
            now=T0 + HOUR,
            options=InstallOptions(
                verify=Trusted(trust), registry_ref="https://alice:secret@mirror.example/models"
            ),
        )
    for state_file in store.home.glob("state.db*"):  # the WAL too
        assert b"secret" not in state_file.read_bytes()


# -- promote ---------------------------------------------------------------------------------


def test_promote_sequences(
    registry: LayoutRegistry, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    def run(pair: KeyPair, sequence: int | None = None, version: str = "1.1.0") -> int:
        promotion = promote(
            f"iris@{version}",
            channel="stable",
            registry=registry,
            private_key=pair.private,
            now=T0,
            sequence=sequence,
        )
        return promotion.channel.sequence

    assert run(keypair) == 1
    assert run(keypair) == 2
    # Another key cannot read the sequence it would have to follow.
    with pytest.raises(UntrustedError, match="--sequence"):
        run(other_keypair)
    assert run(other_keypair, sequence=7) == 7
    # The key that verifies the current document cannot go back below it.
    with pytest.raises(UsageError, match="not above 7"):
        run(other_keypair, sequence=7)
    with pytest.raises(NotFoundError):
        run(keypair, version="9.9.9")
    with pytest.raises(UsageError, match="exact version"):
        promote("iris", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    with pytest.raises(UsageError):
        promote(
            "iris@1.1.0",
            channel="stable",
            registry=registry,
            private_key=keypair.private,
            now=T0,
            expires_in=timedelta(0),
        )


def test_promote_refuses_a_manifest_that_is_not_the_signed_one(
    registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair, tmp_path: Path
) -> None:
    bundle = tmp_path / "evil" / bundles["1.1.0"].name
    shutil.copytree(bundles["1.1.0"], bundle)
    (bundle / MANIFEST).chmod(0o644)
    manifest = parse_manifest((bundle / MANIFEST).read_bytes())
    (bundle / MANIFEST).write_bytes(replace(manifest, description="not what was signed").to_bytes())
    serve_bundle_dir(registry.root, bundle, name="iris", tag="1.1.0")
    with pytest.raises(VerificationError):
        promote(
            "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0
        )
    with pytest.raises(NotFoundError):
        registry.get_document("iris", TAG, artifact_type=ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES)


def test_promote_refuses_another_version_served_under_the_tag(
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> None:
    """Signed by the promoting key or not, a bundle of 2.0.0 tagged 1.1.0 is not promoted."""
    serve_bundle_dir(registry.root, bundles["2.0.0"], name="iris", tag="1.1.0")
    for key, kind in ((keypair, "signed"), (other_keypair, "unverified")):
        with pytest.raises(WrongModelError, match=f"the {kind} bundle is iris@2.0.0; .* version"):
            promote(
                "iris@1.1.0", channel="stable", registry=registry, private_key=key.private, now=T0
            )
    with pytest.raises(NotFoundError):
        registry.get_document("iris", TAG, artifact_type=ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES)


# -- update ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aster(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[object, object],
    keypair: KeyPair,
) -> Path:
    """The same pipeline packaged as another model, "aster" 1.0.0 (sorted before iris)."""
    from packager.build.api import package

    X, _ = iris
    out = tmp_path_factory.mktemp("aster")
    return package(
        iris_model,
        sample=X[::5],  # type: ignore[index]
        name="aster",
        version="1.0.0",
        key=keypair.private,
        out_dir=out,
    )


def follow_two_models(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    aster: Path,
    tmp_path: Path,
) -> LayoutRegistry:
    """aster follows stable in a registry of its own (returned), iris follows stable in
    ``registry``; iris's channel then names 2.0.0, so an update has work to do."""
    elsewhere = LayoutRegistry(tmp_path / "aster-registry")
    publish_bundle(aster, registry=elsewhere, mode=Trusted(adhoc_policy([keypair.public])))
    promote(
        "aster@1.0.0", channel="stable", registry=elsewhere, private_key=keypair.private, now=T0
    )
    install(
        "aster@stable",
        registry=elsewhere,
        store=store,
        now=T0,
        options=InstallOptions(verify=Trusted(trust), registry_ref=str(elsewhere.root)),
    )
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    install_channel(registry, store, trust, T0)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=T0 + HOUR,
    )
    return elsewhere


def test_update_continues_past_a_failing_model(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    aster: Path,
    tmp_path: Path,
    home: Path,
) -> None:
    elsewhere = follow_two_models(registry, store, trust, keypair, aster, tmp_path)
    shutil.rmtree(elsewhere.root)  # aster's registry is gone

    report = run_update(store, trust, T0 + 2 * HOUR, home)
    assert [(m.name, m.status) for m in report.models] == [
        ("aster", "refused"),
        ("iris", "updated"),
    ]
    assert isinstance(report.models[0].error, NotFoundError)
    assert report.exit_code == 4
    assert store.current_version("iris") == "2.0.0"
    assert store.current_version("aster") == "1.0.0"
    assert channel_log(store, "aster")[-1][0] == "refused"


def test_an_update_killed_halfway_has_recorded_the_models_it_finished(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    aster: Path,
    tmp_path: Path,
    home: Path,
) -> None:
    """aster is done, then the process stops while iris is read (as a SIGKILL would stop
    it): status still shows aster's update."""
    follow_two_models(registry, store, trust, keypair, aster, tmp_path)

    def killed_at_iris(ref: str | None) -> RegistryReader:
        if ref == str(registry.root):
            raise KeyboardInterrupt
        return open_registry(ref, home=home)

    with pytest.raises(KeyboardInterrupt):
        update(
            store=store,
            now=T0 + 2 * HOUR,
            open_registry=killed_at_iris,
            options=InstallOptions(verify=Trusted(trust)),
        )
    attempts = store.attempts()
    assert list(attempts) == ["aster"]
    assert (attempts["aster"].outcome, attempts["aster"].exit_code) == ("current", 0)
    assert attempts["aster"].at == T0 + 2 * HOUR


def test_a_retention_that_fails_after_an_update_keeps_the_other_models_failures(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    aster: Path,
    tmp_path: Path,
    home: Path,
) -> None:
    options = InstallOptions(verify=Trusted(trust))
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=options)
    elsewhere = follow_two_models(registry, store, trust, keypair, aster, tmp_path)
    shutil.rmtree(elsewhere.root)  # aster's registry is gone: exit 4
    (home / "config.toml").write_text("[retention]\nkeep = 1\n")
    # After 2.0.0, retention would remove 1.0.0, which cannot go.
    with immutable(home / "models" / "iris" / "1.0.0"):
        code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 4
    assert "updated  iris@stable  1.1.0 -> 2.0.0" in out
    assert "WARNING: iris: old versions not pruned (" in err
    assert "1 of 2 models not updated: aster@stable:" in err
    assert store.current_version("iris") == "2.0.0"


def test_update_reports_the_most_important_failure() -> None:
    def refused(error: PackagerError) -> Updated:
        return Updated("m", "stable", None, "refused", error=error)

    ok = Updated("m", "stable", None, "current", "1.0.0")
    assert UpdateReport((ok,)).exit_code == 0
    assert UpdateReport((refused(RegistryError("x")), refused(ExpiredError("x")))).exit_code == 3
    failures = (refused(RegistryError("x")), refused(IncompatibleModelError("x")), ok)
    assert UpdateReport(failures).exit_code == 5
    assert UpdateReport((refused(UsageError("x")), refused(RegistryError("x")))).exit_code == 4


# -- mirror and export carry channels ---------------------------------------------------------


def test_mirror_carries_verified_channels_and_keeps_newer_ones(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    carried = ArchiveRegistry(tmp_path / "carry.tar")
    report = mirror(registry, carried, mode=Trusted(adhoc_policy([keypair.public])))
    assert [(c.channel, c.outcome) for c in report.channels] == [("stable", "copied")]
    target = LayoutRegistry(tmp_path / "air-gapped")
    report = mirror(carried, target, ["iris@1.1.0"], mode=Trusted(adhoc_policy([keypair.public])))
    assert [(c.channel, c.outcome) for c in report.channels] == [("stable", "copied")]
    assert install_channel(target, store, trust, T0 + HOUR) == "1.1.0"

    # Again: identical, skipped. A newer promotion in the destination is kept.
    assert (
        mirror(registry, target, mode=Trusted(adhoc_policy([keypair.public]))).channels[0].outcome
        == "skipped"
    )
    promote("iris@2.0.0", channel="stable", registry=target, private_key=keypair.private, now=T0)
    report = mirror(registry, target, mode=Trusted(adhoc_policy([keypair.public])))
    assert [(c.outcome, c.detail) for c in report.channels] == [
        ("skipped", "the destination has the newer sequence 2")
    ]

    # A channel naming a version the destination does not get is not copied.
    partial = LayoutRegistry(tmp_path / "partial")
    report = mirror(registry, partial, ["iris@1.0.0"], mode=Trusted(adhoc_policy([keypair.public])))
    assert report.channels[0].outcome == "skipped"
    with pytest.raises(NotFoundError):
        partial.get_document("iris", TAG, artifact_type=ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES)

    # A channel the keys do not verify stops the mirror like a tampered version.
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=other_keypair.private,
        now=T0,
        sequence=5,
    )
    with pytest.raises(UntrustedError):
        mirror(
            registry,
            LayoutRegistry(tmp_path / "fresh"),
            mode=Trusted(adhoc_policy([keypair.public])),
        )


def test_mirror_without_verifying_copies_only_where_there_is_none(
    registry: LayoutRegistry, keypair: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    target = LayoutRegistry(tmp_path / "target")
    report = mirror(registry, target, mode=Unverified("--no-verify"))
    assert report.channels[0].outcome == "copied"
    promote("iris@2.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    report = mirror(registry, target, mode=Unverified("--no-verify"))
    assert report.channels[0].outcome == "conflict"
    code, out, err = cli(capsys, "mirror", registry.root, target.root, "--no-verify")
    assert code == 4, err
    assert "conflict  iris@stable" in out


def test_export_then_install_from_the_archive(
    registry: LayoutRegistry, store: Store, trust: TrustPolicy, keypair: KeyPair, tmp_path: Path
) -> None:
    promote("iris@2.0.0", channel="stable", registry=registry, private_key=keypair.private, now=T0)
    out = tmp_path / "models.tar"
    export(["iris@2.0.0"], registry=registry, out=out)
    archive = ArchiveRegistry(out)
    result = install(
        "iris@stable",
        registry=archive,
        store=store,
        now=T0,
        options=InstallOptions(verify=Trusted(trust), registry_ref=str(out)),
    )
    assert result.version == "2.0.0"
    assert store.following() == [Following("iris", "stable", str(out))]


# -- the command line --------------------------------------------------------------------------


def test_cli_promote_install_update_log(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    keypair: KeyPair,
    home: Path,
) -> None:
    reg = registry.root
    code, out, err = cli(
        capsys,
        "promote",
        "iris@1.1.0",
        "--channel",
        "stable",
        "--key",
        keypair.key_path,
        "--registry",
        reg,
        "--expires",
        "2w",
        "--json",
    )
    assert code == 0, err
    promoted = json.loads(out)
    assert (promoted["version"], promoted["sequence"], promoted["signedByPromoter"]) == (
        "1.1.0",
        1,
        True,
    )
    issued = datetime.fromisoformat(promoted["issued"])
    assert datetime.fromisoformat(promoted["expires"]) - issued == timedelta(weeks=2)

    code, out, err = cli(
        capsys, "install", "iris@stable", "--registry", reg, "--key", keypair.pub_path, "--json"
    )
    assert code == 0, err
    installed = json.loads(out)
    assert installed["version"] == "1.1.0" and installed["installed"]
    assert installed["channel"]["sequence"] == 1

    code, out, err = cli(
        capsys,
        "promote",
        "iris@2.0.0",
        "--channel",
        "stable",
        "--key",
        keypair.key_path,
        "--registry",
        reg,
    )
    assert code == 0, err
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path, "--json")
    assert code == 0, err
    assert [(m["status"], m["version"]) for m in json.loads(out)["models"]] == [
        ("updated", "2.0.0")
    ]
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 0, err
    assert out.startswith("current  iris@stable  2.0.0")

    code, out, err = cli(capsys, "log", "iris")
    assert code == 0, err
    assert [line.split()[1:3] for line in out.splitlines() if line.split()[1] == "channel"] == [
        ["channel", "ok"],
        ["channel", "ok"],
    ]


@pytest.mark.parametrize("expires", ["99999999999999999999d", "3000000d", "3651d", "522w"])
def test_promote_refuses_an_expiry_past_ten_years(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    keypair: KeyPair,
    expires: str,
) -> None:
    args = ["promote", "iris@1.1.0", "--channel", "stable", "--key", keypair.key_path]
    code, _, err = cli(capsys, *args, "--registry", registry.root, "--expires", expires)
    assert code == 2
    assert err == f"packager: error: duration {expires!r} is too long: at most 3650d\n"
    assert not [t for t in registry.tags("iris") if t.startswith("channel.")]


def test_promote_takes_an_expiry_of_ten_years(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair
) -> None:
    args = ["promote", "iris@1.1.0", "--channel", "stable", "--key", keypair.key_path]
    code, out, err = cli(capsys, *args, "--registry", registry.root, "--expires", "3650d", "--json")
    assert code == 0, err
    promoted = json.loads(out)
    issued = datetime.fromisoformat(promoted["issued"])
    assert datetime.fromisoformat(promoted["expires"]) - issued == timedelta(days=3650)


def test_cli_exit_codes_for_an_expired_channel_and_a_failing_update(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
) -> None:
    past = datetime.now(UTC) - 40 * DAY
    promote(
        "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=past
    )
    code, _, err = cli(
        capsys, "install", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path
    )
    assert code == 3
    assert "expired" in err
    assert not (store.models / "iris").exists()

    recent = datetime.now(UTC) - HOUR
    promote(
        "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private, now=recent
    )
    install_channel(registry, store, trust, recent + timedelta(minutes=1))
    shutil.rmtree(registry.root)
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 4
    assert out.startswith("refused  iris@stable")
    assert "1 of 1 models not updated: iris@stable:" in err
    code, _, err = cli(capsys, "install", "iris@Stable", "--key", keypair.pub_path)
    assert code == 2


class BrokenRegistry(LayoutRegistry):
    """A registry whose backend fails in a way no packager error describes (a bug or a
    hostile server tripping one): every channel document read raises."""

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        raise RuntimeError(f"backend exploded reading {name}:{tag}")


def test_update_continues_past_a_registry_that_breaks_in_any_way(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    keypair: KeyPair,
    aster: Path,
    tmp_path: Path,
    home: Path,
) -> None:
    elsewhere = follow_two_models(registry, store, trust, keypair, aster, tmp_path)
    broken = BrokenRegistry(elsewhere.root)

    report = update(
        store=store,
        now=T0 + 2 * HOUR,
        open_registry=lambda ref: (
            broken if ref == str(elsewhere.root) else open_registry(ref, home=home)
        ),
        options=InstallOptions(verify=Trusted(trust)),
    )
    assert [(m.name, m.status) for m in report.models] == [
        ("aster", "refused"),
        ("iris", "updated"),
    ]
    error = report.models[0].error
    assert isinstance(error, RegistryError) and "RuntimeError: backend exploded" in str(error)
    assert report.exit_code == 4
    assert store.current_version("iris") == "2.0.0"
    assert store.current_version("aster") == "1.0.0"
    outcome, detail = channel_log(store, "aster")[-1]
    assert outcome == "refused" and "backend exploded" in detail
    assert not [p for p in store.tmp.rglob("*") if p.is_file()], "staging left behind"


def replay_after_install(
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    """The instance installs iris@stable at sequence 2 (2.0.0); the registry then replays
    sequence 1 (1.1.0), still unexpired."""
    old = craft(keypair, version="1.1.0", digest=manifest_digest(bundles["1.1.0"]), sequence=1)
    put_channel(
        registry,
        craft(keypair, version="2.0.0", digest=manifest_digest(bundles["2.0.0"]), sequence=2),
    )
    assert install_channel(registry, store, trust, T0 + HOUR) == "2.0.0"
    put_channel(registry, old)


def test_benchmark_through_a_channel_refuses_a_document_older_than_the_instance_saw(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
    tmp_path: Path,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    """`benchmark NAME@CHANNEL --registry` (and `--baseline NAME@CHANNEL`) holds the channel
    to the last document the instance accepted, as install does."""
    replay_after_install(registry, store, trust, bundles, keypair)
    rows = iris[0][:20]
    data = tmp_path / "rows.csv"
    data.write_text("a,b,c,d\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    remote = ("--registry", registry.root, "--key", keypair.pub_path, "--data", data)
    remote += ("--time-budget", "0.1")
    for refs in (("iris@stable",), (bundles["1.0.0"], "--baseline", "iris@stable")):
        code, _, err = cli(capsys, "benchmark", *refs, *remote)
        assert code == 3, err
        assert "replaying" in err and "Traceback" not in err


def test_pull_through_a_channel_takes_the_version_it_names_and_refuses_a_replay(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    store: Store,
    trust: TrustPolicy,
    bundles: dict[str, Path],
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    """`packager pull NAME@CHANNEL` writes the bundle the channel names, held to the last
    document the instance accepted, as install is."""
    put_channel(
        registry,
        craft(keypair, version="1.1.0", digest=manifest_digest(bundles["1.1.0"]), sequence=1),
    )
    pull = ("pull", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path)
    code, out, err = cli(capsys, *pull, "-o", tmp_path / "first")
    assert code == 0, err
    assert "iris-1.1.0" in out
    assert manifest_digest(tmp_path / "first" / "iris-1.1.0") == manifest_digest(bundles["1.1.0"])

    replay_after_install(registry, store, trust, bundles, keypair)
    code, _, err = cli(capsys, *pull, "-o", tmp_path / "second")
    assert code == 3, err
    assert "replaying" in err and "Traceback" not in err
    assert not (tmp_path / "second").exists() or not any((tmp_path / "second").iterdir())
