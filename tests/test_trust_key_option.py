"""`--key PUB` adds a trusted key to the trust policy for one command; it does not replace
the policy: a key the policy revokes stays refused, and the approvals, licence rules and
minimum versions the policy sets still apply, on install, update, pull and mirror. With no
policy file, the `--key` files alone are trusted, as before. `verify --key PUB` checks that
PUB signed the bundle: it trusts exactly the `--key` files, whatever the policy says, and
names the signer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.core.policy import Trusted, adhoc_policy
from packager.core.signature import key_hint
from packager.distribution.approve import approve
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.instance.store import Store
from packager.registry import LayoutRegistry

from .conftest import KeyPair, cli, make_keypair

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> Path:
    layout = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=layout, mode=Trusted(adhoc_policy([keypair.public])))
    promote("iris@1.0.0", channel="stable", registry=layout, private_key=keypair.private, now=T0)
    return layout.root


@pytest.fixture
def policy(
    capsys: pytest.CaptureFixture[str], home: Path, other_keypair: KeyPair
) -> Callable[..., None]:
    """Edit $PACKAGER_HOME/trust.toml with `packager trust ...`; it starts trusting only
    another publisher's key, for another family of models."""

    def edit(*args: str | Path) -> None:
        code, _, err = cli(capsys, "trust", *args)
        assert code == 0, err

    edit("add-key", "partner", other_keypair.pub_path, "--models", "x-*")
    return edit


def test_key_adds_a_key_for_every_model_to_the_policy(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    home: Path,
    policy: Callable[..., None],
) -> None:
    install = ("install", "iris@1.0.0", "--registry", registry)
    code, _, err = cli(capsys, *install)
    assert code == 3 and "no trusted key for iris" in err  # the policy alone: not for iris
    code, _, err = cli(capsys, *install, "--key", keypair.pub_path)
    assert code == 0, err
    assert Store(home).current_version("iris") == "1.0.0"


def test_a_key_the_policy_revokes_is_refused_when_given_with_key(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    home: Path,
    tmp_path: Path,
    policy: Callable[..., None],
) -> None:
    policy("add-key", "builder", keypair.pub_path)
    policy("revoke", "builder")
    code, _, err = cli(
        capsys, "install", "iris@1.0.0", "--registry", registry, "--key", keypair.pub_path
    )
    assert code == 3 and "every key its rules name is revoked" in err
    # With another key trusted for iris too, the signature itself is refused.
    key = ("--registry", registry, "--key", keypair.pub_path, "--key", other_keypair.pub_path)
    code, _, err = cli(capsys, "install", "iris@1.0.0", *key)
    assert code == 3 and "made with the revoked key 'builder'" in err
    code, _, err = cli(capsys, "pull", "iris@1.0.0", *key, "-o", tmp_path / "pulled")
    assert code == 3 and "made with the revoked key 'builder'" in err
    assert not (tmp_path / "pulled").exists() or not list((tmp_path / "pulled").iterdir())
    assert Store(home).current_version("iris") is None
    refused = [e for e in Store(home).audit_log("iris") if e.outcome == "refused"]
    assert len(refused) == 2


def test_mirror_with_key_still_refuses_a_key_the_policy_revokes(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    tmp_path: Path,
    policy: Callable[..., None],
) -> None:
    mirror = ("mirror", registry, tmp_path / "copy", "iris@1.0.0", "--key", keypair.pub_path)
    code, _, err = cli(capsys, *mirror)
    assert code == 0, err  # the policy trusts only x-* models: --key adds the key
    assert LayoutRegistry(tmp_path / "copy").versions("iris") == ["1.0.0"]
    policy("add-key", "builder", keypair.pub_path)
    policy("revoke", "builder")
    code, _, err = cli(capsys, *mirror[:2], tmp_path / "again", *mirror[3:])
    assert code == 3 and "made with the revoked key 'builder'" in err
    assert not (tmp_path / "again").exists()


