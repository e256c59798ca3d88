"""Certificate chains: signing certificates issued by a trusted CA (pure).

A signer may carry a certificate chain instead of a bare key (``model_signing sign
certificate``): the leaf certificate holds the signing key, intermediates follow it, and
the instance trusts a CA. :func:`verify_chain` decides whether such a chain is trusted:

1. the path leaf -> intermediates -> a trusted CA is built and checked by
   ``cryptography.x509.verification`` (RFC 5280: signatures, validity at ``now``,
   basicConstraints CA:true and pathLen on every issuer, name constraints, no unknown
   critical extension);
2. the leaf must have keyUsage digitalSignature, and an extendedKeyUsage, when it has one,
   must include codeSigning (or anyExtendedKeyUsage); an issuer's extendedKeyUsage, when
   present, must allow codeSigning too;
3. the path must not pass through the key of a revoked CA;
4. the leaf must match one of the CA's identity constraints, if it has any
   (:class:`Identity`).

The leaf's key then verifies the signature (:mod:`packager.core.signature`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.signature import SUPPORTED_CURVES
from packager.errors import TamperedError, UntrustedError, UsageError

# cryptography.x509 costs more to import than the rest of what checks a signature: it is
# imported by the functions that read certificates, not by every verify of a key's
# signature.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509 import verification

# A leaf, its intermediates and the CA: deeper enterprise hierarchies are rare.
MAX_CHAIN_DEPTH = 8
MAX_CERTIFICATES = 10

IdentityKind = Literal["email", "uri", "subject"]
IDENTITY_KINDS: tuple[IdentityKind, ...] = ("email", "uri", "subject")


@dataclass(frozen=True)
class Identity:
    """Who a leaf certificate must name, matched exactly (case-sensitive).

    - ``email:ml-release@example.com``: a Subject Alternative Name rfc822Name;
    - ``uri:https://ci.example.com/ml/release``: a Subject Alternative Name URI;
    - ``subject:CN=ml-release,O=Example Corp``: the whole subject DN, as RFC 4514 writes it
      (most specific attribute first, as ``openssl x509 -nameopt RFC2253`` shows it).
    """

    kind: IdentityKind
    value: str

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Raises UsageError unless ``text`` is ``KIND:VALUE`` with a known kind."""
        kind, sep, value = text.partition(":")
        if not sep or not value or kind not in IDENTITY_KINDS:
            raise UsageError(
                f"invalid identity {text!r}: use email:ADDRESS, uri:URI or subject:DN "
                "(e.g. subject:CN=ml-release,O=Example Corp)"
            )
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def matches(self, leaf: x509.Certificate) -> bool:
        """Whether ``leaf`` names this identity (a name that does not parse never does)."""
        from cryptography import x509

        try:
            if self.kind == "subject":
                return leaf.subject.rfc4514_string() == self.value
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (x509.ExtensionNotFound, ValueError):
            return False
        kind = x509.RFC822Name if self.kind == "email" else x509.UniformResourceIdentifier
        return self.value in names.get_values_for_type(kind)


@dataclass(frozen=True)
class TrustedCA:
    """A CA certificate trusted to certify signers, optionally only signers it names."""

    name: str
    pem: bytes
    certificate: x509.Certificate = field(repr=False, compare=False)
    identities: tuple[Identity, ...] = ()
    revoked: bool = False

    @property
    def fingerprint(self) -> str:
        """Hex sha256 of the certificate's DER bytes."""
        return hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()

    def admits(self, leaf: x509.Certificate) -> bool:
        """Whether ``leaf`` matches one of the identity constraints (none: every leaf)."""
        return not self.identities or any(identity.matches(leaf) for identity in self.identities)


