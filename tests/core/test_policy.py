from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import encode_public_key, generate_private_key
from packager.core.policy import (
    Rule,
    Trusted,
    TrustPolicy,
    Unverified,
    adhoc_policy,
    parse_policy,
    render_policy,
)
from packager.core.signature import key_hint
from packager.core.verify import check_version_allowed
from packager.errors import RollbackError, UntrustedError, UsageError


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return encode_public_key(key.public_key()).decode()


@pytest.fixture(scope="module")
def alice() -> ec.EllipticCurvePrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def bob() -> ec.EllipticCurvePrivateKey:
    return generate_private_key()


def policy_text(alice: ec.EllipticCurvePrivateKey, bob: ec.EllipticCurvePrivateKey) -> str:
    return f"""
[keys.alice]
pem = '''{pem(alice)}'''

[keys."bob.old"]
pem = '''{pem(bob)}'''
revoked = true

[[rules]]
models = "security-*"
keys = ["alice", "bob.old"]

[[rules]]
models = "spam-filter"
keys = ["bob.old"]

[minimum]
security-scanner = "2.0.0"
"""


def hints(keys: list[ec.EllipticCurvePublicKey]) -> list[str]:
    return [key_hint(k) for k in keys]


def test_rules_globs_and_revocation(
    alice: ec.EllipticCurvePrivateKey, bob: ec.EllipticCurvePrivateKey
) -> None:
    policy = parse_policy(policy_text(alice, bob), source="trust.toml")
    assert hints(policy.keys_for("security-scanner")) == [key_hint(alice.public_key())]
    with pytest.raises(UntrustedError, match="revoked"):
        policy.keys_for("spam-filter")
    with pytest.raises(UntrustedError, match="no rule covers"):
        policy.keys_for("iris")
    assert policy.revoked_hints() == {key_hint(bob.public_key()): "bob.old"}


def test_minimum_version(
    alice: ec.EllipticCurvePrivateKey, bob: ec.EllipticCurvePrivateKey
) -> None:
    mode = Trusted(parse_policy(policy_text(alice, bob), source="trust.toml"))
    check_version_allowed("security-scanner", "2.0.0", mode=mode)
    check_version_allowed("security-scanner", "10.0.0", mode=mode)
    check_version_allowed("other", "0.0.1", mode=mode)
    with pytest.raises(RollbackError, match=r"minimum version 2\.0\.0 set in trust\.toml"):
        check_version_allowed("security-scanner", "1.9.9", mode=mode)
    # --allow-downgrade is for the rollback floor only, never for the policy's minimum.
    with pytest.raises(RollbackError, match="minimum version"):
        check_version_allowed("security-scanner", "1.9.9", mode=mode, allow_downgrade=True)


def test_render_round_trip(
    alice: ec.EllipticCurvePrivateKey, bob: ec.EllipticCurvePrivateKey
) -> None:
    policy = parse_policy(policy_text(alice, bob), source="trust.toml")
    again = parse_policy(render_policy(policy), source="trust.toml")
    assert again.keys == policy.keys
    assert again.rules == policy.rules
    assert again.minimum == policy.minimum


def test_empty_policy_fails_closed() -> None:
    with pytest.raises(UntrustedError):
        TrustPolicy({}, (), {}).keys_for("anything")
    with pytest.raises(UntrustedError):
        parse_policy("", source="t").keys_for("anything")


def test_adhoc_policy_trusts_given_keys_for_every_model(alice: ec.EllipticCurvePrivateKey) -> None:
    policy = adhoc_policy([alice.public_key()])
    assert hints(policy.keys_for("anything")) == [key_hint(alice.public_key())]
    assert policy.rules == (Rule("*", ("key0",)),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[keys", "not valid TOML"),
        ("[other]\n", "unknown section"),
        ("[keys.a]\nfile = 'x'\n", "needs pem"),
        ("[keys.a]\npem = 'nope'\n", "not a PEM public key"),
        ("[[rules]]\nmodels = '*'\nkeys = ['ghost']\n", "unknown key 'ghost'"),
        ("[[rules]]\nmodels = 1\nkeys = []\n", "needs models"),
        ("rules = 3\n", "array of tables"),
        ("[minimum]\nx = '1.0'\n", "not a SemVer"),
        ("[minimum]\n'Bad Name' = '1.0.0'\n", "model name"),
        ("[keys.'a b']\npem = 'x'\n", "invalid key name"),
    ],
)
def test_malformed_policies_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_policy(text, source="trust.toml")


def test_revoked_must_be_bool(alice: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(UsageError, match="revoked must be"):
        parse_policy(f"[keys.a]\npem = '''{pem(alice)}'''\nrevoked = 'yes'\n", source="t")


def test_an_unverified_mode_always_says_why() -> None:
    assert Unverified("--insecure-skip-verify").reason == "--insecure-skip-verify"
    for empty in ("", "  "):
        with pytest.raises(UsageError, match="why"):
            Unverified(empty)
    mode = Trusted(TrustPolicy({}, (), {}))
    with pytest.raises(AttributeError):
        mode.policy = TrustPolicy({}, (), {})  # type: ignore[misc]
