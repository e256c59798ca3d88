"""A small PKI made in the test: root CA -> intermediate CA -> signing (leaf) certificate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(UTC).replace(microsecond=0)
EMAIL = "ml-release@example.com"
URI = "https://ci.example.com/ml/release"


def name(common_name: str, org: str = "Example Corp") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    subject: str,
    issuer: Issued | None = None,
    *,
    ca: bool,
    path_length: int | None = None,
    key_usage: str = "default",
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    sans: Sequence[x509.GeneralName] = (
        x509.RFC822Name(EMAIL),
        x509.UniformResourceIdentifier(URI),
    ),
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
) -> Issued:
    """A certificate for a new P-256 key; self-signed without ``issuer``.

    ``key_usage``: "default" (keyCertSign+cRLSign for a CA, digitalSignature for a leaf),
    or "no-digital-signature" (keyEncipherment only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.certificate.subject if issuer else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    sign_leaf = key_usage == "default" and not ca
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=sign_leaf,
            content_commitment=False,
            key_encipherment=not ca and not sign_leaf,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if not ca:
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def chain(self) -> tuple[bytes, ...]:
        """What a signature carries: DER, leaf first, then the intermediate."""
        return (self.leaf.der, self.intermediate.der)

    def write(self, directory: Path) -> dict[str, Path]:
        """root.pem, chain.pem (leaf + intermediate), leaf.pem, intermediate.pem, leaf.key."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "root.pem": self.root.pem,
            "intermediate.pem": self.intermediate.pem,
            "leaf.pem": self.leaf.pem,
            "chain.pem": self.leaf.pem + self.intermediate.pem,
            "leaf.key": self.leaf.key_pem,
        }
        for file, data in files.items():
            (directory / file).write_bytes(data)
        return {file: directory / file for file in files}


def make_pki(**leaf_options: object) -> Pki:
    """root -> intermediate (pathLen 0) -> leaf; ``leaf_options`` go to :func:`issue`."""
    root = issue("Example Root CA", ca=True)
    intermediate = issue("Example Signing CA", root, ca=True, path_length=0)
    leaf = issue("ml-release", intermediate, ca=False, **leaf_options)  # type: ignore[arg-type]
    return Pki(root, intermediate, leaf)
