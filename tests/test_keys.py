"""Key files: cosign.key written and read, openssl keys read, passwords found."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from nacl.secret import SecretBox

from packager._io.keys import (
    encode_cosign_private_key,
    encode_public_key,
    generate_private_key,
    key_hint,
    keygen,
    load_private_key,
    load_public_key,
    password_from_environment,
)
from packager.errors import KeyDecryptionError, UsageError

PASSWORD = b"correct horse"

# A fixed key pair made here once, for parametrized cases that need PEM bytes up front.
_FIXED = generate_private_key()
FIXED_PUB = encode_public_key(_FIXED.public_key())
FIXED_KEY = encode_cosign_private_key(_FIXED, b"", salt=b"\x01" * 32, nonce=b"\x02" * 24)


def never() -> bytes:
    raise AssertionError("the password was asked for an unencrypted key")


class CountingPassword:
    def __init__(self, password: bytes) -> None:
        self.password = password
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.password


def spki(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cosign_body(pem: bytes) -> dict[str, object]:
    lines = pem.decode().strip().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    body: dict[str, object] = json.loads(base64.b64decode("".join(lines[1:-1])))
    return body


def independent_decrypt(pem: bytes, password: bytes) -> ec.EllipticCurvePrivateKey:
    """Open a cosign.key with scrypt and secretbox directly, not through packager."""
    body = cosign_body(pem)
    kdf, cipher = body["kdf"], body["cipher"]
    assert isinstance(kdf, dict)
    assert isinstance(cipher, dict)
    kek = hashlib.scrypt(
        password,
        salt=base64.b64decode(kdf["salt"]),
        n=kdf["params"]["N"],
        r=kdf["params"]["r"],
        p=kdf["params"]["p"],
        dklen=32,
        maxmem=1 << 28,
    )
    assert isinstance(body["ciphertext"], str)
    der = SecretBox(kek).decrypt(
        base64.b64decode(body["ciphertext"]), base64.b64decode(cipher["nonce"])
    )
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def cosign_pem(body: dict[str, object], label: str = "ENCRYPTED SIGSTORE PRIVATE KEY") -> bytes:
    encoded = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


# --- cosign.key ------------------------------------------------------------------


def test_keygen_writes_a_cosign_key_pair(tmp_path: Path) -> None:
    out = tmp_path / "new" / "keys"
    key_path, pub_path = keygen(out, password=PASSWORD)
    assert (key_path, pub_path) == (out / "cosign.key", out / "cosign.pub")
    assert sorted(p.name for p in out.iterdir()) == ["cosign.key", "cosign.pub"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    pem = key_path.read_bytes()
    private = independent_decrypt(pem, PASSWORD)
    public = serialization.load_pem_public_key(pub_path.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(private.curve, ec.SECP256R1)
    assert spki(private) == spki(public)
    assert spki(load_private_key(key_path, password=lambda: PASSWORD)) == spki(public)


def test_cosign_key_layout_matches_cosign(tmp_path: Path) -> None:
    key_path, _ = keygen(tmp_path, password=PASSWORD)
    pem = key_path.read_bytes()
    lines = pem.decode().splitlines()
    assert all(len(line) == 64 for line in lines[1:-2])
    body = base64.b64decode("".join(lines[1:-1])).decode()
    assert re.fullmatch(
        r'\{"kdf":\{"name":"scrypt","params":\{"N":65536,"r":8,"p":1\},"salt":"[A-Za-z0-9+/=]{44}"\},'
        r'"cipher":\{"name":"nacl/secretbox","nonce":"[A-Za-z0-9+/=]{32}"\},'
        r'"ciphertext":"[A-Za-z0-9+/=]+"\}',
        body,
    )


def test_legacy_cosign_label_and_other_scrypt_costs_load(tmp_path: Path) -> None:
    key = generate_private_key()
    pem = encode_cosign_private_key(key, PASSWORD)
    legacy = pem.replace(b"SIGSTORE", b"COSIGN")
    (tmp_path / "legacy.key").write_bytes(legacy)
    assert spki(load_private_key(tmp_path / "legacy.key", password=lambda: PASSWORD)) == spki(key)

    # N = 2^15, encrypted here without packager.
    salt, nonce = b"s" * 32, b"n" * 24
    kek = hashlib.scrypt(PASSWORD, salt=salt, n=1 << 15, r=8, p=1, dklen=32, maxmem=1 << 27)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    body = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": 1 << 15, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(SecretBox(kek).encrypt(der, nonce).ciphertext).decode(),
    }
    (tmp_path / "cheap.key").write_bytes(cosign_pem(body))
    assert spki(load_private_key(tmp_path / "cheap.key", password=lambda: PASSWORD)) == spki(key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["kdf"]["params"].update(N=1 << 30), "scrypt parameters"),
        (lambda b: b["kdf"]["params"].update(N=65536.0), "scrypt parameters"),
        (lambda b: b["kdf"]["params"].update(r=16), "scrypt parameters"),
        (lambda b: b["kdf"].update(name="argon2"), "argon2"),
        (lambda b: b["cipher"].update(name="aes-gcm"), "aes-gcm"),
        (lambda b: b["cipher"].update(nonce="AAAA"), "nonce"),
        (lambda b: b.pop("ciphertext"), "malformed"),
        (lambda b: b.update(kdf=[]), "malformed"),
        (lambda b: b["kdf"].update(salt="%%%"), "malformed"),
    ],
)
def test_malformed_cosign_keys_are_usage_errors(
    tmp_path: Path, change: object, message: str
) -> None:
    body = cosign_body(encode_cosign_private_key(generate_private_key(), PASSWORD))
    assert callable(change)
    change(body)
    path = tmp_path / "cosign.key"
    path.write_bytes(cosign_pem(body))
    with pytest.raises(UsageError, match=message):
        load_private_key(path, password=never)


def test_wrong_password_is_a_decryption_error(tmp_path: Path) -> None:
    key_path, _ = keygen(tmp_path, password=PASSWORD)
    password = CountingPassword(b"wrong")
    with pytest.raises(KeyDecryptionError) as caught:
        load_private_key(key_path, password=password)
    assert password.calls == 1
    assert str(caught.value) == (
        "cannot decrypt cosign.key: wrong password (set PACKAGER_KEY_PASSWORD or COSIGN_PASSWORD)"
    )
    assert caught.value.exit_code == 3


def test_password_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path, _ = keygen(tmp_path, password=PASSWORD)
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", PASSWORD.decode())
    assert spki(load_private_key(key_path)) == spki(load_public_key(tmp_path / "cosign.pub"))


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = keygen(tmp_path, password=PASSWORD)
    before = key_path.read_bytes(), pub_path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        keygen(tmp_path, password=PASSWORD)
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before

    pub_path.unlink()  # a lone cosign.key is still protected
    with pytest.raises(UsageError, match=r"cosign\.key already exists"):
        keygen(tmp_path, password=PASSWORD)

    keygen(tmp_path, password=PASSWORD, force=True)
    assert key_path.read_bytes() != before[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cosign.key", "cosign.pub"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_keygen_into_an_unwritable_place_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(UsageError, match="cannot write"):
        keygen(tmp_path / "file" / "keys", password=PASSWORD)


def test_key_hint_is_sha256_of_the_pem_spki() -> None:
    key = generate_private_key()
    pem = encode_public_key(key.public_key())
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert key_hint(key.public_key()) == hashlib.sha256(pem).hexdigest()


# --- PEM keys from openssl and elsewhere ------------------------------------------


def openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is required in CI: apt-get install openssl")
        pytest.skip("openssl is not installed: apt-get install openssl")
    subprocess.run([exe, *args], check=True, capture_output=True, timeout=60)


def openssl_public(tmp_path: Path, private: Path, *passin: str) -> ec.EllipticCurvePublicKey:
    out = tmp_path / "expected.pub"
    openssl("pkey", "-in", str(private), *passin, "-pubout", "-out", str(out))
    return load_public_key(out)


@pytest.mark.parametrize(
    "args",
    [
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        # Without -noout an EC PARAMETERS block comes first.
        ["ecparam", "-name", "prime256v1", "-genkey"],
        ["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ],
    ids=["sec1", "sec1-with-parameters", "sec1-p384", "pkcs8"],
)
def test_plain_openssl_keys_load(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "k.pem"
    openssl(*args, "-out", str(path))
    key = load_private_key(path, password=never)
    assert spki(key) == spki(openssl_public(tmp_path, path))


def test_encrypted_openssl_keys_load(tmp_path: Path) -> None:
    pkcs8 = tmp_path / "pkcs8.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-aes256", "-pass", "pass:secret", "-out", str(pkcs8))  # fmt: skip
    sec1 = tmp_path / "sec1.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "p.pem"))
    openssl("ec", "-in", str(tmp_path / "p.pem"), "-aes256", "-passout", "pass:secret",
            "-out", str(sec1))  # fmt: skip
    assert b"ENCRYPTED PRIVATE KEY" in pkcs8.read_bytes()
    assert b"Proc-Type: 4,ENCRYPTED" in sec1.read_bytes()

    for path in (pkcs8, sec1):
        password = CountingPassword(b"secret")
        key = load_private_key(path, password=password)
        assert spki(key) == spki(openssl_public(tmp_path, path, "-passin", "pass:secret"))
        assert password.calls == 1
        with pytest.raises(KeyDecryptionError, match=f"cannot decrypt {path.name}"):
            load_private_key(path, password=lambda: b"wrong")
        with pytest.raises(KeyDecryptionError):
            load_private_key(path, password=lambda: b"")


def pem_private(key: object, form: serialization.PrivateFormat) -> bytes:
    assert isinstance(
        key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    )
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (
            pem_private(rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.PKCS8),
            "not an ECDSA key",
        ),
        (
            pem_private(
                rsa.generate_private_key(65537, 2048),
                serialization.PrivateFormat.TraditionalOpenSSL,
            ),
            "no supported private key",
        ),
        (
            pem_private(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8),
            "not an ECDSA key",
        ),
        (
            pem_private(ec.generate_private_key(ec.SECP256K1()), serialization.PrivateFormat.PKCS8),
            "secp256k1",
        ),
        (FIXED_PUB, "is a public key"),
        (b"hello", "not a PEM file"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "malformed"),
    ],
    ids=["rsa-pkcs8", "rsa-traditional", "ed25519", "secp256k1", "public", "text", "garbage"],
)
def test_unsupported_private_keys_are_usage_errors(
    tmp_path: Path, pem: bytes, message: str
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    with pytest.raises(UsageError, match=message) as caught:
        load_private_key(path, password=never)
    assert caught.value.exit_code == 2


def test_missing_key_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read key file"):
        load_private_key(tmp_path / "nope.key", password=never)
    with pytest.raises(UsageError, match="cannot read key file"):
        load_public_key(tmp_path / "nope.pub")


# --- cosign.pub -------------------------------------------------------------------


def test_load_public_key(tmp_path: Path) -> None:
    path = tmp_path / "cosign.pub"
    path.write_bytes(FIXED_PUB)
    assert encode_public_key(load_public_key(path)) == FIXED_PUB


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (FIXED_KEY, "is a private key; pass the .pub file"),
        (
            pem_private(generate_private_key(), serialization.PrivateFormat.PKCS8),
            "is a private key; pass the .pub file",
        ),
        (
            rsa.generate_private_key(65537, 2048)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not an ECDSA public key",
        ),
        (
            ec.generate_private_key(ec.SECP256K1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "secp256k1",
        ),
        (b"not a key", "not a PEM public key"),
    ],
    ids=["cosign-key", "pkcs8", "rsa", "secp256k1", "text"],
)
def test_bad_public_keys_are_usage_errors(tmp_path: Path, pem: bytes, message: str) -> None:
    path = tmp_path / "cosign.pub"
    path.write_bytes(pem)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_public_key(path)


# --- passwords --------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_environment_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", "packager")
    monkeypatch.setenv("COSIGN_PASSWORD", "cosign")
    assert password_from_environment() == b"packager"

    monkeypatch.delenv("PACKAGER_KEY_PASSWORD")
    assert password_from_environment() == b"cosign"

    # An empty value is a password (the empty one), not "unset".
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert password_from_environment() == b""
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", "")
    monkeypatch.setenv("COSIGN_PASSWORD", "cosign")
    assert password_from_environment() == b""

    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", "pässwörd")
    assert password_from_environment() == "pässwörd".encode()


def test_no_password_source_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACKAGER_KEY_PASSWORD", raising=False)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as caught:
        password_from_environment()
    assert str(caught.value) == "no key password: set PACKAGER_KEY_PASSWORD (or COSIGN_PASSWORD)"


def test_password_prompt_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACKAGER_KEY_PASSWORD", raising=False)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", Terminal())
    answers = iter(["typed", "typed", "first", "second"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert password_from_environment(confirm=True) == b"typed"
    assert len(prompts) == 2
    with pytest.raises(UsageError, match="differ"):
        password_from_environment(confirm=True)
