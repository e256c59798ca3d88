"""What the instance side loads: PyNaCl (NaCl secretbox, the cipher of an encrypted
cosign.key) only when a cosign.key is read, never to verify, install or predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packager.cli import main

from .conftest import KeyPair

# Runs one command in a new interpreter, then reports its exit code and which of the
# modules named in ``sys.argv[1]`` (comma-separated; a package with its submodules) it
# loaded.
LOADED = """
import json, sys
from packager.cli import main
watched = sys.argv.pop(1).split(",")
code = main(sys.argv[1:])
found = sorted(m for m in sys.modules if any(m == w or m.startswith(w + ".") for w in watched))
print(json.dumps({"code": code, "loaded": found}), file=sys.stderr)
"""


def loaded(watched: str, *args: str | Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED, watched, "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return list(report["loaded"])


def test_pynacl_is_imported_only_to_read_a_cosign_key(
    bundles: dict[str, Path], keypair: KeyPair, iris_files: Path
) -> None:
    assert main(["-q", "publish", str(bundles["1.0.0"])]) == 0
    instance_side = [
        ("verify", bundles["1.0.0"], "--key", keypair.pub_path),
        ("install", "iris@1.0.0", "--key", keypair.pub_path),
        ("predict", "iris", "--input", iris_files / "input.csv"),
        ("list",),
    ]
    for command in instance_side:
        assert loaded("nacl", *command) == [], command

    # The same probe sees PyNaCl once a cosign.key is opened.
    promote = ("promote", "iris@1.0.0", "--channel", "stable", "--key", keypair.key_path)
    assert "nacl.secret" in loaded("nacl", *promote)


def test_an_install_loads_no_toml_parser_or_tar_writer_it_does_not_need(
    bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert main(["-q", "publish", str(bundles[version])]) == 0
    watched = "tomllib,tarfile"  # tomllib's own submodules come with it
    # No config.toml and no trust.toml: nothing to parse as TOML; no archive to write.
    assert loaded(watched, "install", "iris@1.0.0", "--key", keypair.pub_path) == []
    (home / "config.toml").write_text("[retention]\nkeep = 2\n")
    found = loaded(watched, "install", "iris@1.1.0", "--key", keypair.pub_path)
    assert "tomllib" in found
    assert "tarfile" not in found
    export = ("export", "iris@1.1.0", "-o", home.parent / "iris.tar")
    assert loaded(watched, *export) == ["tarfile"]


def test_an_install_by_version_loads_no_reader_it_does_not_need(
    bundles: dict[str, Path], keypair: KeyPair
) -> None:
    """Archives, root-of-trust documents, channels, approvals, benchmark results and X.509
    certificates are read by modules that an install by version with a key never loads: each
    costs start-up time (their dataclasses are built on import)."""
    assert main(["-q", "publish", str(bundles["1.0.0"])]) == 0
    watched = (
        "packager.registry.archive,packager.registry.tarscan,packager.registry.attachments,"
        "packager.core.root,packager.core.channel,packager.core.approval,"
        "packager.core.statements,packager.core.benchrecord,packager.core.x509,"
        "importlib.resources"
    )
    assert loaded(watched, "install", "iris@1.0.0", "--key", keypair.pub_path) == []
