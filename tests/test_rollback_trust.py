"""`packager rollback` judges the version it goes back to by the trust policy as it is now,
from its installed model.sig and manifest.json with no registry: a key revoked, a minimum
or a licence rule added since refuses it (exit 3, audited, nothing changed); otherwise it
goes back, below the rollback floor, which stays."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core import signature, verify
from packager.core.digests import Digest
from packager.core.policy import Trusted, TrustPolicy, adhoc_policy, parse_policy
from packager.distribution.publish import publish_bundle
from packager.errors import UntrustedError
from packager.instance.store import Store
from packager.instance.trust import (
    add_key,
    allow_licenses,
    require_approvals,
    revoke_key,
    set_minimum,
)
from packager.registry import LayoutRegistry

from .certs import NOW, issue, make_pki
from .conftest import KeyPair, cli


@pytest.fixture
def upgraded(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> Path:
    """iris 1.0.0 then 1.1.0 installed, signed by the key `builder`; the registry then
    gone. Returns trust.toml."""
    trust = home / "trust.toml"
    add_key(trust, "builder", keypair.pub_path)
    layout = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "1.1.0"):
        publish_bundle(
            bundles[version], registry=layout, mode=Trusted(adhoc_policy([keypair.public]))
        )
        assert cli(capsys, "install", f"iris@{version}", "--registry", layout.root)[0] == 0
    shutil.rmtree(layout.root)
    return trust


def test_rollback_goes_back_offline_and_keeps_the_floor(
    capsys: pytest.CaptureFixture[str], upgraded: Path, home: Path
) -> None:
    # Approvals live in the registry, which is gone: a rollback does not read them.
    require_approvals(upgraded, "iris*", ["security-review"])
    code, out, _ = cli(capsys, "rollback", "iris", "--json")
    assert code == 0 and json.loads(out)["current"] == "1.0.0"
    store = Store(home)
    assert store.current_version("iris") == "1.0.0" and store.floor("iris") == "1.1.0"
    last = store.audit_log("iris")[-1]
    assert (last.action, last.outcome) == ("rollback", "ok")


CHANGES: list[tuple[Callable[[Path], None], str]] = [
    (lambda trust: revoke_key(trust, "builder"), "made with the revoked key 'builder'"),
    (lambda trust: set_minimum(trust, "iris", "1.1.0"), "below the minimum version 1.1.0"),
    (lambda trust: allow_licenses(trust, "iris*", ["MIT"]), "no licence recorded"),
]


@pytest.mark.parametrize(("change", "reason"), CHANGES)
def test_rollback_to_a_version_the_policy_refuses_is_refused(
    capsys: pytest.CaptureFixture[str],
    upgraded: Path,
    home: Path,
    change: Callable[[Path], None],
    reason: str,
) -> None:
    change(upgraded)
    code, _, err = cli(capsys, "rollback", "iris")
    assert code == 3, err
    assert "refusing to roll back iris to 1.0.0" in err and reason in err
    assert "1.1.0 stays current" in err
    store = Store(home)
    assert store.current_version("iris") == "1.1.0" and store.floor("iris") == "1.1.0"
    last = store.audit_log("iris")[-1]
    assert (last.action, last.outcome, last.version) == ("rollback", "refused", "1.0.0")
    assert reason in last.detail


def test_an_unreadable_installed_model_sig_refuses_the_rollback_audited(
    capsys: pytest.CaptureFixture[str], upgraded: Path, home: Path
) -> None:
    sig = Store(home).installed_dir("iris", "1.0.0") / "model.sig"
    sig.unlink()
    sig.mkdir()  # IsADirectoryError when opened, not FileNotFoundError
    code, _, err = cli(capsys, "rollback", "iris")
    assert code == 3, err
    assert "refusing to roll back iris to 1.0.0" in err and "cannot read the installed" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    store = Store(home)
    assert store.current_version("iris") == "1.1.0"
    last = store.audit_log("iris")[-1]
    assert (last.action, last.outcome, last.version) == ("rollback", "refused", "1.0.0")
    assert "cannot read the installed model.sig" in last.detail


# --- a signature verified at install under a pinned root's delegations ----------------
# Rollback cannot re-verify it against the delegations (they live in the registry), so
# what is left is refusing any signature a key or CA revoked in the local policy made.


def _pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _without_hint(sig: bytes) -> bytes:
    bundle = json.loads(sig)
    assert "hint" in bundle["verificationMaterial"]["publicKey"]
    bundle["verificationMaterial"]["publicKey"] = {}
    return json.dumps(bundle).encode()


def _signed(private: ec.EllipticCurvePrivateKey, chain: tuple[bytes, ...] = ()) -> bytes:
    resources = {"model.onnx": Digest("ab" * 32)}
    return signature.sign(
        subject_name="iris", resources=resources, private_key=private, certificate_chain=chain
    )


def test_a_signature_without_hint_made_with_a_revoked_key_is_refused() -> None:
    revoked = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    sig = _without_hint(_signed(revoked))
    assert signature.claimed_key_hint(sig) is None
    policy = parse_policy(
        f"[keys.old]\npem = '''{_pem(revoked.public_key())}'''\nrevoked = true\n"
        f"[keys.other]\npem = '''{_pem(other.public_key())}'''\nrevoked = true\n",
        source="trust.toml",
    )
    with pytest.raises(UntrustedError, match="revoked key 'old'"):
        verify.check_no_revoked_signer(sig, policy)
    # The same keys, not revoked: nothing to refuse.
    verify.check_no_revoked_signer(sig, parse_policy(_unrevoked(policy), source="trust.toml"))
    # Only another key revoked: it does not verify the signature, so no refusal.
    verify.check_no_revoked_signer(
        sig,
        parse_policy(
            f"[keys.other]\npem = '''{_pem(other.public_key())}'''\nrevoked = true\n",
            source="trust.toml",
        ),
    )


def _unrevoked(policy: TrustPolicy) -> str:
    return "".join(
        f"[keys.{k.name}]\npem = '''{k.pem.decode()}'''\nrevoked = false\n"
        for k in policy.keys.values()
    )


@pytest.mark.parametrize("revoked", ["root", "intermediate"])
def test_a_signature_under_a_revoked_ca_is_refused_even_once_expired(revoked: str) -> None:
    pki = make_pki(not_after=NOW - timedelta(days=1))  # the leaf expired: no hint, no date
    sig = _signed(pki.leaf.key, pki.chain)
    ca = pki.root if revoked == "root" else pki.intermediate
    text = f"[cas.corp]\npem = '''{ca.pem.decode()}'''\nidentities = []\nrevoked = %s\n"
    with pytest.raises(UntrustedError, match="revoked CA 'corp'"):
        verify.check_no_revoked_signer(sig, parse_policy(text % "true", source="trust.toml"))
    verify.check_no_revoked_signer(sig, parse_policy(text % "false", source="trust.toml"))
    other = issue("Another CA", ca=True)
    elsewhere = f"[cas.other]\npem = '''{other.pem.decode()}'''\nidentities = []\nrevoked = true\n"
    verify.check_no_revoked_signer(sig, parse_policy(elsewhere, source="trust.toml"))