@dataclass(frozen=True)
class CertifiedSigner:
    """A verified chain: the leaf certificate and the trusted CA it leads to."""

    leaf: x509.Certificate
    ca: TrustedCA

    def describe(self) -> str:
        """The leaf's identities and the CA, for messages and the audit log."""
        return f"certificate {describe_leaf(self.leaf)} issued under CA {self.ca.name}"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The leaf's key, which must be ECDSA on a curve signatures use.

        Raises:
            UntrustedError: another kind of key or curve.
        """
        try:
            key = self.leaf.public_key()
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
            raise UntrustedError(
                f"signing certificate {describe_leaf(self.leaf)} does not hold an ECDSA "
                "P-256, P-384 or P-521 key"
            )
        return key


def load_ca_certificate(pem: bytes, *, where: str) -> x509.Certificate:
    """One PEM certificate that may issue certificates (basicConstraints CA:true).

    Raises:
        UsageError: not exactly one PEM certificate, or not a CA certificate.
    """
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion) as e:
        raise UsageError(f"{where}: not a PEM certificate ({e})") from e
    if len(certificates) != 1:
        raise UsageError(
            f"{where}: holds {len(certificates)} certificates; give one CA certificate"
        )
    certificate = certificates[0]
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise UsageError(f"{where}: {certificate.subject.rfc4514_string()} is not a CA certificate")
    return certificate


def parse_chain(ders: Sequence[bytes], *, what: str) -> list[x509.Certificate]:
    """The certificates of a signature's chain, leaf first.

    Raises:
        TamperedError: no certificate, too many, or one that is not DER X.509.
    """
    from cryptography import x509

    if not ders or len(ders) > MAX_CERTIFICATES:
        raise TamperedError(
            f"{what} carries {len(ders)} certificates; expected 1 to {MAX_CERTIFICATES}"
        )
    certificates = []
    for index, der in enumerate(ders):
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except (ValueError, x509.InvalidVersion) as e:
            raise TamperedError(f"{what}: certificate {index} is not DER X.509 ({e})") from e
    return certificates


def verify_chain(
    chain: Sequence[x509.Certificate],
    cas: Sequence[TrustedCA],
    *,
    revoked: Sequence[TrustedCA] = (),
    now: datetime,
    what: str,
) -> CertifiedSigner:
    """Check that ``chain`` (leaf first) leads to one of ``cas`` and satisfies its
    constraints, at time ``now``; see the module docstring for every rule.

    Raises:
        UsageError: ``cas`` is empty.
        UntrustedError: the chain leads to no CA in ``cas`` (or is invalid: expired,
            wrong key usage, an issuer that is no CA, ...), passes through a revoked CA,
            or its leaf matches none of the CA's identity constraints.
    """
    from cryptography.x509 import verification

    if not cas:
        raise UsageError(f"no trusted CA to verify {what} with")
    leaf, intermediates = chain[0], list(chain[1:])
    anchors = [ca.certificate for ca in cas]
    try:
        verified = _verifier(anchors, now).verify(leaf, intermediates)
    except (verification.VerificationError, ValueError) as e:
        refusal = _revoked_refusal(leaf, intermediates, revoked, now, what)
        raise refusal or UntrustedError(
            f"{what} is signed with certificate {describe_leaf(leaf)}, whose chain does not "
            f"lead to a trusted CA ({', '.join(ca.name for ca in cas)}) at {_when(now)}: {e}"
        ) from None
    path_keys = {_spki(c) for c in verified.chain}
    for ca in revoked:
        if _spki(ca.certificate) in path_keys:
            raise _revoked_error(ca, what)
    anchor = _spki(verified.chain[-1])
    candidates = [ca for ca in cas if _spki(ca.certificate) == anchor]
    for ca in candidates:
        if ca.admits(leaf):
            return CertifiedSigner(leaf, ca)
    wanted = ", ".join(str(i) for ca in candidates for i in ca.identities)
    raise UntrustedError(
        f"{what} is signed with certificate {describe_leaf(leaf)}, which CA "
        f"{candidates[0].name} issued but the trust policy accepts only {wanted}"
    )


def revoked_in_chain(
    chain: Sequence[x509.Certificate], revoked: Sequence[TrustedCA]
) -> TrustedCA | None:
    """The first of ``revoked`` that a chain (leaf first) holds or that issued one of its
    certificates, whatever the time: for refusing a signature already verified once."""
    for ca in revoked:
        key = _spki(ca.certificate)
        for certificate in chain:
            if _spki(certificate) == key or _issued_by(certificate, ca.certificate):
                return ca
    return None


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def describe_leaf(leaf: x509.Certificate) -> str:
    """The leaf's SAN emails and URIs, else its subject DN (for messages)."""
    from cryptography import x509

    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [f"email:{v}" for v in names.get_values_for_type(x509.RFC822Name)]
        sans += [f"uri:{v}" for v in names.get_values_for_type(x509.UniformResourceIdentifier)]
        text = ", ".join(sans) if sans else f"subject:{leaf.subject.rfc4514_string()}"
    except (x509.ExtensionNotFound, ValueError):
        try:
            text = f"subject:{leaf.subject.rfc4514_string()}"
        except ValueError:
            text = "with an unreadable subject"
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _verifier(anchors: list[x509.Certificate], now: datetime) -> verification.ClientVerifier:
    from cryptography import x509
    from cryptography.x509 import verification

    ee = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _check_leaf_usage)
        .may_be_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _check_signing_purpose
        )
        # Code-signing certificates often name their holder in the subject DN only.
        .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    )
    ca = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _check_signing_purpose
    )
    return (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )


def _check_leaf_usage(
    _policy: verification.Policy, _cert: x509.Certificate, usage: x509.KeyUsage
) -> None:
    if not usage.digital_signature:
        raise ValueError("the signing certificate's keyUsage lacks digitalSignature")


def _check_signing_purpose(
    _policy: verification.Policy, _cert: x509.Certificate, usage: x509.ExtendedKeyUsage | None
) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    signing = {ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if usage is not None and not signing & set(usage):
        raise ValueError("extendedKeyUsage does not allow codeSigning")


def _revoked_refusal(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    revoked: Sequence[TrustedCA],
    now: datetime,
    what: str,
) -> UntrustedError | None:
    """Name the revoked CA a chain leads to, when that is why it is not trusted."""
    from cryptography.x509 import verification

    for ca in revoked:
        try:
            _verifier([ca.certificate], now).verify(leaf, intermediates)
        except (verification.VerificationError, ValueError):
            continue
        return _revoked_error(ca, what)
    return None


def _revoked_error(ca: TrustedCA, what: str) -> UntrustedError:
    return UntrustedError(
        f"{what} was signed under the revoked CA {ca.name!r}; ask the publisher for a "
        "version signed under a current CA"
    )


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _when(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
