"""The command line end to end (package, verify, publish, install, predict) and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from .conftest import KeyPair, cli
from .core.test_manifest import assert_round_trips


def test_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_files: Path, home: Path
) -> None:
    keys = tmp_path / "keys"
    assert cli(capsys, "keygen", "-o", keys)[0] == 0
    assert (keys / "cosign.key").read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY")

    code, out, err = cli(
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
        keys / "cosign.key",
        "-o",
        tmp_path / "dist",
        "--license",
        "Apache-2.0",
        "--param",
        "C=1.0",
        "--training-data",
        iris_files / "sample.csv",
        "--git-commit",
        "a" * 40,
        "--json",
    )
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    assert sorted(p.name for p in bundle.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "model.sig",
        "provenance.intoto.json",
        "sbom.cdx.json",
        "testvectors.npz",
    ]
    manifest = assert_round_trips((bundle / "manifest.json").read_bytes())
    assert manifest.provenance is not None
    assert manifest.provenance.git_commit == "a" * 40
    assert manifest.provenance.hyperparameters == {"C": "1.0"}
    assert manifest.provenance.training_data is not None
    assert manifest.provenance.training_data[0].uri == "sample.csv"
    assert manifest.license == "Apache-2.0"
    assert manifest.model.source.framework == "scikit-learn"

    code, out, _ = cli(capsys, "inspect", bundle)
    assert code == 0 and "iris-classifier" in out and "testvectors.npz" in out
    assert cli(capsys, "verify", bundle, "--key", keys / "cosign.pub")[0] == 0
    code, out, _ = cli(capsys, "publish", bundle, "--key", keys / "cosign.pub", "--json")
    assert code == 0 and json.loads(out)["digest"].startswith("sha256:")
    code, out, _ = cli(capsys, "search", "--json")
    assert json.loads(out)["models"] == {"iris-classifier": ["1.0.0"]}

    code, out, err = cli(capsys, "install", "iris-classifier", "--key", keys / "cosign.pub")
    assert code == 0, err
    assert "installed iris-classifier@1.0.0" in out
    code, out, _ = cli(capsys, "list", "--json")
    assert json.loads(out) == [
        {
            "name": "iris-classifier",
            "version": "1.0.0",
            "current": True,
            "path": str(home / "models" / "iris-classifier" / "1.0.0"),
            "channel": None,
        }
    ]
    code, out, _ = cli(
        capsys, "predict", "iris-classifier", "--input", iris_files / "input.csv", "--json"
    )
    assert code == 0
    assert json.loads(out)["outputs"]["label"] == [0, 1, 2]
    code, out, _ = cli(capsys, "log", "--json")
    assert [e["outcome"] for e in json.loads(out)] == ["ok"]


def test_exit_codes(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> None:
    bundle = bundles["1.0.0"]
    code, _, err = cli(capsys, "verify", bundle, "--key", other_keypair.pub_path)
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("packager: error:")
    code, _, err = cli(capsys, "install", "nosuchmodel", "--key", keypair.pub_path)
    assert code == 4 and "packager search" in err
    code, _, err = cli(capsys, "install", "Bad_Name", "--key", keypair.pub_path)
    assert code == 2
    code, _, err = cli(capsys, "package", bundle / "model.onnx", "--name", "x", "--version", "1")
    assert code == 2
    code, _, err = cli(capsys, "verify", bundle, "--key", keypair.key_path)
    assert code == 2 and "private key" in err


def test_wrong_password_exit_3(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    iris_files: Path,
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", "not-the-password")
    code, _, err = cli(
        capsys,
        "package",
        iris_files / "model.joblib",
        "--name",
        "iris",
        "--version",
        "1.0.0",
        "--sample",
        iris_files / "sample.csv",
        "--key",
        keypair.key_path,
        "-o",
        tmp_path / "d",
    )
    assert code == 3 and "password" in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_cli_start_imports_nothing_heavy() -> None:
    """`packager --help` and `packager list` must not import numpy, onnx or onnxruntime."""
    code = (
        "import sys; from packager.cli import main; main(['list']); main(['--help']);"
        "heavy = sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'sklearn', 'jsonschema_rs')"
        " if m in sys.modules); print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_command_is_found_in_the_module_that_defines_it() -> None:
    """The lazy command table names exactly the commands each CLI module defines."""
    import importlib

    from packager.cli import COMMAND_MODULES, cli

    defined = {
        command.name: module
        for module in sorted(set(COMMAND_MODULES.values()))
        for command in importlib.import_module(f"packager.cli.{module}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    for name in defined:
        found = cli.get_command(click.Context(cli), name)
        assert found is not None and found.name == name


def test_list_imports_no_other_side_of_the_cli() -> None:
    """`packager list` imports neither the other sides' commands, options and output, nor
    the modules that check signatures and schemas."""
    others = (
        "packager.cli.build",
        "packager.cli.distribution",
        "packager.cli.render_build",
        "packager.cli.render_distribution",
        "packager.build",
        "packager.distribution",
        "packager.registry",
        "packager.core.verify",
        "cryptography",
        "jsonschema_rs",
        # Loaded by the functions that need them, as each costs every command's start.
        "hashlib",
        "tomllib",
        "ctypes",
        "importlib.resources",
        "tempfile",
    )
    code = (
        "import sys; from packager.cli import main; main(['list']);"
        f"loaded = sorted(m for m in {others!r} if m in sys.modules);"
        " print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_imports_no_build_command(bundles: dict[str, Path], keypair: KeyPair) -> None:
    """`packager verify` starts hashing without importing the build commands and options,
    and checks a key's signature without cryptography's X.509 modules."""
    code = (
        "import sys; from packager.cli import main;"
        "code = main(['-q', 'verify', sys.argv[1], '--key', sys.argv[2]]);"
        "loaded = sorted(m for m in ('packager.cli.build', 'packager.cli.build_options',"
        " 'packager.build', 'cryptography.x509') if m in sys.modules);"
        " print(code, loaded); sys.exit(1 if code or loaded else 0)"
    )
    args = [str(bundles["1.0.0"]), str(keypair.pub_path)]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Runs `packager verify` in a new interpreter and reports the modules of WAITING loaded when
# its first thread started, which thread that was, and the modules loaded by the end.
FIRST_THREAD_PROBE = """
import json, sys, threading
from packager.cli import main

