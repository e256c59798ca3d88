"""`packager sign`: a bundle signed again, by whole files or by shards, judged by the
model_signing library (1.1.1) and by `packager verify` with the new key and the old one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from packager._io.bundledir import verify_bundle
from packager.build.resign import resign
from packager.core.manifest import MANIFEST, SIGNATURE
from packager.core.policy import Trusted, adhoc_policy
from packager.errors import TamperedError

from .conftest import KeyPair, cli
from .core.test_signature import model_signing
from .test_shards import SHARD, flip, oms_verify, package_sharded, serialization


def verify_code(capsys: pytest.CaptureFixture[str], bundle: Path, keys: KeyPair) -> int:
    return cli(capsys, "verify", bundle, "--key", keys.pub_path)[0]


@pytest.fixture
def sharded(
    tmp_path: Path,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> Path:
    """iris 3.0.0 with a README of five 4096-byte shards, signed by shards with ``keypair``."""
    return package_sharded(tmp_path, iris_model, iris, keypair, "3.0.0")


def test_whole_files_to_shards_with_a_new_key(
    capsys: pytest.CaptureFixture[str],
    bundle_copy: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> None:
    assert serialization(bundle_copy)["method"] == "files"
    manifest = (bundle_copy / MANIFEST).read_bytes()
    code, out, err = cli(
        capsys, "sign", bundle_copy, "--key", other_keypair.key_path, "--shard-size", "4KiB",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert (result["serialization"], result["shardSize"]) == ("shards", SHARD)
    assert (result["name"], result["version"]) == ("iris", "1.1.0")
    assert serialization(bundle_copy) == {
        "method": "shards",
        "shard_size": SHARD,
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [SIGNATURE],
    }
    assert (bundle_copy / MANIFEST).read_bytes() == manifest
    oms_verify(bundle_copy, other_keypair.pub_path, SHARD)
    with pytest.raises(ValueError, match="(?i)signature"):
        oms_verify(bundle_copy, keypair.pub_path, SHARD)
    assert verify_code(capsys, bundle_copy, other_keypair) == 0
    code, _, err = cli(capsys, "verify", bundle_copy, "--key", keypair.pub_path)
    assert code == 3, err
    assert "not one of the trusted keys" in err


def test_shards_to_whole_files(
    capsys: pytest.CaptureFixture[str], sharded: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    assert serialization(sharded)["method"] == "shards"
    manifest = (sharded / MANIFEST).read_bytes()
    code, out, err = cli(capsys, "sign", sharded, "--key", other_keypair.key_path, "--whole-files")
    assert code == 0, err
    assert out.strip() == str(sharded)
    assert "whole files" in err
    assert serialization(sharded)["method"] == "files"
    assert (sharded / MANIFEST).read_bytes() == manifest
    # The model_signing command line hashes whole files: it verifies the bundle now.
    args = ("verify", "key", sharded, "--signature", sharded / SIGNATURE)
    verified = model_signing(*args, "--public_key", other_keypair.pub_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert model_signing(*args, "--public_key", keypair.pub_path).returncode != 0
    assert verify_code(capsys, sharded, other_keypair) == 0
    assert verify_code(capsys, sharded, keypair) == 3


def test_by_default_small_files_are_signed_whole_as_package_does(
    capsys: pytest.CaptureFixture[str], sharded: Path, keypair: KeyPair
) -> None:
    code, out, err = cli(capsys, "sign", sharded, "--key", keypair.key_path, "--json")
    assert code == 0, err
    assert json.loads(out)["shardSize"] is None
    assert serialization(sharded)["method"] == "files"
    assert verify_code(capsys, sharded, keypair) == 0


def test_signing_again_with_the_same_key_and_serialization_gives_the_same_bytes(
    capsys: pytest.CaptureFixture[str], bundle_copy: Path, keypair: KeyPair
) -> None:
    # Deterministic ECDSA over the same statement: what package wrote, byte for byte.
    before = (bundle_copy / SIGNATURE).read_bytes()
    assert cli(capsys, "sign", bundle_copy, "--key", keypair.key_path)[0] == 0
    assert (bundle_copy / SIGNATURE).read_bytes() == before


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: flip(b / "model.onnx", 40), id="changed"),
        pytest.param(lambda b: (b / "extra.txt").write_bytes(b"x"), id="extra"),
        pytest.param(lambda b: (b / "testvectors.npz").unlink(), id="missing"),
        pytest.param(
            lambda b: (b / MANIFEST).write_bytes((b / MANIFEST).read_bytes()[:100]), id="manifest"
        ),
    ],
)
def test_a_tampered_bundle_is_refused_and_model_sig_left_as_it_was(
    capsys: pytest.CaptureFixture[str],
    bundle_copy: Path,
    other_keypair: KeyPair,
    tamper: object,
) -> None:
    before = (bundle_copy / SIGNATURE).read_bytes()
    tamper(bundle_copy)  # type: ignore[operator]
    code, _, err = cli(
        capsys, "sign", bundle_copy, "--key", other_keypair.key_path, "--shard-size", "4KiB"
    )
    assert code == 3, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (bundle_copy / SIGNATURE).read_bytes() == before
    assert not [p.name for p in bundle_copy.iterdir() if p.name.startswith(".")]


def test_a_changed_byte_is_named_against_manifest_json(
    capsys: pytest.CaptureFixture[str], sharded: Path, other_keypair: KeyPair
) -> None:
    before = (sharded / SIGNATURE).read_bytes()
    flip(sharded / "README.md", 2 * SHARD + 1)
    code, _, err = cli(capsys, "sign", sharded, "--key", other_keypair.key_path, "--whole-files")
    assert code == 3
    assert "README.md differs from manifest.json" in err
    assert (sharded / SIGNATURE).read_bytes() == before


def test_a_bad_key_or_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], bundle_copy: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    before = (bundle_copy / SIGNATURE).read_bytes()
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    for args in (
        ("--key", not_a_key),
        ("--key", keypair.pub_path),
        ("--key", keypair.key_path, "--shard-size", "4KiB", "--whole-files"),
        ("--key", keypair.key_path, "--shard-size", "100"),
    ):
        code, _, err = cli(capsys, "sign", bundle_copy, *args)
        assert code == 2, (args, err)
        assert "Traceback" not in err
    assert (bundle_copy / SIGNATURE).read_bytes() == before


def test_a_wrong_password_is_refused(
    capsys: pytest.CaptureFixture[str],
    bundle_copy: Path,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = (bundle_copy / SIGNATURE).read_bytes()
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", "not-the-password")
    code, _, err = cli(capsys, "sign", bundle_copy, "--key", keypair.key_path)
    assert code == 3, err
    assert (bundle_copy / SIGNATURE).read_bytes() == before


def test_a_directory_that_is_no_bundle_is_refused(
    capsys: pytest.CaptureFixture[str], bundle_copy: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned"
    shutil.copytree(bundle_copy, unsigned)
    (unsigned / SIGNATURE).unlink()
    code, _, err = cli(capsys, "sign", unsigned, "--key", keypair.key_path)
    assert code == 3, err
    assert not (unsigned / SIGNATURE).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "sign", empty, "--key", keypair.key_path)
    assert code == 3, err
    assert "Traceback" not in err


def test_a_file_written_to_while_it_is_signed_leaves_model_sig_as_it_was(
    bundle_copy: Path, other_keypair: KeyPair
) -> None:
    # A writer keeps touching a file (same bytes, new times) for as long as signing runs:
    # its digest still matches manifest.json, but the file was written to meanwhile.
    before = (bundle_copy / SIGNATURE).read_bytes()
    target = bundle_copy / "testvectors.npz"
    stop = threading.Event()

    def touch() -> None:
        moment = 1_000_000_000_000_000_000
        while not stop.is_set():
            moment += 1
            os.utime(target, ns=(moment, moment))

    writer = threading.Thread(target=touch)
    writer.start()
    try:
        with pytest.raises(TamperedError, match="changed while it was being signed"):
            resign(bundle_copy, key=other_keypair.private, shard_size=SHARD)
    finally:
        stop.set()
        writer.join()
    assert (bundle_copy / SIGNATURE).read_bytes() == before


# Flips one byte of a file through a shared memory map, over and over, once it has said
# "ready": the page stays writable, so after the first write its times no longer change.
TOGGLER = """
import mmap, sys
with open(sys.argv[1], "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
    i = int(sys.argv[2])
    a = m[i]
    b = a ^ 1
    m[i] = b
    m[i] = a
    print("ready", flush=True)
    while True:
        m[i] = b
        m[i] = a
"""


def test_what_is_signed_again_is_what_manifest_json_describes_even_under_mmap_writes(
    sharded: Path, other_keypair: KeyPair
) -> None:
    # While a byte flips back and forth unseen by stat(), each signature made is either
    # refused or over the very bytes manifest.json describes: the files are read once.
    readme = sharded / "README.md"
    original = readme.read_bytes()
    toggler = subprocess.Popen(
        [sys.executable, "-c", TOGGLER, str(readme), str(2 * SHARD + 1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    made = []
    try:
        assert toggler.stdout is not None and toggler.stdout.readline() == "ready\n"
        for _ in range(40):
            try:
                resign(sharded, key=other_keypair.private, shard_size=SHARD)
            except TamperedError:
                continue
            made.append((sharded / SIGNATURE).read_bytes())
    finally:
        toggler.kill()
        toggler.wait()
    readme.write_bytes(original)
    assert made  # some reads saw the bytes manifest.json describes
    trusted = Trusted(adhoc_policy([other_keypair.public]))
    for sig in made:
        (sharded / SIGNATURE).write_bytes(sig)
        verify_bundle(sharded, mode=trusted)


def test_signed_again_with_a_certificate_chain(
    capsys: pytest.CaptureFixture[str], bundle_copy: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    from .certs import EMAIL, make_pki

    pki = make_pki().write(tmp_path / "pki")
    code, out, err = cli(
        capsys, "sign", bundle_copy, "--key", pki["leaf.key"], "--certificate", pki["chain.pem"],
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["serialization"] == "files"
    material = json.loads((bundle_copy / SIGNATURE).read_bytes())["verificationMaterial"]
    assert len(material["x509CertificateChain"]["certificates"]) == 2
    oracle = ("verify", "certificate", bundle_copy, "--signature", bundle_copy / SIGNATURE)
    verified = model_signing(*oracle, "--certificate_chain", pki["root.pem"])
    assert verified.returncode == 0, verified.stdout + verified.stderr

    trust = ("trust", "add-ca", "corp", pki["root.pem"], "--models", "iris*")
    assert cli(capsys, *trust, "--identity", f"email:{EMAIL}")[0] == 0
    code, _, err = cli(capsys, "verify", bundle_copy)
    assert code == 0, err
    assert verify_code(capsys, bundle_copy, keypair) == 3
