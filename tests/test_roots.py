"""The root of trust on the instance, against a registry that lies (in memory): every TUF
attack on root and delegations documents, refused before a bundle is verified, audited;
and rotating a model signing key with no edit to trust.toml."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import generate_private_key
from packager.core.benchrecord import KIND, BenchmarkResult, sign_result
from packager.core.policy import Trusted, TrustPolicy, adhoc_policy, parse_policy, render_policy
from packager.core.root import (
    DELEGATIONS_PAYLOAD_TYPE,
    DELEGATIONS_TAG,
    ROOT_PAYLOAD_TYPE,
    TRUST_REPOSITORY,
    Delegation,
    Delegations,
    Role,
    Root,
    delegations_payload,
    keys_by_hint,
    root_payload,
    root_tag,
    sign_document,
)
from packager.core.signature import key_hint
from packager.distribution.mirror import export, mirror
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
)
from packager.instance.install import InstallOptions, install, rollback
from packager.instance.roots import instance_policy, pin, trust_state
from packager.instance.store import Store
from packager.instance.update import update
from packager.registry import ArchiveRegistry, LayoutRegistry
from packager.registry.attachments import put_attachment
from packager.registry.base import Registry, RegistryReader
from packager.registry.memory import MemoryRegistry
from packager.registry.roots import read_trust_document, trust_documents

from .conftest import KeyPair, cli, make_keypair

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
R1, R2, R3 = (generate_private_key() for _ in range(3))
ONLINE, ONLINE2 = generate_private_key(), generate_private_key()
EMPTY = TrustPolicy({}, (), {}, "trust.toml")

Key = ec.EllipticCurvePrivateKey


def hints(*keys: ec.EllipticCurvePublicKey) -> tuple[str, ...]:
    return tuple(key_hint(k) for k in keys)


def root_doc(
    version: int,
    *,
    online: Key = ONLINE,
    signers: Sequence[Key] = (R1, R2),
    root_keys: Sequence[Key] = (R1, R2, R3),
    expires: datetime = T0 + timedelta(days=365),
) -> bytes:
    public = [k.public_key() for k in root_keys]
    root = Root(
        version,
        expires,
        keys_by_hint([*public, online.public_key()]),
        Role(hints(*public), 2),
        Role(hints(online.public_key()), 1),
    )
    return sign_document(ROOT_PAYLOAD_TYPE, root_payload(root), list(signers))


def delegations_doc(
    version: int,
    signer: ec.EllipticCurvePublicKey,
    *,
    online: Key = ONLINE,
    expires: datetime = T0 + timedelta(days=90),
) -> bytes:
    doc = Delegations(
        version, expires, keys_by_hint([signer]), (Delegation("iris*", hints(signer)),)
    )
    return sign_document(DELEGATIONS_PAYLOAD_TYPE, delegations_payload(doc), [online])


def put(registry: Registry, tag: str, data: bytes) -> None:
    kind = DELEGATIONS_PAYLOAD_TYPE if tag == DELEGATIONS_TAG else ROOT_PAYLOAD_TYPE
    registry.put_document(TRUST_REPOSITORY, tag, data, artifact_type=kind)


@pytest.fixture
def registry(
    memory_registry: MemoryRegistry, bundles: dict[str, Path], keypair: KeyPair
) -> MemoryRegistry:
    for bundle in bundles.values():
        publish_bundle(
            bundle, registry=memory_registry, mode=Trusted(adhoc_policy([keypair.public]))
        )
    put(memory_registry, root_tag(1), root_doc(1))
    put(memory_registry, DELEGATIONS_TAG, delegations_doc(1, keypair.public))
    return memory_registry


@pytest.fixture
def store(home: Path) -> Store:
    store = Store(home)
    pin(store, root_doc(1), now=T0)
    return store


def install_iris(
    registry: RegistryReader, store: Store, ref: str = "iris@1.0.0", policy: TrustPolicy = EMPTY
) -> str:
    result = install(
        ref, registry=registry, store=store, now=NOW, options=InstallOptions(verify=Trusted(policy))
    )
    return result.version


def trust_log(store: Store) -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in store.audit_log() if e.action == "trust"]


def test_without_a_pinned_root_trust_toml_alone_decides(
    registry: MemoryRegistry, home: Path
) -> None:
    with pytest.raises(UntrustedError, match="no rule covers it"):
        install_iris(registry, Store(home))


def test_delegations_from_the_pinned_root_trust_the_signer(
    registry: MemoryRegistry, store: Store
) -> None:
    assert install_iris(registry, store) == "1.0.0"
    state = trust_state(store)
    assert state is not None and (state.root.version, state.delegations_version) == (1, 1)
    assert ("accepted", "delegations version 1") in trust_log(store)


def test_a_new_root_is_followed_and_recorded(registry: MemoryRegistry, store: Store) -> None:
    put(registry, root_tag(2), root_doc(2, signers=(R1, R2, R3)))
    put(registry, root_tag(3), root_doc(3, signers=(R2, R3)))
    install_iris(registry, store)
    state = trust_state(store)
    assert state is not None and state.root.version == 3
    assert ("accepted", "root version 3 (was 1)") in trust_log(store)


def test_rollback_of_delegations_is_refused(
    registry: MemoryRegistry, store: Store, keypair: KeyPair
) -> None:
    old = delegations_doc(1, keypair.public)
    put(registry, DELEGATIONS_TAG, delegations_doc(2, keypair.public))
    install_iris(registry, store)
    put(registry, DELEGATIONS_TAG, old)
    with pytest.raises(RollbackError, match="older than version 2"):
        install_iris(registry, store, "iris@1.1.0")
    assert trust_log(store)[-1][0] == "refused"
    assert [e.outcome for e in store.audit_log("iris") if e.action == "trust"] == ["refused"]


def test_rollback_of_the_root_is_refused(registry: MemoryRegistry, store: Store) -> None:
    put(registry, root_tag(2), root_doc(2))
    install_iris(registry, store)
    # A registry restored from a backup serves root 1 where root 2 was.
    with pytest.raises(RollbackError):
        pin(store, root_doc(1), now=NOW)
    put(registry, root_tag(3), root_doc(1))
    with pytest.raises(RollbackError, match="version 1 where version 3"):
        install_iris(registry, store, "iris@1.1.0")


def test_freeze_expired_delegations_and_root(
    registry: MemoryRegistry, store: Store, keypair: KeyPair, home: Path
) -> None:
    put(registry, DELEGATIONS_TAG, delegations_doc(2, keypair.public, expires=T0))
    with pytest.raises(ExpiredError, match="delegations version 2 expired"):
        install_iris(registry, store)
    frozen = Store(home / "other")
    pin(frozen, root_doc(1, expires=T0), now=T0)
    with pytest.raises(ExpiredError, match="root version 1 expired"):
        install_iris(registry, frozen)


def test_threshold_not_met(registry: MemoryRegistry, store: Store) -> None:
    put(registry, root_tag(2), root_doc(2, signers=(R1,)))
    with pytest.raises(UntrustedError, match="threshold of 2"):
        install_iris(registry, store)
    state = trust_state(store)
    assert state is not None and state.root.version == 1


def test_a_key_a_newer_root_removed_is_no_longer_accepted(
    registry: MemoryRegistry, store: Store, other_keypair: KeyPair
) -> None:
    # ONLINE leaks; root 2 replaces it with ONLINE2. The thief delegates iris to itself.
    put(registry, root_tag(2), root_doc(2, online=ONLINE2))
    put(registry, DELEGATIONS_TAG, delegations_doc(99, other_keypair.public, online=ONLINE))
    with pytest.raises(UntrustedError, match="root v2"):
        install_iris(registry, store)


def test_old_root_mixed_with_new_delegations(
    registry: MemoryRegistry, store: Store, keypair: KeyPair
) -> None:
    put(registry, DELEGATIONS_TAG, delegations_doc(2, keypair.public))
    install_iris(registry, store)
    # Root 2 rotates the delegation key, but the registry still serves delegations signed
    # by root 1's key.
    put(registry, root_tag(2), root_doc(2, online=ONLINE2))
    with pytest.raises(UntrustedError, match="by the keys of root v2"):
        install_iris(registry, store, "iris@1.1.0")
    # Signed by the new key, a fresh version 1 is accepted: the rotated role reset the floor.
    put(registry, DELEGATIONS_TAG, delegations_doc(1, keypair.public, online=ONLINE2))
    assert install_iris(registry, store, "iris@1.1.0") == "1.1.0"


def test_a_root_chain_cannot_skip_a_version(registry: MemoryRegistry, store: Store) -> None:
    # Root 3 served as root 2: refused, not taken as the newest root.
    put(registry, root_tag(2), root_doc(3))
    with pytest.raises(RollbackError, match="version 3 where version 2"):
        install_iris(registry, store)
    # Root 3 alone, with no root 2: never reached; delegations signed for root 3 refused.
    registry.drop_tag(TRUST_REPOSITORY, root_tag(2))
    put(registry, root_tag(3), root_doc(3, online=ONLINE2))
    put(registry, DELEGATIONS_TAG, delegations_doc(5, R1.public_key(), online=ONLINE2))
    with pytest.raises(UntrustedError, match="root v1"):
        install_iris(registry, store)


def test_local_revocation_wins_over_delegations(
    registry: MemoryRegistry, store: Store, keypair: KeyPair
) -> None:
    text = render_policy(adhoc_policy([keypair.public])).replace(
        "revoked = false", "revoked = true"
    )
    with pytest.raises(UntrustedError, match="revoked"):
        install_iris(registry, store, policy=parse_policy(text, source="trust.toml"))


def test_tampered_trust_documents_are_refused(registry: MemoryRegistry, store: Store) -> None:
    put(registry, DELEGATIONS_TAG, b'{"mediaType": 1}')
    with pytest.raises(TamperedError):
        install_iris(registry, store)


def test_instance_policy_needs_a_policy_or_a_pinned_root(home: Path, store: Store) -> None:
    assert instance_policy(home=home).rules == ()
    with pytest.raises(UsageError, match="no trusted keys"):
        instance_policy(home=home / "elsewhere")


def test_rotating_a_signing_key_needs_no_edit_on_the_instance(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    home: Path,
) -> None:
    """End to end through the CLI on the embedded registry: root, delegation, pin, install;
    then the publisher moves 'iris*' to a new signing key and rotates the root; the
    instance installs what the new key signed and refuses the old key, trust.toml untouched."""
    from packager.build.api import package

    reg = tmp_path / "registry"
    r1, r2, r3, online = (make_keypair(tmp_path / name) for name in ("r1", "r2", "r3", "online"))
    root1, root2 = tmp_path / "root.json", tmp_path / "root.2.json"
    assert cli(capsys, "root", "init", "--key", r1.key_path, "--key", r2.key_path,
               "--root-key", r3.pub_path, "--threshold", "2",
               "--delegation-key", online.pub_path, "-o", root1)[0] == 0  # fmt: skip
    code, out, _ = cli(capsys, "root", "publish", root1, "--registry", reg, "--json")
    assert code == 0 and json.loads(out)["reference"].endswith("packager-trust:root.1")
    delegate = ("delegate", "iris*", "--delegation-key", online.key_path, "--registry", reg)
    assert cli(capsys, *delegate, "--key", keypair.pub_path)[0] == 0
    for version in ("1.0.0", "2.0.0"):
        assert cli(capsys, "publish", bundles[version], "--registry", reg)[0] == 0

    # The instance pins root 1 and has no trust.toml at all.
    assert cli(capsys, "trust", "pin-root", root1)[0] == 0
    assert not (home / "trust.toml").exists()
    pinned = [e for e in Store(home).audit_log() if e.action == "trust"]
    assert [(e.outcome, e.detail) for e in pinned] == [("pinned", "root version 1")]
    assert cli(capsys, "install", "iris@1.0.0", "--registry", reg)[0] == 0

    # The publisher: a new signing key for 'iris*' (online key only), then a new root
    # that drops r1: r3 signs it first, r2 (a key of roots 1 and 2) adds its signature.
    dist = tmp_path / "dist"
    X, _ = iris
    rotated = package(iris_model, sample=X[::5], name="iris", version="1.2.0",
                      key=other_keypair.private, out_dir=dist)  # fmt: skip
    assert cli(capsys, "publish", rotated, "--registry", reg)[0] == 0
    code, out, _ = cli(capsys, *delegate, "--key", other_keypair.pub_path, "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    assert cli(capsys, "root", "init", "--key", r3.key_path, "--root-key", r2.pub_path,
               "--threshold", "2", "--delegation-key", online.pub_path,
               "--version", "2", "-o", root2)[0] == 0  # fmt: skip
    code, _, err = cli(capsys, "root", "publish", root2, "--registry", reg)
    assert code == 3 and "root v2 is signed by 1 of the trusted keys" in err
    assert cli(capsys, "root", "sign", root2, "--key", r2.key_path)[0] == 0
    assert cli(capsys, "root", "publish", root2, "--registry", reg)[0] == 0

    assert cli(capsys, "install", "iris@1.2.0", "--registry", reg)[0] == 0
    code, _, err = cli(capsys, "install", "iris@2.0.0", "--registry", reg)
    assert code == 3 and "not one of the trusted keys" in err
    assert not (home / "trust.toml").exists()
    code, out, _ = cli(capsys, "search", "--registry", reg, "--json")
    assert code == 0 and "packager-trust" not in out and "iris" in out
    code, out, _ = cli(capsys, "log", "--json")
    trust = [(e["outcome"], e["detail"]) for e in json.loads(out) if e["action"] == "trust"]
    assert ("accepted", "root version 2 (was 1)") in trust
    assert ("accepted", "delegations version 2") in trust


def test_cli_refusals_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair
) -> None:
    bad = tmp_path / "root.json"
    bad.write_bytes(b"not json")
    code, _, err = cli(capsys, "trust", "pin-root", bad)
    assert code == 3 and err.startswith("packager: error:") and err.count("\n") == 1
    args = ("--key", keypair.pub_path, "--delegation-key", keypair.key_path)
    code, _, err = cli(capsys, "delegate", "iris*", *args, "--registry", tmp_path / "r")
    assert code == 4 and "no root of trust" in err


def test_mirror_and_export_carry_the_trust_documents(
    registry: MemoryRegistry, store: Store, tmp_path: Path, keypair: KeyPair
) -> None:
    put(registry, root_tag(2), root_doc(2))
    mode = Trusted(adhoc_policy([keypair.public]))
    destination = LayoutRegistry(tmp_path / "mirror")
    mirror(registry, destination, ["iris@1.0.0"], mode=mode)
    assert trust_documents(destination) == trust_documents(registry)
    assert [tag for tag, _ in trust_documents(destination)] == ["root.1", "root.2", "delegations"]
    # A newer delegations version replaces the mirror's; an older one does not.
    put(registry, DELEGATIONS_TAG, delegations_doc(3, keypair.public))
    mirror(registry, destination, ["iris@1.0.0"], mode=mode)
    put(registry, DELEGATIONS_TAG, delegations_doc(2, keypair.public))
    mirror(registry, destination, ["iris@1.0.0"], mode=mode)
    assert read_trust_document(destination, DELEGATIONS_TAG) == delegations_doc(3, keypair.public)

    archive = tmp_path / "iris.tar"
    export(["iris@1.0.0"], registry=destination, out=archive)
    with ArchiveRegistry(archive) as carried:
        assert install_iris(carried, store) == "1.0.0"
    state = trust_state(store)
    assert state is not None and (state.root.version, state.delegations_version) == (2, 3)


def test_channels_and_update_follow_the_delegations(
    registry: MemoryRegistry, store: Store, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    promote("iris@1.0.0", channel="stable", registry=registry, private_key=keypair.private,
            now=T0, expires_in=timedelta(days=30))  # fmt: skip
    result = install(
        "iris@stable",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(EMPTY)),
    )
    assert result.version == "1.0.0"
    # The channel's key loses its delegation: update refuses the next promotion by it.
    put(registry, DELEGATIONS_TAG, delegations_doc(2, other_keypair.public))
    promote("iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private,
            now=T0, expires_in=timedelta(days=30))  # fmt: skip
    report = update(
        store=store,
        now=NOW,
        open_registry=lambda _ref: registry,
        options=InstallOptions(verify=Trusted(EMPTY)),
    )
    assert report.exit_code == 3 and store.current_version("iris") == "1.0.0"


LATER = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
def served(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair, home: Path) -> Path:
    """A registry directory holding iris 1.0.0 signed by ``keypair``, root 1 and
    delegations v1 trusting ``keypair`` for iris*; the instance pins root 1 and has no
    trust.toml, so only the delegations trust the signer."""
    path = tmp_path / "served"
    registry = LayoutRegistry(path)
    mode = Trusted(adhoc_policy([keypair.public]))
    publish_bundle(bundles["1.0.0"], registry=registry, mode=mode)
    put(registry, root_tag(1), root_doc(1, expires=LATER))
    put(registry, DELEGATIONS_TAG, delegations_doc(1, keypair.public, expires=LATER))
    pin(Store(home), root_doc(1, expires=LATER), now=T0)
    return path


def test_pull_and_mirror_trust_what_the_pinned_root_delegates(
    served: Path, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (home / "trust.toml").exists()
    code, _, _ = cli(capsys, "pull", "iris@1.0.0", "--registry", served, "-o", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "iris-1.0.0" / "model.onnx").is_file()
    assert cli(capsys, "mirror", served, tmp_path / "copy", "iris@1.0.0")[0] == 0
    assert LayoutRegistry(tmp_path / "copy").versions("iris") == ["1.0.0"]
    state = trust_state(Store(home))
    assert state is not None and state.delegations_version == 1


def test_pull_and_mirror_refuse_a_key_the_delegations_dropped(
    served: Path,
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> None:
    # The publisher moves iris* to another key: what the old key signed is refused.
    put(LayoutRegistry(served), DELEGATIONS_TAG,
        delegations_doc(2, other_keypair.public, expires=LATER))  # fmt: skip
    code, _, err = cli(capsys, "pull", "iris@1.0.0", "--registry", served, "-o", tmp_path / "out")
    assert code == 3 and err.splitlines()[-1].startswith("packager: error: ")
    assert "not one of the trusted keys" in err.splitlines()[-1]
    assert not (tmp_path / "out" / "iris-1.0.0").exists()
    code, _, err = cli(capsys, "mirror", served, tmp_path / "copy", "iris@1.0.0")
    assert code == 3 and "not one of the trusted keys" in err
    assert LayoutRegistry(tmp_path / "copy").names() == []
    # A registry that still serves the older delegations cannot bring the key back.
    put(LayoutRegistry(served), DELEGATIONS_TAG,
        delegations_doc(1, keypair.public, expires=LATER))  # fmt: skip
    code, _, err = cli(capsys, "pull", "iris@1.0.0", "--registry", served, "-o", tmp_path / "out")
    assert code == 3 and "older than version 2" in err
    code, _, err = cli(capsys, "mirror", served, tmp_path / "copy", "iris@1.0.0")
    assert code == 3 and "older than version 2" in err
    refused = [e for e in Store(home).audit_log() if (e.action, e.outcome) == ("trust", "refused")]
    assert len(refused) == 2 and refused[0].name == "iris"


def test_benchmark_history_counts_results_a_delegated_key_signed(
    served: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = LayoutRegistry(served)
    artifact = registry.resolve("iris", "1.0.0")
    digest = artifact.files["manifest.json"].digest
    figures = {"task": "classification", "engines": [{"engine": "onnxruntime", "accuracy": 0.9}]}
    result = BenchmarkResult("iris", "1.0.0", digest, T0, figures)
    put_attachment(registry, artifact, KIND, sign_result(result, private_key=keypair.private))
    code, out, err = cli(capsys, "benchmark", "history", "iris", "--registry", served, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["refused"] == [] and [r["version"] for r in doc["results"]] == ["1.0.0"]


def test_rollback_with_a_pinned_root_judges_the_keys_it_knows_offline(
    registry: MemoryRegistry, store: Store, keypair: KeyPair
) -> None:
    """The delegations that trust the signer live in the registry: offline, a rollback
    refuses a version whose model.sig names a key trust.toml revokes, and only that."""
    assert install_iris(registry, store) == "1.0.0"
    assert install_iris(registry, store, "iris@1.1.0") == "1.1.0"
    assert rollback("iris", store=store, now=NOW, verify=Trusted(EMPTY)).version == "1.0.0"
    assert install_iris(registry, store, "iris@1.1.0") == "1.1.0"
    text = render_policy(adhoc_policy([keypair.public])).replace(
        "revoked = false", "revoked = true"
    )
    revoked = Trusted(parse_policy(text, source="trust.toml"))
    with pytest.raises(UntrustedError, match="refusing to roll back iris to 1.0.0.*revoked key"):
        rollback("iris", store=store, now=NOW, verify=revoked)
    assert store.current_version("iris") == "1.1.0"