WAITING = json.loads(sys.argv[3])
first = []
start = threading.Thread.start

def observed_start(thread):
    if not first:
        first.append([thread.name, sorted(m for m in WAITING if m in sys.modules)])
    start(thread)

threading.Thread.start = observed_start
code = main(["-q", "verify", sys.argv[1], "--key", sys.argv[2]])
loaded = sorted(m for m in WAITING if m in sys.modules)
print(json.dumps({"code": code, "first": first[0], "loaded": loaded}))
"""


def test_verify_hashes_before_loading_what_checks_and_shows_it(
    bundles: dict[str, Path], keypair: KeyPair
) -> None:
    """`packager verify` starts hashing the files before it loads the manifest's model, the
    signature's and trust policy's modules (cryptography too) and its output's modules:
    they load while the files hash."""
    waiting = [
        "packager.core.manifest",
        "packager.core.verify",
        "packager.core.signature",
        "packager.core.policy",
        "packager.instance.trust",
        "cryptography",
        "packager.cli.render",
        "packager.cli.render_build",
    ]
    args = [str(bundles["1.0.0"]), str(keypair.pub_path), json.dumps(waiting)]
    result = subprocess.run(
        [sys.executable, "-c", FIRST_THREAD_PROBE, *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["first"] == ["packager-hash", []]
    assert report["loaded"] == sorted(waiting)


def test_python_m_packager(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "packager", "install", "x", "--registry", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "--key" in result.stderr


def test_trust_policy_commands_and_fail_closed(
    capsys: pytest.CaptureFixture[str],
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
    home: Path,
) -> None:
    assert cli(capsys, "publish", bundles["1.0.0"])[0] == 0
    code, _, err = cli(capsys, "install", "iris")
    assert code == 2 and "trust add-key" in err
    assert cli(capsys, "trust", "add-key", "partner", other_keypair.pub_path)[0] == 0
    code, _, err = cli(capsys, "install", "iris")
    assert code == 3, err
    assert cli(capsys, "trust", "add-key", "platform", keypair.pub_path, "--models", "ir*")[0] == 0
    code, out, err = cli(capsys, "trust", "list", "--json")
    assert [k["name"] for k in json.loads(out)["keys"]] == ["partner", "platform"]
    assert cli(capsys, "install", "iris")[0] == 0
    assert cli(capsys, "trust", "revoke", "platform")[0] == 0
    assert cli(capsys, "publish", bundles["1.1.0"])[0] == 0
    code, _, err = cli(capsys, "install", "iris@1.1.0")
    assert code == 3 and "revoked" in err
    assert cli(capsys, "trust", "minimum", "iris@3.0.0")[0] == 0
    assert cli(capsys, "publish", bundles["2.0.0"])[0] == 0
    code, _, err = cli(capsys, "install", "iris@2.0.0")
    assert code == 3 and "minimum version 3.0.0" in err
    code, _, err = cli(capsys, "install", "iris@1.1.0", "--insecure-skip-verify")
    assert code == 0, err
    assert "WARNING" in err
    code, out, _ = cli(capsys, "log", "iris", "--json")
    assert [e["outcome"] for e in json.loads(out)] == [
        "refused",
        "ok",
        "refused",
        "minimum",  # the trust change, logged for the model it concerns
        "refused",
        "insecure",
    ]


def test_an_unusable_key_is_refused_by_add_key_and_skipped_with_a_warning_in_trust_toml(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k1 = home.parent / "k1.pub"
    k1.write_bytes(
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, _, err = cli(capsys, "trust", "add-key", "k1", k1)
    assert code == 2 and "curve secp256k1" in err and err.count("\n") == 1, err
    assert cli(capsys, "trust", "add-key", "platform", keypair.pub_path)[0] == 0
    # A key written into trust.toml by hand (or by an older packager) trusts nothing...
    trust = home / "trust.toml"
    pem = k1.read_text()
    trust.write_text(f"[keys.k1]\npem = '''{pem}'''\n\n" + trust.read_text())
    trust.write_text(trust.read_text() + '\n[[rules]]\nmodels = "*"\nkeys = ["k1"]\n')
    assert cli(capsys, "publish", bundles["1.0.0"])[0] == 0
    # ...and does not stop the usable key from verifying.
    code, _, err = cli(capsys, "install", "iris")
    assert code == 0, err
    assert "WARNING: key k1 is skipped" in err and "secp256k1" in err
    code, out, _ = cli(capsys, "trust", "list", "--json")
    assert [k["name"] for k in json.loads(out)["unusable"]] == ["k1"]
    assert cli(capsys, "trust", "revoke", "k1")[0] == 0
    assert "revoked = true" in trust.read_text().split("[keys.platform]")[0]


HOSTILE = "\x1b[2K\rinstall ok\n2026-12-02T00:00:00+00:00  install  ok       iris@9.9.9  forged"


def assert_shown_as_data(text: str) -> None:
    """Nothing a registry sent acts on the terminal or starts a line of its own."""
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2K\\rinstall ok\\n2026-12-02" in text
    assert not any(line.startswith("2026-12-02T00:00:00") for line in text.splitlines())


def test_a_registry_forging_lines_through_a_media_type_is_shown_as_data(
    capsys: pytest.CaptureFixture[str], keypair: KeyPair, home: Path, tmp_path: Path
) -> None:
    from .hostile import _LayoutTarget

    root = tmp_path / "hostile-registry"
    target = _LayoutTarget(root, "iris")
    target.tag("1.0.0", {"mediaType": HOSTILE, **target.blob(b"{}")})
    assert cli(capsys, "trust", "add-key", "platform", keypair.pub_path)[0] == 0
    code, out, err = cli(capsys, "install", "iris@1.0.0", "--registry", root)
    assert code == 3, err
    assert err.count("\n") == 1 and err.startswith("packager: error: ")
    assert_shown_as_data(err)
    code, out, _ = cli(capsys, "log", "iris")
    assert code == 0 and out.count("\n") == 1, out
    assert_shown_as_data(out)
    code, out, _ = cli(capsys, "log", "iris", "--json")
    [entry] = json.loads(out)
    assert entry["outcome"] == "refused" and "\\x1b[2K" in entry["detail"]


def test_a_registry_forging_lines_through_an_error_body_is_shown_as_data(
    capsys: pytest.CaptureFixture[str], keypair: KeyPair, home: Path
) -> None:
    from http.server import BaseHTTPRequestHandler

    from .registry.servers import serve

    body = json.dumps({"errors": [{"code": "DENIED", "message": HOSTILE}]}).encode()

    class Hostile(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    assert cli(capsys, "trust", "add-key", "platform", keypair.pub_path)[0] == 0
    with serve(Hostile, None) as port:
        code, _, err = cli(
            capsys, "install", "iris", "--registry", f"oci://127.0.0.1:{port}/ml", "--plain-http"
        )
    assert code == 4, err
    assert err.count("\n") == 1 and "answered 403 DENIED" in err
    assert_shown_as_data(err)
    code, out, _ = cli(capsys, "log", "iris")
    assert out.count("\n") == 1, out
    assert_shown_as_data(out)
