"""Signing with a certificate chain and trusting a CA, end to end, both ways with
model_signing (``sign certificate`` / ``verify certificate``) as the independent oracle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .certs import EMAIL, make_pki
from .core.test_signature import model_signing
from .test_cli import cli


@pytest.fixture
def pki_files(tmp_path: Path) -> dict[str, Path]:
    return make_pki().write(tmp_path / "pki")


def package_with_chain(
    capsys: pytest.CaptureFixture[str], iris_files: Path, out: Path, pki: dict[str, Path]
) -> tuple[int, str, str]:
    return cli(
        capsys,
        "package",
        iris_files / "model.joblib",
        "--name",
        "iris-classifier",
        "--version",
        "1.0.0",
        "--sample",
        iris_files / "sample.csv",
        "--key",
        pki["leaf.key"],
        "--cert-chain",
        pki["chain.pem"],
        "-o",
        out,
    )


@pytest.mark.slow
def test_signed_with_a_chain_verified_by_model_signing_and_installed_with_a_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_files: Path, pki_files: dict[str, Path]
) -> None:
    code, _, err = package_with_chain(capsys, iris_files, tmp_path / "dist", pki_files)
    assert code == 0, err
    bundle = tmp_path / "dist" / "iris-classifier-1.0.0"
    material = json.loads((bundle / "model.sig").read_bytes())["verificationMaterial"]
    assert len(material["x509CertificateChain"]["certificates"]) == 2

    oracle = ("verify", "certificate", bundle, "--signature", bundle / "model.sig")
    ok = model_signing(*oracle, "--certificate_chain", pki_files["root.pem"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stranger = make_pki().write(tmp_path / "stranger")
    refused = model_signing(*oracle, "--certificate_chain", stranger["root.pem"])
    assert refused.returncode != 0

    trust = ("trust", "add-ca", "corp", pki_files["root.pem"], "--models", "iris-*")
    assert cli(capsys, *trust, "--identity", f"email:{EMAIL}")[0] == 0
    code, out, err = cli(capsys, "verify", bundle)
    assert code == 0, err
    assert f"signed by certificate 'email:{EMAIL}, " in out and "issued under CA corp" in out
    assert cli(capsys, "publish", bundle)[0] == 0
    code, out, err = cli(capsys, "install", "iris-classifier", "--json")
    assert code == 0, err
    code, out, _ = cli(capsys, "log", "--json")
    assert f"certificate 'email:{EMAIL}" in out
    assert "issued under CA corp" in out

    # Channels: promoted with the chain, followed with the CA trusted; promoting again
    # recognises the previous document as signed with the same key.
    promote = ("promote", "iris-classifier@1.0.0", "--channel", "stable", "--key")
    promote += (pki_files["leaf.key"], "--cert-chain", pki_files["chain.pem"], "--json")
    code, out, err = cli(capsys, *promote)
    assert code == 0, err
    assert json.loads(out)["sequence"] == 1
    code, _, err = cli(capsys, "install", "iris-classifier@stable")
    assert code == 0, err
    code, out, err = cli(capsys, *promote)
    assert code == 0, err
    assert json.loads(out)["sequence"] == 2


@pytest.mark.slow
def test_model_signing_certificate_signatures_verify_with_a_trusted_ca(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    pki_files: dict[str, Path],
) -> None:
    bundle = tmp_path / bundles["1.0.0"].name
    shutil.copytree(bundles["1.0.0"], bundle)
    (bundle / "model.sig").chmod(0o644)
    (bundle / "model.sig").unlink()
    signed = model_signing(
        "sign",
        "certificate",
        bundle,
        "--private_key",
        pki_files["leaf.key"],
        "--signing_certificate",
        pki_files["leaf.pem"],
        "--certificate_chain",
        pki_files["intermediate.pem"],
        "--signature",
        bundle / "model.sig",
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr

    policy = tmp_path / "trust.toml"
    add = ("trust", "--trust", policy, "add-ca", "corp", pki_files["root.pem"])
    assert cli(capsys, *add, "--identity", f"email:{EMAIL}")[0] == 0
    code, _, err = cli(capsys, "verify", bundle, "--trust", policy)
    assert code == 0, err

    wrong = tmp_path / "wrong.toml"
    add = ("trust", "--trust", wrong, "add-ca", "corp", pki_files["root.pem"])
    assert cli(capsys, *add, "--identity", "email:someone-else@example.com")[0] == 0
    code, _, err = cli(capsys, "verify", bundle, "--trust", wrong)
    assert code == 3
    assert "accepts only email:someone-else@example.com" in err

    assert cli(capsys, "trust", "--trust", policy, "revoke", "corp")[0] == 0
    code, _, err = cli(capsys, "verify", bundle, "--trust", policy)
    assert code == 3
    assert "every CA its rules name is revoked" in err


def test_a_chain_for_another_key_is_refused_before_packaging(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_files: Path, pki_files: dict[str, Path]
) -> None:
    other = make_pki().write(tmp_path / "other")
    mixed = {**pki_files, "leaf.key": other["leaf.key"]}
    code, _, err = package_with_chain(capsys, iris_files, tmp_path / "dist", mixed)
    assert code == 2
    assert "does not certify the signing key" in err
    assert not (tmp_path / "dist").exists()


def test_trust_add_ca_list_and_refusals(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pki_files: dict[str, Path]
) -> None:
    policy = tmp_path / "trust.toml"
    base = ("trust", "--trust", policy)
    code, _, err = cli(capsys, *base, "add-ca", "corp", pki_files["leaf.pem"])
    assert code == 2
    assert "is not a CA certificate" in err
    code, _, err = cli(capsys, *base, "add-ca", "corp", pki_files["root.pem"], "--identity", "x")
    assert code == 2
    assert "invalid identity 'x'" in err
    assert not policy.exists()

    add = (*base, "add-ca", "corp", pki_files["root.pem"], "--models", "security-*")
    code, out, err = cli(capsys, *add, "--identity", f"email:{EMAIL}")
    assert code == 0, err
    assert "CA corp trusted for models 'security-*'" in err + out
    listed = json.loads(cli(capsys, *base, "list", "--json")[1])
    assert listed["cas"][0]["name"] == "corp"
    assert listed["cas"][0]["identities"] == [f"email:{EMAIL}"]
    assert listed["cas"][0]["subject"] == "CN=Example Root CA,O=Example Corp"
    assert listed["rules"] == [{"models": "security-*", "keys": [], "cas": ["corp"]}]
    code, _, err = cli(capsys, *base, "add-ca", "corp", pki_files["intermediate.pem"])
    assert code == 2
    assert "different CA named 'corp'" in err