def test_verify_with_key_proves_that_key_signed_whatever_the_policy_trusts(
    capsys: pytest.CaptureFixture[str],
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
    policy: Callable[..., None],
) -> None:
    policy("add-key", "builder", keypair.pub_path)  # signed iris: trusted for every model
    bundle = bundles["1.0.0"]
    code, out, _ = cli(capsys, "verify", bundle)
    assert code == 0 and out.endswith(f"signed by key builder ({key_hint(keypair.public)[:16]})\n")
    code, _, err = cli(capsys, "verify", bundle, "--key", other_keypair.pub_path)
    assert code == 3 and "not one of the trusted keys" in err
    code, out, _ = cli(capsys, "verify", bundle, "--key", keypair.pub_path, "--json")
    assert code == 0
    assert json.loads(out) | {"files": None} == {
        "verified": True,
        "name": "iris",
        "version": "1.0.0",
        "signer": key_hint(keypair.public),
        "signerName": str(keypair.pub_path),
        "certificate": None,
        "revokedInPolicy": False,
        "files": None,
    }
    code, out, _ = cli(
        capsys, "verify", bundle, "--key", other_keypair.pub_path, "--key", keypair.pub_path
    )
    assert code == 0 and f"signed by key {keypair.pub_path} (" in out


def test_verify_with_key_trusts_that_key_but_warns_when_the_policy_revokes_it(
    capsys: pytest.CaptureFixture[str],
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
    policy: Callable[..., None],
) -> None:
    policy("add-key", "builder", keypair.pub_path)
    policy("revoke", "partner")  # a revoked key that did not sign: no warning
    code, out, err = cli(capsys, "verify", bundles["1.0.0"], "--key", keypair.pub_path)
    assert code == 0 and "WARNING" not in err
    policy("revoke", "builder")
    code, _, err = cli(capsys, "verify", bundles["1.0.0"])
    assert code == 3 and "made with the revoked key 'builder'" in err
    code, out, err = cli(capsys, "verify", bundles["1.0.0"], "--key", keypair.pub_path)
    assert code == 0 and f"signed by key {keypair.pub_path} (" in out
    assert "WARNING" in err and "is revoked in" in err and "'builder'" in err
    assert str(home / "trust.toml") in err
    code, out, err = cli(capsys, "verify", bundles["1.0.0"], "--key", keypair.pub_path, "--json")
    assert code == 0 and json.loads(out)["revokedInPolicy"] is True and "'builder'" in err


def test_the_policys_minimum_and_licence_rules_apply_with_key(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    home: Path,
    policy: Callable[..., None],
) -> None:
    install = ("install", "iris@1.0.0", "--registry", registry, "--key", keypair.pub_path)
    policy("minimum", "iris@1.1.0")
    code, _, err = cli(capsys, *install)
    assert code == 3 and "iris@1.0.0 is below the minimum version 1.1.0" in err
    policy("minimum", "iris@1.0.0")
    policy("allow-license", "iris*", "MIT")
    code, _, err = cli(capsys, *install)
    assert code == 3 and "refused by the licence policy: the model: no licence recorded" in err
    assert Store(home).current_version("iris") is None


def test_the_policys_required_approvals_apply_with_key(
    capsys: pytest.CaptureFixture[str],
    registry: Path,
    keypair: KeyPair,
    home: Path,
    tmp_path: Path,
    policy: Callable[..., None],
) -> None:
    alice = make_keypair(tmp_path / "alice")
    policy("add-key", "alice", alice.pub_path, "--role", "security-review")
    policy("require-approval", "iris*", "security-review")
    key = ("--registry", registry, "--key", keypair.pub_path)
    code, _, err = cli(capsys, "install", "iris@stable", *key)
    assert code == 3 and "lacks the approvals the trust policy requires" in err
    # alice's key given with --key too keeps her role: her approval counts.
    approve(
        "iris@1.0.0",
        role="security-review",
        registry=LayoutRegistry(registry),
        private_key=alice.private,
        now=T0,
    )
    code, _, err = cli(capsys, "install", "iris@stable", *key, "--key", alice.pub_path)
    assert code == 0, err

    # update with --key: the approval the policy requires is still checked.
    policy("revoke", "alice")
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path, "--json")
    assert code == 3 and "lacks the approvals" in err
    assert json.loads(out)["models"][0]["status"] == "refused"
    assert Store(home).current_version("iris") == "1.0.0"


def test_without_a_policy_file_key_alone_is_trusted(
    capsys: pytest.CaptureFixture[str], registry: Path, keypair: KeyPair, home: Path
) -> None:
    assert not (home / "trust.toml").exists()
    code, _, err = cli(capsys, "install", "iris@1.0.0", "--registry", registry)
    assert code == 2 and "no trusted keys" in err
    code, _, err = cli(
        capsys, "install", "iris@1.0.0", "--registry", registry, "--key", keypair.pub_path
    )
    assert code == 0, err
