from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from packager._io.keys import encode_public_key, generate_private_key
from packager.core.policy import (
    Rule,
    Trusted,
    TrustPolicy,
    Unverified,
    adhoc_policy,
    load_pem_public_key,
    parse_policy,
    render_policy,
    with_keys,
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


def test_with_keys_adds_keys_and_keeps_every_other_rule(
    alice: ec.EllipticCurvePrivateKey, bob: ec.EllipticCurvePrivateKey
) -> None:
    policy = parse_policy(policy_text(alice, bob), source="trust.toml")
    carol = generate_private_key()
    added = with_keys(policy, [bob.public_key(), carol.public_key()])
    # carol is trusted for every model under a name no policy file can give; bob stays
    # revoked under his own name, whatever --key says.
    assert hints(added.keys_for("iris")) == [key_hint(carol.public_key())]
    assert hints(added.keys_for("spam-filter")) == [key_hint(carol.public_key())]
    assert added.key_named_by_hint()[key_hint(carol.public_key())] == "--key 2"
    assert added.revoked_hints() == {key_hint(bob.public_key()): "bob.old"}
    assert (added.minimum, added.source) == (policy.minimum, "trust.toml")
    assert added.rules[: len(policy.rules)] == policy.rules
    # alice given again keeps her name; she is now trusted for every model.
    again = with_keys(policy, [alice.public_key()])
    assert set(again.keys) == set(policy.keys)
    assert hints(again.keys_for("iris")) == [key_hint(alice.public_key())]


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


def spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    return bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# An ECDSA key on sect283k1, a binary curve this cryptography build cannot even load.
SECT283K1 = b"""-----BEGIN PUBLIC KEY-----
MF4wEAYHKoZIzj0CAQYFK4EEABADSgAEAdcuY9TxUvIEH84FzoNZVxbCTsWzPT6c
vVgPwUJz2w4wmR4SAItB2uJ1dw1sqVIq/ADL7HiIMtcC359FaH2wxE3fTGtZ7h5s
-----END PUBLIC KEY-----
"""


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: spki(ec.generate_private_key(ec.SECP256K1())), "curve secp256k1"),
        (lambda: spki(ec.generate_private_key(ec.BrainpoolP256R1())), "curve brainpoolP256r1"),
        (lambda: spki(ec.generate_private_key(ec.SECP192R1())), "curve secp192r1"),
        (lambda: SECT283K1, "1.3.132.0.16"),
        (lambda: spki(ed25519.Ed25519PrivateKey.generate()), "Ed25519 key"),
        (lambda: spki(rsa.generate_private_key(65537, 2048)), "RSA key"),
    ],
    ids=["secp256k1", "brainpool", "p192", "sect283k1", "ed25519", "rsa"],
)
def test_only_keys_packager_verifies_with_are_accepted(make: object, named: str) -> None:
    with pytest.raises(UsageError, match=re.escape(named)) as caught:
        load_pem_public_key(make(), where="k.pub")  # type: ignore[operator]
    message = str(caught.value)
    assert "\n" not in message and "P-256, P-384 or P-521" in message
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        load_pem_public_key(spki(ec.generate_private_key(curve)), where="k.pub")


def test_an_unusable_key_in_the_policy_does_not_stop_the_usable_ones(
    alice: ec.EllipticCurvePrivateKey,
) -> None:
    k1 = spki(ec.generate_private_key(ec.SECP256K1())).decode()
    text = f"""
[keys.k1]
pem = '''{k1}'''

[keys.alice]
pem = '''{pem(alice)}'''

[[rules]]
models = "iris"
keys = ["k1", "alice"]

[[rules]]
models = "only-k1"
keys = ["k1"]
"""
    policy = parse_policy(text, source="t.toml")
    assert hints(policy.keys_for("iris")) == [key_hint(alice.public_key())]
    assert list(policy.unusable) == ["k1"] and "secp256k1" in policy.unusable["k1"].reason
    with pytest.raises(UntrustedError, match="revoked or unusable"):
        policy.keys_for("only-k1")
    # Rewriting the policy keeps the unusable key as it was.
    again = parse_policy(render_policy(policy), source="t.toml")
    assert again.unusable == policy.unusable and again.rules == policy.rules
