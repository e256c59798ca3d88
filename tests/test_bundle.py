"""Building bundles: reproducible bytes, the files and manifest, and the independent verifier."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.bundledir import verify_bundle
from packager.build.api import package
from packager.build.options import PackageOptions, Provenance
from packager.core.manifest import parse_manifest
from packager.core.policy import Trusted, adhoc_policy
from packager.errors import TamperedError, UntrustedError

from .conftest import KeyPair


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_byte_reproducible(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    X, _ = iris
    first = package(
        iris_model,
        sample=X[::5],
        name="iris",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "a",
        options=PackageOptions(provenance=Provenance(git_commit="b" * 40)),
    )
    second = package(
        iris_model,
        sample=X[::5],
        name="iris",
        version="1.0.0",
        key=keypair.key_path,
        out_dir=tmp_path / "b",
        options=PackageOptions(provenance=Provenance(git_commit="b" * 40)),
    )
    assert tree_bytes(first) == tree_bytes(second)
    manifest = parse_manifest((first / "manifest.json").read_bytes())
    assert manifest.created == "2026-01-01T00:00:00Z"


def test_manifest_contents(bundles: dict[str, Path], keypair: KeyPair) -> None:
    bundle = bundles["1.0.0"]
    manifest = verify_bundle(bundle, mode=Trusted(adhoc_policy([keypair.public])))
    assert bundle.name == "iris-1.0.0"
    assert [f.path for f in manifest.files] == [
        "model.onnx",
        "provenance.intoto.json",
        "sbom.cdx.json",
        "testvectors.npz",
    ]
    assert {f.role for f in manifest.files} == {"model", "doc", "testvectors"}
    assert manifest.model.inputs[0].dtype == "float32"
    assert [o.name for o in manifest.model.outputs] == ["label", "probabilities"]
    validation = manifest.validation
    assert validation.rows == 30
    assert validation.label_agreement == 1.0
    assert 0 <= validation.max_abs_diff < 1e-4
    assert validation.reference == "original"
    assert "ai.onnx" in manifest.model.opsets


def test_verify_refuses_changes(
    bundle_copy: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    verify_bundle(bundle_copy, mode=Trusted(adhoc_policy([keypair.public])))
    with pytest.raises(UntrustedError):
        verify_bundle(bundle_copy, mode=Trusted(adhoc_policy([other_keypair.public])))
    (bundle_copy / "notes.txt").write_text("extra")
    with pytest.raises(TamperedError, match="notes.txt"):
        verify_bundle(bundle_copy, mode=Trusted(adhoc_policy([keypair.public])))
    (bundle_copy / "notes.txt").unlink()
    (bundle_copy / "link").symlink_to("model.onnx")
    with pytest.raises(TamperedError, match="regular file"):
        verify_bundle(bundle_copy, mode=Trusted(adhoc_policy([keypair.public])))
    (bundle_copy / "link").unlink()
    data = bytearray((bundle_copy / "testvectors.npz").read_bytes())
    data[-1] ^= 1
    (bundle_copy / "testvectors.npz").write_bytes(bytes(data))
    with pytest.raises(TamperedError, match="testvectors.npz"):
        verify_bundle(bundle_copy, mode=Trusted(adhoc_policy([keypair.public])))


def test_verify_loads_keys_once_hashing_has_started(
    bundle_copy: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    """Keys given as a function are loaded after the hashing started, and checked the same;
    a bundle refused before that (unsigned) never loads them."""
    loaded: list[str] = []

    def keys(pair: KeyPair) -> list[ec.EllipticCurvePublicKey]:
        loaded.append("keys")
        return [pair.public]

    assert (
        verify_bundle(bundle_copy, mode=lambda: Trusted(adhoc_policy(keys(keypair)))).ref
        == "iris@1.1.0"
    )
    with pytest.raises(UntrustedError):
        verify_bundle(bundle_copy, mode=lambda: Trusted(adhoc_policy(keys(other_keypair))))
    (bundle_copy / "model.sig").unlink()
    with pytest.raises(TamperedError, match="unsigned"):
        verify_bundle(bundle_copy, mode=lambda: Trusted(adhoc_policy(keys(keypair))))
    assert loaded == ["keys", "keys"]


def model_signing_cli() -> str:
    path = Path(sys.executable).parent / "model_signing"
    assert path.exists(), "model_signing is missing: pip install -e '.[dev]'"
    return str(path)


def test_independent_verifier_accepts_our_bundle(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    bundle = tmp_path / bundles["1.0.0"].name
    shutil.copytree(bundles["1.0.0"], bundle)
    command = [
        model_signing_cli(),
        "verify",
        "key",
        str(bundle),
        "--signature",
        str(bundle / "model.sig"),
        "--public_key",
        str(keypair.pub_path),
    ]
    ok = subprocess.run(command, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    model = bundle / "model.onnx"
    model.chmod(0o644)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode != 0
