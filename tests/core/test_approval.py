"""Approvals in the pure core: which signed sign-offs count for one exact bundle, and every
attack on them (replay for another version or other bytes, a key without the role, the
builder approving its own bundle, expiry, revoked keys and revocations, type confusion)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import generate_private_key
from packager.core.approval import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    Approval,
    Revocation,
    check_role,
    parse_approval_payload,
    sign_approval,
    sign_revocation,
)
from packager.core.digests import Digest
from packager.core.policy import (
    ApprovalRule,
    Rule,
    TrustedKey,
    TrustPolicy,
    parse_policy,
    render_policy,
)
from packager.core.signature import key_hint, sign, sign_envelope, unverified_payload
from packager.core.statements import Subject
from packager.core.verify import ApprovalDecision, evaluate_approvals
from packager.errors import TamperedError, UntrustedError, UsageError

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
BUILDER = generate_private_key()
ALICE = generate_private_key()  # security-review
BOB = generate_private_key()  # legal
CAROL = generate_private_key()  # security-review
MALLORY = generate_private_key()  # in the policy, without a role
D1 = Digest.of(b"manifest.json of iris 1.0.0")
D2 = Digest.of(b"manifest.json of iris 1.1.0")


def trusted_key(name: str, key: ec.EllipticCurvePrivateKey, *roles: str) -> TrustedKey:
    public = key.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TrustedKey(name, pem, public, roles=roles)


def policy(*, require: dict[str, int] | None = None, revoked: str | None = None) -> TrustPolicy:
    keys = {
        "builder": trusted_key("builder", BUILDER, "security-review"),
        "alice": trusted_key("alice", ALICE, "security-review"),
        "bob": trusted_key("bob", BOB, "legal"),
        "carol": trusted_key("carol", CAROL, "security-review"),
        "mallory": trusted_key("mallory", MALLORY),
    }
    if revoked is not None:
        keys[revoked] = replace(keys[revoked], revoked=True)
    rule = ApprovalRule("iris*", require or {"security-review": 1, "legal": 1})
    return TrustPolicy(keys, (), approvals=(rule,))


def approval(role: str = "security-review", **kw: object) -> Approval:
    fields: dict[str, object] = {
        "name": "iris",
        "version": "1.0.0",
        "manifest_digest": D1,
        "role": role,
        "issued": T0,
        "expires": T0 + timedelta(days=90),
        "note": "reviewed",
    }
    fields.update(kw)
    return Approval(**fields)  # type: ignore[arg-type]


def signed(key: ec.EllipticCurvePrivateKey, role: str = "security-review", **kw: object) -> bytes:
    return sign_approval(approval(role, **kw), private_key=key)


def decide(
    *documents: bytes,
    revocations: tuple[bytes, ...] = (),
    trust: TrustPolicy | None = None,
    now: datetime = NOW,
    version: str = "1.0.0",
    digest: Digest = D1,
) -> ApprovalDecision:
    return evaluate_approvals(
        list(documents),
        list(revocations),
        trust or policy(),
        subject=Subject("iris", version, digest),
        bundle_signer=key_hint(BUILDER.public_key()),
        now=now,
    )


def refusals(decision: ApprovalDecision) -> list[str]:
    return [f.detail for f in decision.findings if not f.accepted]


def test_every_required_role_approved_is_enough() -> None:
    decision = decide(signed(ALICE), signed(BOB, "legal"))
    assert decision.missing == {}
    assert [(f.role, f.key) for f in decision.findings] == [
        ("security-review", "alice"),
        ("legal", "bob"),
    ]
    decision.check("iris@1.0.0")


def test_a_missing_role_is_named_with_how_many() -> None:
    decision = decide(signed(ALICE))
    assert decision.missing == {"legal": 1}
    with pytest.raises(UntrustedError, match="1 more legal"):
        decision.check("iris@1.0.0")


def test_models_without_a_rule_need_nothing() -> None:
    decision = evaluate_approvals(
        [],
        [],
        policy(),
        subject=Subject("spam-filter", "1.0.0", D1),
        bundle_signer=None,
        now=NOW,
    )
    assert decision.required == {} and decision.missing == {}


def test_m_of_n_counts_distinct_keys_once() -> None:
    trust = policy(require={"security-review": 2})
    twice = decide(signed(ALICE), signed(ALICE, note="again"), trust=trust)
    assert twice.missing == {"security-review": 1}
    assert decide(signed(ALICE), signed(CAROL), trust=trust).missing == {}


def test_an_approval_for_another_version_is_not_replayed() -> None:
    other = signed(BOB, "legal", version="1.1.0", manifest_digest=D2)
    decision = decide(signed(ALICE), other)
    assert decision.missing == {"legal": 1}
    assert "is for iris@1.1.0, not iris@1.0.0" in refusals(decision)[0]


def test_an_approval_for_other_bytes_of_the_same_version_does_not_count() -> None:
    decision = decide(signed(ALICE), signed(BOB, "legal", manifest_digest=D2))
    assert decision.missing == {"legal": 1}
    assert f"not the signed {D1}" in refusals(decision)[0]


def test_a_tampered_subject_digest_breaks_the_signature() -> None:
    data = signed(BOB, "legal", manifest_digest=D2)
    envelope = json.loads(data)
    payload = unverified_payload(data, PAYLOAD_TYPE).replace(D2.hex.encode(), D1.hex.encode())
    import base64

    envelope["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    forged = json.dumps(envelope).encode()
    decision = decide(signed(ALICE), forged)
    assert decision.missing == {"legal": 1}
    assert "does not verify" in refusals(decision)[0]


def test_a_key_without_the_role_cannot_approve_in_it() -> None:
    decision = decide(signed(ALICE), signed(MALLORY, "legal"), signed(ALICE, "legal"))
    assert decision.missing == {"legal": 1}
    assert [d.split(" was ")[1] for d in refusals(decision)] == [
        "made with a key that does not hold the role legal",
        "made with a key that does not hold the role legal",
    ]


def test_a_key_outside_the_policy_is_refused() -> None:
    stranger = generate_private_key()
    decision = decide(signed(ALICE), signed(stranger, "legal"))
    assert decision.missing == {"legal": 1}
    assert "not one of the trusted keys" in refusals(decision)[0]


def test_the_key_that_signed_the_bundle_cannot_approve_it() -> None:
    trust = policy(require={"security-review": 1})
    decision = decide(signed(BUILDER), trust=trust)
    assert decision.missing == {"security-review": 1}
    assert "separation of duties" in refusals(decision)[0]


def test_an_expired_approval_does_not_count() -> None:
    late = T0 + timedelta(days=90)
    decision = decide(signed(ALICE), signed(BOB, "legal"), now=late)
    assert decision.missing == {"security-review": 1, "legal": 1}
    assert all("expired at 2027-01-30T00:00:00Z" in d for d in refusals(decision))
    no_expiry = decide(signed(ALICE, expires=None), signed(BOB, "legal", expires=None), now=late)
    assert no_expiry.missing == {}


def test_a_revoked_reviewer_key_does_not_count() -> None:
    decision = decide(signed(ALICE), signed(BOB, "legal"), trust=policy(revoked="bob"))
    assert decision.missing == {"legal": 1}
    assert "revoked key" in refusals(decision)[0]


def test_a_signed_revocation_withdraws_only_that_approval_and_only_by_its_signer() -> None:
    legal = signed(BOB, "legal")
    withdrawal = Revocation("iris", "1.0.0", D1, Digest.of(legal), T0 + timedelta(hours=1))
    by_bob = sign_revocation(withdrawal, private_key=BOB)
    by_alice = sign_revocation(withdrawal, private_key=ALICE)
    assert decide(signed(ALICE), legal, revocations=(by_alice,)).missing == {}
    decision = decide(signed(ALICE), legal, revocations=(by_bob,))
    assert decision.missing == {"legal": 1}
    assert "revoked by its signer" in refusals(decision)[0]
    # A revocation naming another approval leaves this one standing.
    elsewhere = replace(withdrawal, approval=Digest.of(b"another approval"))
    unrelated = sign_revocation(elsewhere, private_key=BOB)
    assert decide(signed(ALICE), legal, revocations=(unrelated,)).missing == {}


def test_other_signed_documents_are_never_approvals() -> None:
    # model.sig by a reviewer key, and an approval statement under model.sig's payload type.
    model_sig = sign(subject_name="iris", resources={"model.onnx": D1}, private_key=ALICE)
    statement = approval().payload()
    as_in_toto = sign_envelope("application/vnd.in-toto+json", statement, private_key=ALICE)
    decision = decide(model_sig, as_in_toto, trust=policy(require={"security-review": 1}))
    assert decision.missing == {"security-review": 1}
    assert all("payloadType" in d for d in refusals(decision))


def test_another_predicate_type_is_refused() -> None:
    doc = json.loads(approval().payload())
    doc["predicateType"] = "https://slsa.dev/provenance/v1"
    data = sign_envelope(PAYLOAD_TYPE, json.dumps(doc).encode(), private_key=ALICE)
    decision = decide(data, trust=policy(require={"security-review": 1}))
    assert "predicateType" in refusals(decision)[0]


def test_the_statement_is_in_toto_with_the_documented_subject() -> None:
    doc = json.loads(approval().payload())
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == PREDICATE_TYPE
    assert doc["subject"] == [{"name": "iris@1.0.0", "digest": {"sha256": D1.hex}}]
    assert parse_approval_payload(approval().payload()) == approval()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["subject"][0].update(name="iris@1.1.0"),
        lambda d: d["subject"].append(d["subject"][0]),
        lambda d: d["subject"][0]["digest"].update(sha512="00"),
        lambda d: d["predicate"].update(role="Security Review"),
        lambda d: d["predicate"].update(extra=1),
        lambda d: d["predicate"].update(expires="2026-10-01T00:00:00Z"),
        lambda d: d["predicate"].update(issued=5),
        lambda d: d["subject"][0]["digest"].update(sha256="abc"),
    ],
)
def test_malformed_statements_are_tampered(change: object) -> None:
    doc = json.loads(approval().payload())
    change(doc)  # type: ignore[operator]
    with pytest.raises(TamperedError):
        parse_approval_payload(json.dumps(doc).encode())


def test_the_policy_names_roles_and_required_approvals_and_round_trips() -> None:
    pem = trusted_key("alice", ALICE).pem.decode()
    text = f"""
