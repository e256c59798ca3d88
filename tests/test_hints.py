"""Every "what to do" in an error names a command that works where it was said: the same
registry, the trust policy in use, the private key where one signs. Each test here runs
the command the message names (placeholders filled in) and then what had failed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from packager.cli import main

from .conftest import KeyPair, cli


def hinted(err: str, fill: dict[str, str | Path]) -> list[str]:
    """The one `packager ...` command in the one-line error (or note), placeholders
    replaced; progress lines before it are left aside."""
    said = [line for line in err.splitlines() if "`packager " in line]
    assert len(said) == 1, err
    commands = re.findall(r"`packager ([^`]+)`", said[0])
    assert len(commands) == 1, err
    words = shlex.split(commands[0])
    return [str(fill.get(word, word)) for word in words]


def run_hint(capsys: pytest.CaptureFixture[str], err: str, fill: dict[str, str | Path]) -> str:
    code, out, err = cli(capsys, *hinted(err, fill))
    assert code == 0, err
    return out


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path]) -> Path:
    """A registry directory holding iris 1.0.0, as the build side published it."""
    path = tmp_path / "shared-registry"
    assert main(["-q", "publish", str(bundles["1.0.0"]), "--registry", str(path)]) == 0
    return path


def test_no_trust_policy_names_trust_add_key(
    capsys: pytest.CaptureFixture[str], registry: Path, keypair: KeyPair
) -> None:
    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", registry)
    assert code == 2
    run_hint(capsys, err, {"NAME": "publisher", "cosign.pub": keypair.pub_path})
    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", registry)
    assert code == 0, err


def test_an_untrusted_signer_names_the_policy_in_use(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "site-trust.toml"
    assert (
        main(["trust", "--trust", str(policy), "add-key", "other", str(other_keypair.pub_path)])
        == 0
    )
    capsys.readouterr()
    install = ("install", "iris@1.0.0", "--registry", registry, "--trust", policy)
    code, _, err = cli(capsys, *install)
    assert code == 3
    assert "--key" not in err  # the policy decides here, not a --key
    run_hint(capsys, err, {"NAME": "publisher", "cosign.pub": keypair.pub_path})
    code, _, err = cli(capsys, *install)
    assert code == 0, err


def test_an_untrusted_signer_under_key_names_key(
    capsys: pytest.CaptureFixture[str], registry: Path, other_keypair: KeyPair
) -> None:
    code, _, err = cli(
        capsys, "install", "iris@1.0.0", "--registry", registry, "--key", other_keypair.pub_path
    )
    assert code == 3
    assert "pass --key PATH to the publisher's cosign.pub" in err
    assert "packager trust" not in err


def test_a_missing_channel_names_promote_with_the_private_key_and_registry(
    capsys: pytest.CaptureFixture[str], registry: Path, keypair: KeyPair
) -> None:
    install = ("install", "iris@beta", "--registry", registry, "--key", keypair.pub_path)
    code, _, err = cli(capsys, *install)
    assert code == 4
    run_hint(capsys, err, {"iris@VERSION": "iris@1.0.0", "cosign.key": keypair.key_path})
    code, _, err = cli(capsys, *install)
    assert code == 0, err


def test_a_missing_model_names_search_on_the_same_registry(
    capsys: pytest.CaptureFixture[str], registry: Path, keypair: KeyPair
) -> None:
    code, _, err = cli(capsys, "install", "nope", "--registry", registry, "--key", keypair.pub_path)
    assert code in (2, 4)
    assert run_hint(capsys, err, {}) == "iris  1.0.0\n"


def test_a_model_missing_from_the_embedded_registry_names_publish_there(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], keypair: KeyPair
) -> None:
    install = ("install", "iris@1.0.0", "--key", keypair.pub_path)
    code, _, err = cli(capsys, *install)
    assert code in (2, 4)
    assert "--registry REF" in err
    run_hint(capsys, err, {"BUNDLE": bundles["1.0.0"]})
    code, _, err = cli(capsys, *install)
    assert code == 0, err


def test_an_empty_registry_names_publish_into_it(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-registry"
    empty.mkdir()
    code, _, err = cli(capsys, "search", "--registry", empty)
    assert code == 0
    run_hint(capsys, err, {"BUNDLE": bundles["1.0.0"]})
    code, out, _ = cli(capsys, "search", "--registry", empty)
    assert out == "iris  1.0.0\n"


def test_promote_with_the_public_key_names_the_private_one(
    capsys: pytest.CaptureFixture[str], registry: Path, keypair: KeyPair
) -> None:
    promote = ("promote", "iris@1.0.0", "--channel", "stable", "--registry", registry)
    code, _, err = cli(capsys, *promote, "--key", keypair.pub_path)
    assert code == 2
    assert "private key (cosign.key)" in err
    code, _, err = cli(capsys, *promote, "--key", keypair.key_path)
    assert code == 0, err


def test_verify_without_a_key_says_what_is_missing(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], keypair: KeyPair
) -> None:
    code, _, err = cli(capsys, "verify", bundles["1.0.0"])
    assert code == 2
    assert "install" not in err
    run_hint(capsys, err, {"NAME": "publisher", "cosign.pub": keypair.pub_path})
    code, _, err = cli(capsys, "verify", bundles["1.0.0"])
    assert code == 0, err
