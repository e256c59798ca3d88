"""Signing keys on disk: cosign-compatible ``cosign.key``/``cosign.pub``, PEM keys.

``cosign.key`` is a PEM block labelled ``ENCRYPTED SIGSTORE PRIVATE KEY`` whose
body is JSON: the key's PKCS#8 DER sealed with NaCl secretbox under a key
derived from the password with scrypt. ``cosign.pub`` is the PEM
SubjectPublicKeyInfo. Plain PEM private keys (PKCS#8, encrypted PKCS#8, SEC1
``EC PRIVATE KEY``) are read too, so keys made with openssl work as they are.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.fs import atomic_write
from packager.core.jsonio import loads
from packager.core.policy import load_pem_public_key
from packager.core.signature import SUPPORTED_CURVES
from packager.core.signature import key_hint as key_hint
from packager.errors import KeyDecryptionError, UsageError

PRIVATE_KEY_FILE = "cosign.key"
PUBLIC_KEY_FILE = "cosign.pub"

COSIGN_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
# Keys written by older cosign releases carry this label over the same body.
LEGACY_COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
_PEM_PRIVATE_LABELS = frozenset({"PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"})

_SCRYPT_N = 1 << 16
_SCRYPT_R = 8
_SCRYPT_P = 1
# The cost parameters cosign writes or has written. Anything else is refused
# rather than run: the parameters come from the file, and a huge N would make
# loading a key a memory and CPU bomb.
_ACCEPTED_SCRYPT_N = frozenset({1 << 15, 1 << 16, 1 << 17})
_SALT_BYTES = 32
_KEY_BYTES = 32
# NaCl secretbox's nonce (crypto_secretbox_NONCEBYTES). PyNaCl itself is imported only
# where a cosign.key is sealed or opened: verifying and installing never load it.
_NONCE_BYTES = 24

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_ENV_ADVICE = "set PACKAGER_KEY_PASSWORD or COSIGN_PASSWORD"


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def encode_cosign_private_key(
    key: ec.EllipticCurvePrivateKey,
    password: bytes,
    *,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``key`` with ``password`` into the bytes of a ``cosign.key``.

    ``salt`` (32 bytes) and ``nonce`` (24 bytes) are random unless given; give
    them only to reproduce a known file. The JSON body has cosign's field order
    and compact layout, so cosign reads the file as one of its own.

    Raises:
        UsageError: ``salt`` or ``nonce`` has the wrong length.
    """
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    nonce = secrets.token_bytes(_NONCE_BYTES) if nonce is None else nonce
    if len(salt) != _SALT_BYTES or len(nonce) != _NONCE_BYTES:
        raise UsageError(
            f"cosign.key needs a {_SALT_BYTES}-byte salt and a {_NONCE_BYTES}-byte nonce"
        )
    import nacl.secret

    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    box = nacl.secret.SecretBox(_derive_key(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P))
    ciphertext = box.encrypt(der, nonce).ciphertext
    body = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P},
            "salt": _b64(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    return _pem(COSIGN_LABEL, json.dumps(body, separators=(",", ":")).encode())


def encode_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The PEM SubjectPublicKeyInfo of ``key`` (the bytes of ``cosign.pub``)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keygen(out_dir: Path, *, password: bytes, force: bool = False) -> tuple[Path, Path]:
    """Write a new P-256 key pair as ``out_dir/cosign.key`` and ``out_dir/cosign.pub``.

    ``cosign.key`` is encrypted with ``password`` and readable by its owner
    only (0600). Each file is written to a temporary file, synced and renamed
    into place, so a crash leaves either the old file or the new one.

    Returns:
        The paths of the private and the public key.

    Raises:
        UsageError: either file exists and ``force`` is false, or the
            directory cannot be created or written.
    """
    private_path = out_dir / PRIVATE_KEY_FILE
    public_path = out_dir / PUBLIC_KEY_FILE
    if not force:
        for path in (private_path, public_path):
            if os.path.lexists(path):
                raise UsageError(f"{path} already exists; pass --force to overwrite it")
    key = generate_private_key()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Created 0600 and renamed into place: the private key is never readable by others.
        atomic_write(private_path, encode_cosign_private_key(key, password), mode=0o600)
        atomic_write(public_path, encode_public_key(key.public_key()), mode=0o644)
    except OSError as e:
        raise UsageError(f"cannot write the key pair to {out_dir}: {e.strerror or e}") from e
    return private_path, public_path


def load_private_key(
    path: Path, *, password: Callable[[], bytes] | None = None
) -> ec.EllipticCurvePrivateKey:
    """Read an ECDSA private key: ``cosign.key``, PKCS#8 PEM or SEC1 PEM.

    ``password`` is called only when the key is encrypted; when it is None,
    :func:`password_from_environment` is used.

    Raises:
        UsageError: the file is missing or unreadable, is not a private key
            this tool reads, is not an EC key, or uses an unsupported curve.
        KeyDecryptionError: the password is wrong (or the encrypted key is
            corrupt).
    """
    ask = password_from_environment if password is None else password
    blocks = _pem_blocks(_read(path))
    if not blocks:
        raise UsageError(f"{path} is not a PEM file: expected a private key such as cosign.key")
    for label, block, body in blocks:
        if label in (COSIGN_LABEL, LEGACY_COSIGN_LABEL):
            return _checked(_decrypt_cosign(path, body, ask), path)
        if label in _PEM_PRIVATE_LABELS:
            return _checked(_load_pem_private(path, label, block, ask), path)
    labels = ", ".join(label for label, _, _ in blocks)
    if any(label.endswith("PUBLIC KEY") for label, _, _ in blocks):
        raise UsageError(f"{path} is a public key; pass the private key (cosign.key)")
    raise UsageError(f"{path} holds no supported private key (found PEM {labels})")


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Read an ECDSA public key from a PEM SubjectPublicKeyInfo file (``cosign.pub``).

    Raises:
        UsageError: the file is missing or unreadable, is a private key, is
            not a PEM public key, is not an EC key, or uses an unsupported curve.
    """
    data = _read(path)
    labels = [label for label, _, _ in _pem_blocks(data)]
    if any(label.endswith("PRIVATE KEY") for label in labels):
        raise UsageError(f"{path} is a private key; pass the .pub file")
    return load_pem_public_key(data, where=str(path))


def load_certificate_chain(
    path: Path, *, private_key: ec.EllipticCurvePrivateKey
) -> tuple[bytes, ...]:
    """Read a PEM certificate chain, leaf first then intermediates, as DER for model.sig.

    The chain is the signer's claim: instances check it against the CAs they trust.
    Only that the leaf certifies ``private_key`` is checked here, so that a bundle
    is never signed with a key its certificate does not name.

    Raises:
        UsageError: unreadable, no PEM certificate, or a leaf for another key.
    """
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(_read(path))
    except (ValueError, x509.InvalidVersion) as e:
        raise UsageError(f"{path} is not a PEM certificate chain (leaf first): {e}") from e
    try:
        certified = certificates[0].public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UsageError(f"the first certificate in {path} holds no usable key: {e}") from e
    if certified != private_key.public_key():
        raise UsageError(
            f"the first certificate in {path} does not certify the signing key; "
            "put the signing key's certificate first, then its intermediates"
        )
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def password_from_environment(*, confirm: bool = False) -> bytes:
    """The key password: PACKAGER_KEY_PASSWORD, then COSIGN_PASSWORD, then a prompt.

    A variable set to the empty string counts as set (an empty password), as
    cosign treats it. The prompt appears only when stdin is a terminal; with
    ``confirm`` it asks twice and the answers must match.

    Raises:
        UsageError: no variable is set and stdin is not a terminal, or the two
            answers differ.
    """
    for name in ("PACKAGER_KEY_PASSWORD", "COSIGN_PASSWORD"):
        value = os.environ.get(name)
        if value is not None:
            # fsencode undoes the decoding os.environ applied: the exact bytes.
            return os.fsencode(value)
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("no key password: set PACKAGER_KEY_PASSWORD (or COSIGN_PASSWORD)")
    entered = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != entered:
        raise UsageError("the two passwords differ; try again")
    return entered.encode("utf-8")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read key file {path}: {e.strerror or e}") from e


def _pem_blocks(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(label, whole block, body) of each PEM block, in file order."""
    return [
        (match.group(1).decode("ascii"), match.group(0), match.group(2))
        for match in _PEM_BLOCK.finditer(data)
    ]


def _checked(key: object, path: Path) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{path} is not an ECDSA key; create one with `packager keygen`")
    if key.curve.name not in SUPPORTED_CURVES:
        raise UsageError(f"{path} uses curve {key.curve.name}; expected P-256, P-384 or P-521")
    return key


def _load_pem_private(path: Path, label: str, block: bytes, ask: Callable[[], bytes]) -> object:
    # Encrypted PKCS#8 has its own label; encrypted SEC1 (openssl ec -aes256)
    # says so in a Proc-Type header inside the block.
    encrypted = label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
    password = ask() if encrypted else None
    try:
        return serialization.load_pem_private_key(block, password)
    except UnsupportedAlgorithm as e:
        raise UsageError(f"{path} holds a key of an unsupported type") from e
    # TypeError: the key is encrypted and the password is empty, which the
    # PEM reader treats as no password at all.
    except (ValueError, TypeError) as e:
        if encrypted:
            raise KeyDecryptionError(_wrong_password(path)) from e
        raise UsageError(f"{path} holds a malformed or encrypted {label}") from e


def _decrypt_cosign(path: Path, body: bytes, ask: Callable[[], bytes]) -> object:
    try:
        document = loads(
            base64.b64decode(b"".join(body.split()), validate=True),
            what=f"{path} (a cosign key)",
            error=UsageError,
        )
        kdf, cipher = document["kdf"], document["cipher"]
        params = kdf["params"]
        n, r, p = params["N"], params["r"], params["p"]
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(document["ciphertext"], validate=True)
        names = (kdf["name"], cipher["name"])
    # Whatever shape the JSON has, a missing or mistyped field lands here.
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path} is a malformed cosign key") from e
    if not all(type(value) is int for value in (n, r, p)):
        raise UsageError(f"{path} is a malformed cosign key (scrypt parameters)")
    if names != ("scrypt", "nacl/secretbox"):
        raise UsageError(f"{path} uses {names[0]}/{names[1]}; only scrypt/nacl/secretbox is read")
    if n not in _ACCEPTED_SCRYPT_N or r != _SCRYPT_R or p != _SCRYPT_P:
        raise UsageError(f"{path} has unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != _NONCE_BYTES or not salt:
        raise UsageError(f"{path} is a malformed cosign key (salt or nonce size)")
    import nacl.exceptions
    import nacl.secret

    box = nacl.secret.SecretBox(_derive_key(ask(), salt, n, r, p))
    try:
        der = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as e:
        raise KeyDecryptionError(_wrong_password(path)) from e
    try:
        return serialization.load_der_private_key(der, None)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UsageError(f"{path} decrypts to something that is not a private key") from e


def _derive_key(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # scrypt needs a little over 128*r*N bytes (64 MiB at N=2^16), above
    # hashlib's 32 MiB default cap; allow twice that.
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=256 * r * n)


def _wrong_password(path: Path) -> str:
    return f"cannot decrypt {path.name}: wrong password ({_ENV_ADVICE})"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem(label: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return b"\n".join(
        [f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""]
    )