[keys.alice]
pem = '''{pem}'''
roles = ["security-review", "legal"]

[[approvals]]
models = "security-*"
require = {{ security-review = 2, legal = 1 }}

[[approvals]]
models = "security-scanner"
require = {{ security-review = 3 }}
"""
    parsed = parse_policy(text, source="t")
    assert parsed.keys["alice"].roles == ("legal", "security-review")
    assert parsed.required_approvals("security-scanner") == {"legal": 1, "security-review": 3}
    assert parsed.required_approvals("iris") == {}
    assert parse_policy(render_policy(parsed), source="t") == parsed


@pytest.mark.parametrize(
    "bad",
    [
        '[[approvals]]\nmodels = "x"\nrequire = { "Legal" = 1 }',
        '[[approvals]]\nmodels = "x"\nrequire = { legal = 0 }',
        '[[approvals]]\nmodels = "x"\nrequire = { legal = true }',
        '[[approvals]]\nmodels = "x"\nrequire = {}',
        '[[approvals]]\nmodels = "x"',
        '[keys.a]\npem = "x"\nroles = "legal"',
    ],
)
def test_malformed_approval_policies_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_policy(bad, source="t")


def test_the_documented_schema_accepts_what_is_signed_and_refuses_the_rest() -> None:
    from pathlib import Path

    import jsonschema

    schema_path = Path(__file__).parents[2] / "manifests" / "approval.v1.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    validator.check_schema(validator.schema)
    for made in (approval(), approval("legal", expires=None, note="")):
        validator.validate(json.loads(made.payload()))
    doc = json.loads(approval().payload())
    doc["predicate"]["role"] = "Legal\n"
    assert not validator.is_valid(doc)
    doc = json.loads(approval().payload())
    doc["subject"][0]["digest"]["sha256"] = D1.hex.upper()
    assert not validator.is_valid(doc)


def test_a_key_revoked_under_one_name_is_revoked_under_every_name() -> None:
    """The same public key added again under another name does not escape its revocation:
    neither for approvals nor for signing."""
    trust = policy(revoked="bob")
    alias = trusted_key("a-bob", BOB, "legal")
    trust = replace(trust, keys={**trust.keys, "a-bob": alias}, rules=(Rule("iris*", ("a-bob",)),))
    decision = decide(signed(ALICE), signed(BOB, "legal"), trust=trust)
    assert decision.missing == {"legal": 1}
    assert refusals(decision) == ["legal approval by key a-bob was made with a revoked key"]
    assert trust.reviewers("legal") == []
    with pytest.raises(UntrustedError, match="revoked"):
        trust.keys_for("iris")


def test_a_malformed_role_is_refused_with_the_rule() -> None:
    assert check_role("security-review") == "security-review"
    rule = r"invalid role 'security_review': use a lowercase word \(letters, digits, '-'\)"
    with pytest.raises(UsageError, match=rule):
        check_role("security_review")
