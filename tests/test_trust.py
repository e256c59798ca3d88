from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.signature import key_hint
from packager.errors import UntrustedError, UsageError
from packager.instance.trust import add_key, read_policy, resolve_policy, revoke_key, set_minimum

from .conftest import KeyPair


def test_add_revoke_and_minimum(tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair) -> None:
    path = tmp_path / "trust.toml"
    add_key(path, "platform", keypair.pub_path, models="security-*")
    add_key(path, "partner", other_keypair.pub_path)
    policy = read_policy(path)
    assert {key_hint(k) for k in policy.keys_for("security-x")} == {
        key_hint(keypair.public),
        key_hint(other_keypair.public),
    }
    assert [key_hint(k) for k in policy.keys_for("iris")] == [key_hint(other_keypair.public)]

    revoke_key(path, "partner")
    policy = read_policy(path)
    with pytest.raises(UntrustedError, match="revoked"):
        policy.keys_for("iris")
    assert [key_hint(k) for k in policy.keys_for("security-x")] == [key_hint(keypair.public)]

    set_minimum(path, "security-x", "1.2.0")
    assert read_policy(path).minimum == {"security-x": "1.2.0"}
    # Adding the same key again is idempotent; another key under the same name is refused.
    add_key(path, "platform", keypair.pub_path, models="security-*")
    with pytest.raises(UsageError, match="different key"):
        add_key(path, "platform", other_keypair.pub_path)


def test_resolve_policy_precedence(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    home = tmp_path / "home"
    with pytest.raises(UsageError, match="trust add-key"):
        resolve_policy(home=home)
    add_key(home / "trust.toml", "platform", keypair.pub_path)
    from_home = resolve_policy(home=home)
    assert [key_hint(k) for k in from_home.keys_for("x")] == [key_hint(keypair.public)]
    explicit = tmp_path / "other.toml"
    add_key(explicit, "partner", other_keypair.pub_path)
    chosen = resolve_policy(home=home, trust_file=explicit)
    assert [key_hint(k) for k in chosen.keys_for("x")] == [key_hint(other_keypair.public)]
    # --key adds to the policy file: both keys are trusted.
    flags = resolve_policy(home=home, trust_file=explicit, key_paths=[keypair.pub_path])
    assert {key_hint(k) for k in flags.keys_for("x")} == {
        key_hint(keypair.public),
        key_hint(other_keypair.public),
    }
    assert flags.source == str(explicit)
    # With no policy file, the --key files alone.
    alone = resolve_policy(home=tmp_path / "fresh", key_paths=[other_keypair.pub_path])
    assert [key_hint(k) for k in alone.keys_for("x")] == [key_hint(other_keypair.public)]
    with pytest.raises(UsageError, match="cannot read trust policy"):
        resolve_policy(home=home, trust_file=tmp_path / "missing.toml")


def test_add_key_refuses_private_key(tmp_path: Path, keypair: KeyPair) -> None:
    with pytest.raises(UsageError):
        add_key(tmp_path / "trust.toml", "k", keypair.key_path)
    assert not (tmp_path / "trust.toml").exists()


def test_written_policy_round_trips(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    path = tmp_path / "trust.toml"
    # A dotted key name and a glob with TOML metacharacters must survive quoting.
    add_key(path, "team.platform", keypair.pub_path, models='sec-"quoted"\\*')
    add_key(path, "partner", other_keypair.pub_path)
    revoke_key(path, "partner")
    written = set_minimum(path, "security-x", "1.2.0-rc.1")
    text = path.read_text()
    assert text.startswith("# packager trust policy")
    assert "-----BEGIN PUBLIC KEY-----\n" in text  # the PEM stays readable, one line per line
    again = read_policy(path)
    assert again.keys == written.keys
    assert again.rules == written.rules
    assert again.minimum == written.minimum
    assert again.keys["partner"].revoked
    assert again.rules[0].models == 'sec-"quoted"\\*'
    # Rewriting what was read gives the same text: the rendering is stable.
    set_minimum(path, "security-x", "1.2.0-rc.1")
    assert path.read_text() == text


def test_add_key_refuses_a_curve_packager_cannot_verify_with(
    tmp_path: Path, keypair: KeyPair
) -> None:
    path = tmp_path / "trust.toml"
    add_key(path, "platform", keypair.pub_path)
    before = path.read_bytes()
    pub = tmp_path / "k1.pub"
    pub.write_bytes(
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(UsageError, match="curve secp256k1") as caught:
        add_key(path, "k1", pub)
    assert caught.value.exit_code == 2
    assert path.read_bytes() == before
