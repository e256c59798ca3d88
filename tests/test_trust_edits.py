"""Edits to the trust policy stick and are audited: adding a revoked key again does not
trust it (only `trust unrevoke` does), every change is in the audit log with its fields,
and keys and CAs are stored as packager serialises them, never as the file's bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from packager.core.signature import key_hint
from packager.instance.trust import read_policy

from .certs import make_pki
from .conftest import KeyPair, cli

JUNK = b"# exported from the key vault, 2026-12-01\nowner: ml-platform\n"


@pytest.fixture
def pki_files(tmp_path: Path) -> dict[str, Path]:
    return make_pki().write(tmp_path / "pki")


def trust_log(capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    code, out, err = cli(capsys, "log", "--json")
    assert code == 0, err
    return [e for e in json.loads(out) if e["action"] == "trust"]


def test_a_revoked_key_stays_revoked_until_unrevoked(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    policy = home / "trust.toml"
    assert cli(capsys, "trust", "add-key", "platform", keypair.pub_path)[0] == 0
    assert cli(capsys, "trust", "add-key", "partner", other_keypair.pub_path)[0] == 0
    assert cli(capsys, "trust", "revoke", "platform")[0] == 0
    written = policy.read_bytes()

    for name in ("platform", "platform-2"):  # the same name, or the same key renamed
        code, out, err = cli(capsys, "trust", "add-key", name, keypair.pub_path)
        assert (code, out) == (2, "")
        assert "'platform' is revoked" in err
        assert "`packager trust unrevoke platform`" in err
        assert policy.read_bytes() == written
    assert [key_hint(k) for k in read_policy(policy).keys_for("iris")] == [
        key_hint(other_keypair.public)
    ]

    code, _, err = cli(capsys, "trust", "unrevoke", "platform")
    assert code == 0, err
    assert {key_hint(k) for k in read_policy(policy).keys_for("iris")} == {
        key_hint(keypair.public),
        key_hint(other_keypair.public),
    }
    code, _, err = cli(capsys, "trust", "unrevoke", "partner")
    assert code == 2 and "'partner' is not revoked" in err
    code, _, err = cli(capsys, "trust", "unrevoke", "nobody")
    assert code == 2 and "no key or CA named 'nobody'" in err


def test_every_trust_change_is_in_the_audit_log(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    keypair: KeyPair,
    pki_files: dict[str, Path],
) -> None:
    hint = key_hint(keypair.public)
    steps = [
        ("add-key", "platform", keypair.pub_path, "--models", "security-*"),
        ("revoke", "platform"),
        ("unrevoke", "platform"),
        ("minimum", "security-scan@2.0.0"),
        ("minimum", "security-scan@2.1.0"),
        ("add-ca", "corp", pki_files["root.pem"], "--identity", "email:ml@example.com"),
        ("revoke", "corp"),
    ]
    for step in steps:
        code, _, err = cli(capsys, "trust", *step)
        assert code == 0, err
    entries = trust_log(capsys)
    assert [e["outcome"] for e in entries] == [s[0] for s in steps]
    policy = f"file={home.absolute() / 'trust.toml'}"
    root = x509.load_pem_x509_certificate(pki_files["root.pem"].read_bytes())
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    assert [e["detail"] for e in entries] == [
        f"{policy} key=platform sha256={hint} models=security-*",
        f"{policy} key=platform sha256={hint}",
        f"{policy} key=platform sha256={hint}",
        f"{policy} model=security-scan minimum=2.0.0 previous=-",
        f"{policy} model=security-scan minimum=2.1.0 previous=2.0.0",
        f"{policy} ca=corp sha256={fingerprint} models=* identities=email:ml@example.com",
        f"{policy} ca=corp sha256={fingerprint}",
    ]
    assert (entries[4]["name"], entries[4]["version"]) == ("security-scan", "2.1.0")
    # A refused edit changes nothing and is no trust change.
    assert cli(capsys, "trust", "add-key", "platform", pki_files["root.pem"])[0] == 2
    assert len(trust_log(capsys)) == len(steps)


def test_keys_and_cas_are_stored_reserialised_not_as_the_files_bytes(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    keypair: KeyPair,
    pki_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    noisy_key = tmp_path / "noisy.pub"
    noisy_key.write_bytes(JUNK + keypair.pub_path.read_bytes() + b"trailing text\n")
    noisy_ca = tmp_path / "noisy-ca.pem"
    noisy_ca.write_bytes(JUNK + pki_files["root.pem"].read_bytes() + b"trailing text\n")
    assert cli(capsys, "trust", "add-key", "platform", noisy_key)[0] == 0
    assert cli(capsys, "trust", "add-ca", "corp", noisy_ca)[0] == 0

    text = (home / "trust.toml").read_text()
    assert "key vault" not in text and "owner:" not in text and "trailing" not in text
    policy = read_policy(home / "trust.toml")
    assert policy.keys["platform"].pem == keypair.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert serialization.load_pem_public_key(policy.keys["platform"].pem) == keypair.public
    root = x509.load_pem_x509_certificate(pki_files["root.pem"].read_bytes())
    assert policy.cas["corp"].pem == root.public_bytes(serialization.Encoding.PEM)
    assert x509.load_pem_x509_certificate(policy.cas["corp"].pem) == root
