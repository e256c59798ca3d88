"""Bundles signed by shards, judged by the model_signing library (1.1.1) configured with
the same shard size: it verifies what we sign, we verify what it signs, and one changed
shard fails both; bundles signed by whole files keep verifying."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from packager._io.bundledir import verify_bundle
from packager.build.api import package
from packager.build.options import Metadata, PackageOptions
from packager.core.manifest import SIGNATURE
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.errors import TamperedError

from .conftest import KeyPair

SHARD = 4096
README = bytes(range(32, 127)) * 200  # 19000 bytes: five shards of 4096 bytes


def serialization(bundle: Path) -> dict[str, object]:
    sig = json.loads((bundle / SIGNATURE).read_bytes())
    statement = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    record: dict[str, object] = statement["predicate"]["serialization"]
    return record


def oms_config(shard_size: int, bundle: Path) -> object:
    from model_signing import hashing

    return (
        hashing.Config()
        .use_shard_serialization(shard_size=shard_size)
        .set_ignored_paths(paths=[bundle / SIGNATURE])
    )


def oms_verify(bundle: Path, public: Path, shard_size: int) -> None:
    from model_signing import verifying

    config = verifying.Config().use_elliptic_key_verifier(public_key=public)
    config.set_hashing_config(oms_config(shard_size, bundle))  # type: ignore[arg-type]
    config.verify(bundle, bundle / SIGNATURE)


def oms_sign(bundle: Path, private_pem: Path, shard_size: int) -> None:
    from model_signing import signing

    config = signing.Config().use_elliptic_key_signer(private_key=private_pem)
    config.set_hashing_config(oms_config(shard_size, bundle))  # type: ignore[arg-type]
    config.sign(bundle, bundle / SIGNATURE)


def trusted(keypair: KeyPair) -> Trusted:
    return Trusted(adhoc_policy([keypair.public]))


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))


def package_sharded(
    out: Path,
    model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
    version: str,
    text: bytes = README,
) -> Path:
    """iris ``version`` with a README (``text``: five 4096-byte shards), signed by shards."""
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.md"
    readme.write_bytes(text)
    X, _ = iris
    options = PackageOptions(metadata=Metadata(readme=readme), shard_size=SHARD)
    return package(
        model,
        sample=X[::5],
        name="iris",
        version=version,
        key=keypair.private,
        out_dir=out / "dist",
        options=options,
    )


@pytest.fixture(scope="module")
def sharded_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> Path:
    return package_sharded(tmp_path_factory.mktemp("sharded"), iris_model, iris, keypair, "3.0.0")


@pytest.fixture
def sharded_copy(tmp_path: Path, sharded_bundle: Path) -> Path:
    dest = tmp_path / sharded_bundle.name
    shutil.copytree(sharded_bundle, dest)
    for child in dest.iterdir():
        os.chmod(child, 0o644)
    return dest


def test_model_signing_verifies_a_bundle_we_signed_by_shards(
    sharded_copy: Path, keypair: KeyPair
) -> None:
    record = serialization(sharded_copy)
    assert record["method"] == "shards"
    assert record["shard_size"] == SHARD
    oms_verify(sharded_copy, keypair.pub_path, SHARD)
    assert verify_bundle(sharded_copy, mode=trusted(keypair)).version == "3.0.0"

    flip(sharded_copy / "README.md", 2 * SHARD + 7)  # inside the third shard only
    with pytest.raises(
        TamperedError, match=f"README.md bytes {2 * SHARD}-{3 * SHARD} were modified"
    ):
        verify_bundle(sharded_copy, mode=lambda: trusted(keypair))
    with pytest.raises(ValueError, match="README.md"):
        oms_verify(sharded_copy, keypair.pub_path, SHARD)


def test_we_verify_a_bundle_model_signing_signed_by_shards(
    sharded_copy: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization as pem

    private = tmp_path / "key.pem"
    private.write_bytes(
        keypair.private.private_bytes(pem.Encoding.PEM, pem.PrivateFormat.PKCS8, pem.NoEncryption())
    )
    (sharded_copy / SIGNATURE).unlink()
    oms_sign(sharded_copy, private, 8192)
    record = serialization(sharded_copy)
    assert (record["method"], record["shard_size"]) == (
        "shards",
        8192.0,
    )  # a float, as it writes it
    assert verify_bundle(sharded_copy, mode=trusted(keypair)).version == "3.0.0"

    flip(sharded_copy / "README.md", 8192 + 1)
    with pytest.raises(TamperedError, match="README.md bytes 8192-16384 were modified"):
        verify_bundle(sharded_copy, mode=trusted(keypair))


def test_a_truncated_or_extended_file_signed_by_shards_is_refused(
    sharded_copy: Path, keypair: KeyPair
) -> None:
    readme = sharded_copy / "README.md"
    readme.write_bytes(README + b"x")
    with pytest.raises(TamperedError, match="README.md"):
        verify_bundle(sharded_copy, mode=trusted(keypair))
    readme.write_bytes(README[:-1])
    with pytest.raises(TamperedError, match="README.md"):
        verify_bundle(sharded_copy, mode=trusted(keypair))


def test_unverified_mode_checks_a_sharded_bundle_against_its_manifest(sharded_copy: Path) -> None:
    mode = Unverified("--insecure-skip-verify")
    assert verify_bundle(sharded_copy, mode=mode).version == "3.0.0"
    flip(sharded_copy / "README.md", 5)
    with pytest.raises(TamperedError, match="README.md differs from manifest.json"):
        verify_bundle(sharded_copy, mode=mode)


def test_small_bundles_stay_signed_by_whole_files(bundles: dict[str, Path]) -> None:
    # What the model_signing command line verifies (tests/test_bundle.py runs it).
    assert serialization(bundles["1.0.0"])["method"] == "files"


def test_package_shard_size_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_files: Path, keypair: KeyPair
) -> None:
    from packager.cli import main

    def package_with(*extra: str) -> tuple[int, str]:
        code = main(
            [
                "package",
                str(iris_files / "model.joblib"),
                "--name",
                "iris",
                "--version",
                "1.0.0",
                "--sample",
                str(iris_files / "sample.csv"),
                "--key",
                str(keypair.key_path),
                "-o",
                str(tmp_path / "dist"),
                *extra,
            ]
        )
        return code, capsys.readouterr().err

    code, err = package_with("--shard-size", "4KiB")
    assert code == 0, err
    bundle = tmp_path / "dist" / "iris-1.0.0"
    assert serialization(bundle)["shard_size"] == 4096
    assert main(["verify", str(bundle), "--key", str(keypair.pub_path)]) == 0

    for bad in ("12 parsecs", "100"):
        code, err = package_with("--shard-size", bad)
        assert code == 2, err
        assert "size" in err and "Traceback" not in err


def test_a_bundle_signed_by_shards_publishes_and_installs(
    sharded_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path
) -> None:
    from datetime import UTC, datetime

    from packager.distribution.publish import publish_bundle
    from packager.instance.install import InstallOptions, install
    from packager.instance.store import Store
    from packager.registry.layout import LayoutRegistry

    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(sharded_bundle, registry=registry, mode=trusted(keypair))
    result = install(
        "iris@3.0.0",
        registry=registry,
        store=Store(home),
        now=datetime(2026, 11, 27, tzinfo=UTC),
        options=InstallOptions(verify=trusted(keypair)),
    )
    assert result.smoke_test.ok
    for path in sharded_bundle.iterdir():
        assert (result.directory / path.name).read_bytes() == path.read_bytes()
    # The installed copy verifies by shards as well.
    assert verify_bundle(result.directory, mode=trusted(keypair)).version == "3.0.0"


def test_the_model_signing_command_line_hashes_whole_files(
    sharded_copy: Path, keypair: KeyPair
) -> None:
    # Why small bundles stay signed by whole files: its command line refuses shards.
    from .core.test_signature import model_signing

    args = ("verify", "key", sharded_copy, "--signature", sharded_copy / SIGNATURE)
    refused = model_signing(*args, "--public_key", keypair.pub_path)
    assert refused.returncode != 0


def test_an_empty_file_has_no_shard(
    tmp_path: Path, iris_model: object, iris: tuple[np.ndarray, np.ndarray], keypair: KeyPair
) -> None:
    readme = tmp_path / "README.md"
    readme.write_bytes(b"")
    X, _ = iris
    bundle = package(
        iris_model,
        sample=X[::5],
        name="iris",
        version="3.0.1",
        key=keypair.private,
        out_dir=tmp_path / "dist",
        options=PackageOptions(metadata=Metadata(readme=readme), shard_size=SHARD),
    )
    sig = json.loads((bundle / SIGNATURE).read_bytes())
    statement = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert not [n for n in names if n.startswith("README.md")]
    oms_verify(bundle, keypair.pub_path, SHARD)
    assert verify_bundle(bundle, mode=trusted(keypair)).version == "3.0.1"
    (bundle / "README.md").chmod(0o644)
    (bundle / "README.md").write_bytes(b"x")
    with pytest.raises(TamperedError, match="README.md"):
        verify_bundle(bundle, mode=trusted(keypair))


def test_a_directory_registry_copies_a_blob_by_shards_and_checks_each(
    sharded_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path
) -> None:
    from datetime import UTC, datetime

    from packager.distribution.publish import publish_bundle
    from packager.instance.install import InstallOptions, install
    from packager.instance.store import Store
    from packager.registry.layout import LayoutRegistry

    registry = LayoutRegistry(tmp_path / "registry")
    artifact = publish_bundle(sharded_bundle, registry=registry, mode=trusted(keypair))
    blob = registry.root / "iris" / "blobs" / "sha256" / artifact.files["README.md"].digest.hex
    blob.chmod(0o644)
    flip(blob, 2 * SHARD + 3)
    with pytest.raises(TamperedError, match=f"bytes {2 * SHARD}-{3 * SHARD} do not match"):
        install(
            "iris@3.0.0",
            registry=registry,
            store=Store(home),
            now=datetime(2026, 11, 27, tzinfo=UTC),
            options=InstallOptions(verify=trusted(keypair)),
        )
    assert not (home / "models" / "iris" / "3.0.0").exists()
