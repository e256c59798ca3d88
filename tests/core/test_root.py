"""The root of trust's rules (pure): every TUF attack on root and delegations documents."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import generate_private_key
from packager.core import signature
from packager.core.policy import (
    ApprovalRule,
    LicenseRule,
    Trusted,
    TrustPolicy,
    adhoc_policy,
    parse_policy,
    render_policy,
)
from packager.core.root import (
    DELEGATIONS_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    Delegation,
    Delegations,
    Role,
    Root,
    accept_delegations,
    check_fresh,
    delegated_policy,
    delegations_floor,
    delegations_payload,
    keys_by_hint,
    next_root,
    pin_root,
    root_payload,
    sign_document,
)
from packager.core.signature import key_hint
from packager.core.verify import verify_signature
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
R1, R2, R3, R4 = (generate_private_key() for _ in range(4))
ONLINE, ONLINE2 = generate_private_key(), generate_private_key()
SIGNER, SIGNER2 = generate_private_key(), generate_private_key()

Key = ec.EllipticCurvePrivateKey


def hints(*keys: Key) -> tuple[str, ...]:
    return tuple(key_hint(k.public_key()) for k in keys)


def make_root(
    version: int = 1,
    *,
    root_keys: Sequence[Key] = (R1, R2, R3),
    threshold: int = 2,
    online: Sequence[Key] = (ONLINE,),
    expires: datetime = T0 + timedelta(days=365),
) -> Root:
    keys = keys_by_hint(k.public_key() for k in (*root_keys, *online))
    return Root(
        version,
        expires,
        keys,
        Role(hints(*root_keys), threshold),
        Role(hints(*online), 1),
    )


def signed_root(root: Root, *signers: Key) -> bytes:
    return sign_document(ROOT_PAYLOAD_TYPE, root_payload(root), list(signers))


def make_delegations(
    version: int = 1,
    *,
    signers: Sequence[Key] = (SIGNER,),
    models: str = "iris-*",
    expires: datetime = T0 + timedelta(days=90),
) -> Delegations:
    keys = keys_by_hint(k.public_key() for k in signers)
    return Delegations(version, expires, keys, (Delegation(models, hints(*signers)),))


def signed_delegations(doc: Delegations, *signers: Key) -> bytes:
    return sign_document(DELEGATIONS_PAYLOAD_TYPE, delegations_payload(doc), list(signers))


V1 = make_root()
V1_BYTES = signed_root(V1, R1, R2)


def test_pin_root_needs_its_own_threshold() -> None:
    assert pin_root(V1_BYTES) == V1
    with pytest.raises(UntrustedError, match="fewer than the threshold of 2"):
        pin_root(signed_root(V1, R1))


def test_one_key_signing_twice_counts_once() -> None:
    once = signed_root(V1, R1)
    bundle = json.loads(once)
    sigs = bundle["dsseEnvelope"]["signatures"]
    bundle["dsseEnvelope"]["signatures"] = [sigs[0], {**sigs[0], "keyid": "other"}]
    with pytest.raises(UntrustedError, match="signed by 1 of the trusted keys"):
        pin_root(json.dumps(bundle).encode())


def test_add_signature_refuses_the_same_key_twice() -> None:
    with pytest.raises(UsageError, match="already signed"):
        signature.add_signature(V1_BYTES, ROOT_PAYLOAD_TYPE, private_key=R1)
    third = signature.add_signature(V1_BYTES, ROOT_PAYLOAD_TYPE, private_key=R3)
    _, signers = signature.verify_threshold(
        third, ROOT_PAYLOAD_TYPE, public_keys=V1.role_keys(V1.root), threshold=3, what="root"
    )
    assert signers == frozenset(hints(R1, R2, R3))


def test_model_sig_still_has_exactly_one_signature() -> None:
    doubled = signature.add_signature(
        signature.sign_envelope(signature.PAYLOAD_TYPE, b"{}", private_key=R1),
        signature.PAYLOAD_TYPE,
        private_key=R2,
    )
    with pytest.raises(TamperedError, match="2 DSSE signatures, expected exactly 1"):
        signature.verify(doubled, public_keys=[R1.public_key()])


def test_pinning_an_older_root_is_a_rollback() -> None:
    v2 = make_root(2)
    with pytest.raises(RollbackError):
        pin_root(V1_BYTES, pinned=v2)


def test_next_root_needs_both_thresholds() -> None:
    v2 = make_root(2, root_keys=(R2, R3, R4))
    # Old threshold (R1, R2) and new threshold (R3, R4): accepted.
    assert next_root(V1, signed_root(v2, R1, R2, R3, R4)) == v2
    # New keys alone: the trusted root's threshold is not met.
    with pytest.raises(UntrustedError, match="by the keys of root v1"):
        next_root(V1, signed_root(v2, R3, R4))
    # Old keys alone, where the new root's own threshold needs a new key too.
    v2_new = make_root(2, root_keys=(R4, ONLINE2), threshold=2)
    with pytest.raises(UntrustedError, match="by its own keys"):
        next_root(V1, signed_root(v2_new, R1, R2, R4))


def test_root_chain_cannot_skip_or_go_back() -> None:
    v3 = make_root(3)
    with pytest.raises(RollbackError, match="version 3 where version 2"):
        next_root(V1, signed_root(v3, R1, R2))
    v2 = make_root(2)
    with pytest.raises(RollbackError, match="version 1 where version 3"):
        next_root(v2, V1_BYTES)


def test_expired_root_is_refused_only_at_the_end() -> None:
    old = make_root(expires=T0)
    # An expired root still verifies its successor (the chain goes through it) ...
    v2 = make_root(2)
    assert next_root(old, signed_root(v2, R1, R2)) == v2
    # ... but the newest one must be fresh.
    with pytest.raises(ExpiredError, match="root version 1 expired"):
        check_fresh(old, now=NOW)
    assert check_fresh(v2, now=NOW) == v2


def test_delegations_verify_against_the_newest_root() -> None:
    doc = make_delegations()
    assert accept_delegations(V1, signed_delegations(doc, ONLINE), now=NOW, floor=None) == doc
    # Root v2 replaced the online key (ONLINE compromised): delegations ONLINE signs are
    # refused, whatever version they claim; ONLINE2's are accepted.
    v2 = make_root(2, online=(ONLINE2,))
    newer = make_delegations(50)
    with pytest.raises(UntrustedError, match="root v2"):
        accept_delegations(v2, signed_delegations(newer, ONLINE), now=NOW, floor=1)
    assert accept_delegations(v2, signed_delegations(doc, ONLINE2), now=NOW, floor=None) == doc
    # Root keys are not delegation keys.
    with pytest.raises(UntrustedError):
        accept_delegations(V1, signed_delegations(doc, R1, R2, R3), now=NOW, floor=None)


def test_delegations_rollback_and_freeze() -> None:
    with pytest.raises(RollbackError, match="older than version 3"):
        accept_delegations(V1, signed_delegations(make_delegations(2), ONLINE), now=NOW, floor=3)
    assert (
        accept_delegations(
            V1, signed_delegations(make_delegations(3), ONLINE), now=NOW, floor=3
        ).version
        == 3
    )
    stale = make_delegations(4, expires=T0)
    with pytest.raises(ExpiredError, match="delegations version 4 expired"):
        accept_delegations(V1, signed_delegations(stale, ONLINE), now=NOW, floor=None)


def test_a_rotated_delegations_role_resets_the_floor() -> None:
    assert delegations_floor(V1, make_root(2), 7) == 7
    assert delegations_floor(V1, make_root(2, online=(ONLINE2,)), 7) is None


def test_delegated_policy_adds_keys_and_local_revocations_win() -> None:
    doc = make_delegations(signers=(SIGNER,))
    policy = delegated_policy(TrustPolicy({}, (), {}, "trust.toml"), doc)
    assert policy.keys_for("iris-classifier") == [SIGNER.public_key()]
    with pytest.raises(UntrustedError, match="no rule covers it"):
        policy.keys_for("spam-filter")
    # trust.toml revokes SIGNER under its own name: the delegation cannot bring it back.
    local = adhoc_policy([SIGNER.public_key()])
    revoked = parse_policy(
        render_policy(local).replace("revoked = false", "revoked = true"), source="trust.toml"
    )
    combined = delegated_policy(revoked, doc)
    with pytest.raises(UntrustedError, match="every key its rules name is revoked"):
        combined.keys_for("iris-classifier")


def test_delegations_keep_the_instance_rules_for_approvals_licences_and_minimums() -> None:
    """Delegations add signing keys; what else the instance requires still holds."""
    base = TrustPolicy(
        {},
        (),
        {"iris-classifier": "2.0.0"},
        "trust.toml",
        approvals=(ApprovalRule("security-*", {"security-review": 1, "legal": 1}),),
        licenses=(LicenseRule("*", ("MIT",)),),
    )
    policy = delegated_policy(base, make_delegations(signers=(SIGNER,)))
    assert policy.required_approvals("security-scanner") == {"security-review": 1, "legal": 1}
    assert policy.license_rules("iris-classifier") == [LicenseRule("*", ("MIT",))]
    assert policy.minimum == {"iris-classifier": "2.0.0"}
    assert policy.keys_for("iris-classifier") == [SIGNER.public_key()]


def test_rotated_signer_is_no_longer_trusted() -> None:
    statement = signature.sign(
        subject_name="iris-classifier-1.0.0",
        resources={"manifest.json": signature.Digest.of(b"m")},
        private_key=SIGNER,
    )
    base = TrustPolicy({}, (), {}, "trust.toml")
    before = Trusted(delegated_policy(base, make_delegations(1, signers=(SIGNER,))))
    assert verify_signature(statement, before, name="iris-classifier").signer == hints(SIGNER)[0]
    after = Trusted(delegated_policy(base, make_delegations(2, signers=(SIGNER2,))))
    with pytest.raises(UntrustedError):
        verify_signature(statement, after, name="iris-classifier")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["predicate"].update(version=0),
        lambda p: p["predicate"].update(extra=1),
        lambda p: p["predicate"]["roles"]["root"].update(threshold=4),
        lambda p: p["predicate"]["roles"]["root"].update(threshold=True),
        lambda p: p["predicate"]["roles"]["root"]["keys"].append("f" * 64),
        lambda p: p["predicate"].update(expires="tomorrow"),
        lambda p: p.update(predicateType="https://packager.dev/delegations/v1"),
        lambda p: p["subject"][0].update(name="root.9"),
        lambda p: p["subject"][0]["digest"].update(sha256="0" * 64),
        lambda p: p["predicate"]["keys"].clear(),
        lambda p: p["predicate"]["roles"].update(approvals={"keys": [], "threshold": 1}),
    ],
)
def test_malformed_roots_are_tampering(mutate: object) -> None:
    payload = json.loads(root_payload(V1))
    payload["subject"][0]["digest"]["sha256"] = None  # recomputed below unless mutated
    mutate(payload)  # type: ignore[operator]
    with pytest.raises(TamperedError):
        pin_root(resign(payload))


def resign(payload: dict[str, Any]) -> bytes:
    """Sign an edited root statement, its subject digest recomputed unless the edit set it."""
    digest = payload["subject"][0]["digest"]
    if digest.get("sha256") is None:
        digest["sha256"] = hashlib.sha256(canonical(payload["predicate"])).hexdigest()
    return sign_document(ROOT_PAYLOAD_TYPE, json.dumps(payload).encode(), [R1, R2])


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def test_an_edited_root_with_its_digest_recomputed_verifies() -> None:
    payload = json.loads(root_payload(V1))
    payload["subject"][0]["digest"]["sha256"] = None
    assert pin_root(resign(payload)) == V1


def test_key_ids_are_recomputed() -> None:
    payload = json.loads(root_payload(V1))
    keys = payload["predicate"]["keys"]
    first = sorted(keys)[0]
    keys["0" * 64] = keys.pop(first)
    payload["subject"][0]["digest"]["sha256"] = None
    with pytest.raises(TamperedError, match="is not the id of its key"):
        pin_root(resign(payload))


def test_a_root_is_not_delegations() -> None:
    with pytest.raises(TamperedError, match="payloadType"):
        accept_delegations(V1, V1_BYTES, now=NOW, floor=None)


def test_root_signing_rejects_bad_documents() -> None:
    with pytest.raises(UsageError):
        sign_document(ROOT_PAYLOAD_TYPE, root_payload(V1), [])
    assert replace(V1, version=2) != V1
