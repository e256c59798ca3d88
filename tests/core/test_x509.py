"""Signatures made with a certificate chain, verified against trusted CAs (the pure core).

Each test makes its own PKI (root -> intermediate -> leaf, tests/certs.py) and signs with
the leaf's key; the refusals each break one rule of packager.core.x509.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from packager._io.keys import encode_public_key
from packager.core import signature
from packager.core.channel import PAYLOAD_TYPE as CHANNEL_PAYLOAD_TYPE
from packager.core.channel import Channel
from packager.core.digests import Digest
from packager.core.policy import Trusted, TrustPolicy, parse_policy, render_policy
from packager.core.verify import check_channel_document, check_trusted, verify_signature
from packager.core.x509 import Identity
from packager.errors import TamperedError, UntrustedError, UsageError

from ..certs import EMAIL, NOW, URI, Pki, issue, make_pki

RESOURCES = {"model.onnx": Digest.of(b"graph"), "manifest.json": Digest.of(b"{}")}


def sign(pki: Pki, *, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    return signature.sign(
        subject_name="security-scan-1.0.0",
        resources=RESOURCES,
        private_key=key or pki.leaf.key,
        certificate_chain=pki.chain,
    )


def toml_string(pem: bytes) -> str:
    return "'''\n" + pem.decode() + "'''"


def policy(
    pki: Pki,
    *,
    identities: tuple[str, ...] = (),
    models: str = "security-*",
    revoked: bool = False,
    key: ec.EllipticCurvePublicKey | None = None,
) -> Trusted:
    """A trust.toml trusting ``pki``'s root as "corp" for ``models`` (and ``key`` as
    "platform" for every model), parsed as an instance reads it."""
    text = (
        f"[cas.corp]\npem = {toml_string(pki.root.pem)}\n"
        f"identities = {json.dumps(list(identities))}\nrevoked = {str(revoked).lower()}\n\n"
        f'[[rules]]\nmodels = "{models}"\ncas = ["corp"]\n'
    )
    if key is not None:
        text += (
            f"\n[keys.platform]\npem = {toml_string(encode_public_key(key))}\n\n"
            '[[rules]]\nmodels = "*"\nkeys = ["platform"]\n'
        )
    return Trusted(parse_policy(text, source="t.toml"))


def test_a_chain_to_a_trusted_ca_verifies() -> None:
    pki = make_pki()
    statement = verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW)
    assert dict(statement.resources) == RESOURCES
    assert statement.signer == signature.key_hint(pki.leaf.key.public_key())
    assert statement.describe() == (f"certificate 'email:{EMAIL}, uri:{URI}' issued under CA corp")


def test_model_sig_carries_the_chain_as_model_signing_writes_it() -> None:
    pki = make_pki()
    material = json.loads(sign(pki))["verificationMaterial"]
    assert material == {
        "x509CertificateChain": {
            "certificates": [{"rawBytes": signature._b64(der)} for der in pki.chain]
        },
        "tlogEntries": [],
    }
    assert sign(pki) == sign(pki)  # RFC 6979: still byte-reproducible


@pytest.mark.parametrize(
    "identity",
    [f"email:{EMAIL}", f"uri:{URI}", "subject:CN=ml-release,O=Example Corp"],
)
def test_each_kind_of_identity_matches(identity: str) -> None:
    pki = make_pki()
    trusted = policy(pki, identities=("email:someone-else@example.com", identity))
    verify_signature(sign(pki), trusted, name="security-scan", now=NOW)


@pytest.mark.parametrize(
    "identity",
    [
        "email:attacker@example.com",
        f"email:{EMAIL.upper()}",
        f"uri:{URI}/other",
        "subject:CN=ml-release",
        f"email:{URI}",  # a URI SAN is no email SAN
    ],
)
def test_a_leaf_with_another_identity_is_refused(identity: str) -> None:
    pki = make_pki()
    with pytest.raises(
        UntrustedError, match=f"CA corp issued but the trust policy accepts only {identity}"
    ):
        verify_signature(
            sign(pki), policy(pki, identities=(identity,)), name="security-scan", now=NOW
        )


def test_a_leaf_without_san_is_matched_by_its_subject_only() -> None:
    pki = make_pki(sans=())
    subject = "subject:CN=ml-release,O=Example Corp"
    verify_signature(sign(pki), policy(pki, identities=(subject,)), name="security-scan", now=NOW)
    with pytest.raises(UntrustedError, match="accepts only email:"):
        verify_signature(
            sign(pki), policy(pki, identities=(f"email:{EMAIL}",)), name="security-scan", now=NOW
        )


def test_a_chain_to_another_ca_is_refused() -> None:
    pki, stranger = make_pki(), make_pki()
    with pytest.raises(UntrustedError, match="does not lead to a trusted CA \\(corp\\)"):
        verify_signature(sign(stranger), policy(pki), name="security-scan", now=NOW)


def test_a_ca_trusted_for_security_models_does_not_sign_spam_models() -> None:
    pki = make_pki()
    with pytest.raises(UntrustedError, match="no trusted CA for spam-filter"):
        verify_signature(sign(pki), policy(pki), name="spam-filter", now=NOW)
    with pytest.raises(UntrustedError, match="no rule covers it"):
        check_trusted(policy(pki), "spam-filter")
    check_trusted(policy(pki), "security-scan")


def test_an_expired_leaf_is_refused_at_the_current_time() -> None:
    pki = make_pki(not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    with pytest.raises(UntrustedError, match="does not lead to a trusted CA"):
        verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW)
    # The same signature verified while the certificate was valid:
    verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW - timedelta(days=2))
    # and the default time is the current one.
    with pytest.raises(UntrustedError):
        verify_signature(sign(pki), policy(pki), name="security-scan")


def test_an_issuer_without_ca_true_is_refused() -> None:
    root = issue("Example Root CA", ca=True)
    # A leaf-style certificate (CA:false) used as an intermediate.
    impostor = issue("not a CA", root, ca=False, eku=None, sans=())
    leaf = issue("ml-release", impostor, ca=False)
    pki = Pki(root, impostor, leaf)
    with pytest.raises(UntrustedError, match="does not lead to a trusted CA"):
        verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW)


def test_path_length_of_an_issuer_is_enforced() -> None:
    root = issue("Example Root CA", ca=True)
    intermediate = issue("Example Signing CA", root, ca=True, path_length=0)
    below = issue("One CA too deep", intermediate, ca=True)
    leaf = issue("ml-release", below, ca=False)
    chain = (leaf.der, below.der, intermediate.der)
    sig = signature.sign(
        subject_name="s", resources=RESOURCES, private_key=leaf.key, certificate_chain=chain
    )
    with pytest.raises(UntrustedError, match="does not lead to a trusted CA"):
        verify_signature(sig, policy(Pki(root, intermediate, leaf)), name="security-x", now=NOW)


def test_a_leaf_without_digital_signature_is_refused() -> None:
    pki = make_pki(key_usage="no-digital-signature")
    with pytest.raises(UntrustedError, match="keyUsage lacks digitalSignature"):
        verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW)


def test_a_leaf_for_another_purpose_is_refused() -> None:
    pki = make_pki(eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    with pytest.raises(UntrustedError, match="extendedKeyUsage does not allow codeSigning"):
        verify_signature(sign(pki), policy(pki), name="security-scan", now=NOW)
    # A leaf without extendedKeyUsage is not restricted to other purposes:
    unrestricted = make_pki(eku=None)
    verify_signature(sign(unrestricted), policy(unrestricted), name="security-scan", now=NOW)


def test_a_signature_by_another_key_than_the_leafs_is_refused() -> None:
    pki = make_pki()
    forged = sign(pki, key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UntrustedError, match="does not verify with the key of its signing"):
        verify_signature(forged, policy(pki), name="security-scan", now=NOW)


def test_a_revoked_ca_is_refused_by_name() -> None:
    pki = make_pki()
    trusted = policy(pki, revoked=True)
    with pytest.raises(UntrustedError, match="every CA its rules name is revoked"):
        verify_signature(sign(pki), trusted, name="security-scan", now=NOW)
    # Trusted again under another name, the revocation still holds:
    other = parse_policy(
        render_policy(trusted.policy)
        + f"\n[cas.again]\npem = {toml_string(pki.root.pem)}\n"
        + '\n[[rules]]\nmodels = "*"\ncas = ["again"]\n',
        source="t.toml",
    )
    with pytest.raises(UntrustedError, match="signed under the revoked CA 'corp'"):
        verify_signature(sign(pki), Trusted(other), name="security-scan", now=NOW)
    # With another CA still trusted for the model, the message names the revoked one:
    partner = make_pki()
    beside = parse_policy(
        render_policy(trusted.policy)
        + f"\n[cas.partner]\npem = {toml_string(partner.root.pem)}\n"
        + '\n[[rules]]\nmodels = "*"\ncas = ["partner"]\n',
        source="t.toml",
    )
    verify_signature(sign(partner), Trusted(beside), name="security-scan", now=NOW)
    with pytest.raises(UntrustedError, match="signed under the revoked CA 'corp'"):
        verify_signature(sign(pki), Trusted(beside), name="security-scan", now=NOW)


def test_a_revoked_intermediate_is_refused_even_below_a_trusted_root() -> None:
    pki = make_pki()
    text = render_policy(policy(pki).policy) + (
        f"\n[cas.signing]\npem = {toml_string(pki.intermediate.pem)}\nrevoked = true\n"
    )
    with pytest.raises(UntrustedError, match="signed under the revoked CA 'signing'"):
        verify_signature(
            sign(pki), Trusted(parse_policy(text, source="t")), name="security-a", now=NOW
        )


def test_a_key_signed_bundle_still_verifies_with_keys() -> None:
    pki = make_pki()
    key = ec.generate_private_key(ec.SECP256R1())
    sig = signature.sign(subject_name="s", resources=RESOURCES, private_key=key)
    trusted = policy(pki, key=key.public_key())
    statement = verify_signature(sig, trusted, name="security-scan", now=NOW)
    assert statement.certificate is None
    assert statement.describe() == f"key {signature.key_hint(key.public_key())}"
    # Without a trusted CA, a certificate's key must be a trusted key itself:
    only_keys = Trusted(TrustPolicy(trusted.policy.keys, (trusted.policy.rules[1],), {}, "t"))
    with pytest.raises(UntrustedError, match="not one of the trusted keys"):
        verify_signature(sign(pki), only_keys, name="security-scan", now=NOW)
    with pytest.raises(UntrustedError, match="no trusted CA for security-scan"):
        verify_signature(sign(pki), Trusted(TrustPolicy({}, (), {})), name="security-scan")


def test_a_certificates_key_trusted_as_a_key_needs_no_ca() -> None:
    pki = make_pki(eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    # The CA refuses this leaf (not for code signing) ...
    refused = policy(pki)
    with pytest.raises(UntrustedError, match="extendedKeyUsage does not allow codeSigning"):
        verify_signature(sign(pki), refused, name="security-scan", now=NOW)
    # ... and says so, even when other keys are trusted for the model; but a policy that
    # trusts the key itself accepts what it signed, whatever certificate comes with it.
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(UntrustedError, match="extendedKeyUsage does not allow codeSigning"):
        verify_signature(sign(pki), policy(pki, key=stranger), name="security-scan", now=NOW)
    trusted = policy(pki, key=pki.leaf.key.public_key())
    statement = verify_signature(sign(pki), trusted, name="security-scan", now=NOW)
    assert statement.certificate is None
    assert statement.signer == signature.key_hint(pki.leaf.key.public_key())


@pytest.mark.parametrize(
    ("material", "message"),
    [
        ({"x509CertificateChain": {"certificates": []}}, "carries 0 certificates"),
        ({"x509CertificateChain": {"certificates": [{"rawBytes": "AAEC"}]}}, "not DER X.509"),
        ({"x509CertificateChain": {}}, "has no 'certificates'"),
        ({"x509CertificateChain": {"certificates": [{"rawBytes": 7}]}}, "is not a string"),
        ({"x509CertificateChain": {"certificates": [{}]}}, "has no 'rawBytes'"),
        ({"x509CertificateChain": {"certificates": "x"}}, "is not a JSON array"),
    ],
)
def test_malformed_chains_are_tampered(material: dict[str, object], message: str) -> None:
    pki = make_pki()
    bundle = json.loads(sign(pki))
    bundle["verificationMaterial"] = material
    with pytest.raises(TamperedError, match=message):
        verify_signature(json.dumps(bundle).encode(), policy(pki), name="security-scan", now=NOW)


def test_every_corrupted_leaf_is_refused_with_our_errors() -> None:
    pki = make_pki()
    trusted = policy(pki)
    for position in range(0, len(pki.leaf.der), 3):
        leaf = bytearray(pki.leaf.der)
        leaf[position] ^= 0x41
        sig = signature.sign(
            subject_name="s",
            resources=RESOURCES,
            private_key=pki.leaf.key,
            certificate_chain=(bytes(leaf), pki.intermediate.der),
        )
        with pytest.raises((UntrustedError, TamperedError)):
            verify_signature(sig, trusted, name="security-scan", now=NOW)


def test_a_key_and_a_chain_together_are_tampered() -> None:
    pki = make_pki()
    bundle = json.loads(sign(pki))
    bundle["verificationMaterial"]["publicKey"] = {"hint": "00"}
    with pytest.raises(TamperedError, match="both publicKey and x509CertificateChain"):
        verify_signature(json.dumps(bundle).encode(), policy(pki), name="security-scan", now=NOW)


def test_a_single_certificate_verifies_when_the_ca_issued_the_leaf() -> None:
    root = issue("Example Root CA", ca=True)
    leaf = issue("ml-release", root, ca=False)
    pki = Pki(root, root, leaf)
    bundle = json.loads(sign(pki))
    der = signature._b64(leaf.der)
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": der}, "tlogEntries": []}
    sig = json.dumps(bundle).encode()
    assert verify_signature(sig, policy(pki), name="security-scan", now=NOW).certificate


def test_too_many_certificates_are_refused() -> None:
    pki = make_pki()
    sig = signature.sign(
        subject_name="s",
        resources=RESOURCES,
        private_key=pki.leaf.key,
        certificate_chain=(pki.leaf.der,) + (pki.intermediate.der,) * 10,
    )
    with pytest.raises(TamperedError, match="carries 11 certificates"):
        verify_signature(sig, policy(pki), name="security-scan", now=NOW)


def test_channel_documents_signed_with_a_certificate() -> None:
    pki = make_pki()
    doc = Channel(
        name="security-scan",
        channel="stable",
        version="1.0.0",
        manifest_digest=Digest.of(b"{}"),
        issued=NOW,
        expires=NOW + timedelta(days=1),
        sequence=1,
    )
    # promote signs with keys only; documents signed with a certificate verify all the same.
    data = signature.sign_envelope(
        CHANNEL_PAYLOAD_TYPE, doc.payload(), private_key=pki.leaf.key, certificate_chain=pki.chain
    )
    got, hint = check_channel_document(
        data, policy(pki).policy, name="security-scan", channel="stable", now=NOW
    )
    assert got == doc
    assert hint == signature.key_hint(pki.leaf.key.public_key())
    with pytest.raises(UntrustedError, match="does not lead to a trusted CA"):
        check_channel_document(
            data, policy(make_pki()).policy, name="security-scan", channel="stable", now=NOW
        )


def test_policy_round_trips_with_cas() -> None:
    pki = make_pki()
    trusted = policy(pki, identities=(f"email:{EMAIL}", "subject:CN=a,O=b"), revoked=True)
    again = parse_policy(render_policy(trusted.policy), source="t.toml")
    assert again.cas["corp"] == trusted.policy.cas["corp"]
    assert again.cas["corp"].identities == (
        Identity("email", EMAIL),
        Identity("subject", "CN=a,O=b"),
    )
    assert again.rules == trusted.policy.rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nmodels = "*"\ncas = ["nope"]\n', "names unknown CA 'nope'"),
        ("[cas.corp]\npem = 'x'\n", "not a PEM certificate"),
        ("[cas.corp]\npem = LEAF\n", "is not a CA certificate"),
        ("[cas.corp]\npem = ROOT\nidentities = ['dns:example.com']\n", "invalid identity"),
        ("[cas.corp]\npem = ROOT\nidentities = 'email:a@b'\n", "optionally identities"),
        ("[cas.corp]\npem = ROOT\n[keys.corp]\npem = KEY\n", "names both a key and a CA"),
        ('[[rules]]\nmodels = "*"\n', 'needs models = "GLOB" and keys'),
    ],
)
def test_bad_ca_entries_are_usage_errors(text: str, message: str) -> None:
    pki = make_pki()
    key = encode_public_key(pki.leaf.key.public_key())
    text = (
        text.replace("ROOT", toml_string(pki.root.pem))
        .replace("LEAF", toml_string(pki.leaf.pem))
        .replace("KEY", toml_string(key))
    )
    with pytest.raises(UsageError, match=message):
        parse_policy(text, source="t.toml")


def test_identity_grammar() -> None:
    assert str(Identity.parse("uri:https://a/b:c")) == "uri:https://a/b:c"
    for bad in ("email", "email:", ":x", "EMAIL:a@b"):
        with pytest.raises(UsageError, match="invalid identity"):
            Identity.parse(bad)
