"""Registry authentication: Basic (htpasswd) and Bearer tokens against real docker-registry
instances, credentials from options, environment and Docker's config.json - and never in
a message, a repr or the state database."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest

from packager.cli import main
from packager.errors import RegistryError, UsageError
from packager.registry.auth import Credentials, docker_credentials, parse_challenges
from packager.registry.oci import OciRegistry
from packager.registry.options import RegistryOptions, RetryPolicy, options_from_environment

from ..conftest import KeyPair
from .conftest import USERS, Authenticated
from .test_layout import make_bundle

FAST = RetryPolicy(attempts=1, backoff=0.01, max_wait=0.1)
PASSWORD = USERS["alice"]


def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str | Path,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def oci(server: Authenticated, namespace: str) -> str:
    return f"oci://{server.host}/{namespace}"


def test_parse_challenges() -> None:
    header = (
        'Basic realm="registry", Bearer realm="https://auth.example/token",'
        'service="registry.example",scope="repository:ns/iris:pull,push repository:ns/b:pull"'
    )
    assert parse_challenges(header) == [
        ("basic", {"realm": "registry"}),
        (
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:ns/iris:pull,push repository:ns/b:pull",
            },
        ),
    ]
    assert parse_challenges('Bearer realm="a\\"b", error=insufficient_scope') == [
        ("bearer", {"realm": 'a"b', "error": "insufficient_scope"})
    ]
    assert parse_challenges("") == []


def test_secrets_stay_out_of_repr() -> None:
    options = RegistryOptions(username="alice", password=PASSWORD)
    assert PASSWORD not in repr(options)
    assert PASSWORD not in repr(Credentials("alice", PASSWORD))
    registry = OciRegistry("oci://127.0.0.1:1/ns", options=options)
    assert PASSWORD not in repr(registry) and PASSWORD not in registry.location


def test_username_without_password_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="registry password missing"):
        RegistryOptions(username="alice")
    options = options_from_environment(
        {"PACKAGER_REGISTRY_USERNAME": "bob", "PACKAGER_REGISTRY_PASSWORD": "pw"}
    )
    assert (options.username, options.password) == ("bob", "pw")


def test_docker_config_entries(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "registry.example:5000": {"auth": base64.b64encode(b"alice:pw:x").decode()},
                    "https://other.example/v1/": {"username": "bob", "password": "pw2"},
                    "helper.example": {},
                },
                "credHelpers": {"helper.example": "secretservice"},
            }
        )
    )
    alice = docker_credentials("registry.example:5000", config)
    assert alice is not None and (alice.username, alice.password) == ("alice", "pw:x")
    bob = docker_credentials("other.example", config)
    assert bob is not None and (bob.username, bob.password) == ("bob", "pw2")
    assert docker_credentials("helper.example", config) is None
    assert docker_credentials("registry.example", config) is None  # the port is part of it
    assert docker_credentials("x", tmp_path / "missing.json") is None
    config.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        docker_credentials("registry.example:5000", config)


def test_basic_auth_with_good_and_bad_credentials(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    basic_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    ref = oci(basic_registry, namespace)
    code, _, err = cli(capsys, monkeypatch, "publish", bundles["1.0.0"], "--registry", ref)
    assert code == 4
    assert "answered 401" in err and "--password-stdin" in err

    code, _, err = cli(
        capsys,
        monkeypatch,
        "publish",
        bundles["1.0.0"],
        "--registry",
        ref,
        "--username",
        "alice",
        "--password-stdin",
        stdin="not-the-password\n",
    )
    assert code == 4
    assert "answered 401" in err and "check the credentials" in err
    assert "not-the-password" not in err

    code, _, err = cli(
        capsys,
        monkeypatch,
        "publish",
        bundles["1.0.0"],
        "--registry",
        ref,
        "--username",
        "alice",
        "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )
    assert code == 0, err

    # From the environment, for install; a refused install is audited without the secret.
    monkeypatch.setenv("PACKAGER_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("PACKAGER_REGISTRY_PASSWORD", "wrong-secret-value")
    code, _, err = cli(
        capsys, monkeypatch, "install", "iris", "--registry", ref, "--key", keypair.pub_path
    )
    assert code == 4 and "wrong-secret-value" not in err
    monkeypatch.setenv("PACKAGER_REGISTRY_PASSWORD", PASSWORD)
    code, out, err = cli(
        capsys,
        monkeypatch,
        "install",
        "iris",
        "--registry",
        ref,
        "--key",
        keypair.pub_path,
        "--json",
    )
    assert code == 0, err
    assert PASSWORD not in out + err
    code, out, _ = cli(capsys, monkeypatch, "log", "--json")
    assert "wrong-secret-value" not in out and PASSWORD not in out
    state = b"".join(p.read_bytes() for p in home.glob("state.db*"))
    assert b"wrong-secret-value" not in state and PASSWORD.encode() not in state


def test_docker_config_auths_are_used(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_config_dir: Path,
    basic_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
) -> None:
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (docker_config_dir / "config.json").write_text(
        json.dumps({"auths": {basic_registry.host: {"auth": auth}}})
    )
    code, out, err = cli(
        capsys,
        monkeypatch,
        "publish",
        bundles["1.0.0"],
        "--registry",
        oci(basic_registry, namespace),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["digest"].startswith("sha256:")


def test_token_auth_one_token_per_operation(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    token_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    ref = oci(token_registry, namespace)
    before = len(tokens.requests)
    code, _, err = cli(
        capsys,
        monkeypatch,
        "publish",
        bundles["1.0.0"],
        "--registry",
        ref,
        "--username",
        "alice",
        "--password-stdin",
        stdin=PASSWORD,
    )
    assert code == 0, err
    # A publish is a dozen requests; all of them ride on one token.
    assert tokens.requests[before:] == [("alice", [f"repository:{namespace}/iris:pull,push"])]

    monkeypatch.setenv("PACKAGER_REGISTRY_USERNAME", "reader")
    monkeypatch.setenv("PACKAGER_REGISTRY_PASSWORD", USERS["reader"])
    code, _, err = cli(
        capsys,
        monkeypatch,
        "install",
        "iris",
        "--registry",
        ref,
        "--key",
        keypair.pub_path,
    )
    assert code == 0, err
    # The reader may pull but not push: the registry refuses, and says so.
    code, _, err = cli(capsys, monkeypatch, "publish", bundles["1.1.0"], "--registry", ref)
    assert code == 4
    assert "answered 401" in err and USERS["reader"] not in err


def test_token_is_reused_until_it_expires(
    token_registry: Authenticated, namespace: str, tmp_path: Path
) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    options = RegistryOptions(username="alice", password=PASSWORD, retry=FAST)
    OciRegistry(oci(token_registry, namespace), options=options).publish(
        *make_bundle(tmp_path, name="iris")
    )
    registry = OciRegistry(oci(token_registry, namespace), options=options)
    tokens.expires_in = 1
    try:
        before = len(tokens.requests)
        for _ in range(3):
            assert registry.versions("iris") == ["1.0.0"]
        assert len(tokens.requests) == before + 1
        time.sleep(1.0)
        assert registry.versions("iris") == ["1.0.0"]
        assert len(tokens.requests) == before + 2
    finally:
        tokens.expires_in = 300


def test_token_service_refusing_credentials(token_registry: Authenticated, namespace: str) -> None:
    options = RegistryOptions(username="alice", password="bad-password-123", retry=FAST)
    registry = OciRegistry(oci(token_registry, namespace), options=options)
    with pytest.raises(RegistryError, match="refused the credentials") as caught:
        registry.versions("iris")
    assert "bad-password-123" not in str(caught.value)
    assert caught.value.exit_code == 4


def test_catalog_with_a_token(
    token_registry: Authenticated, namespace: str, tmp_path: Path
) -> None:
    options = RegistryOptions(username="alice", password=PASSWORD, retry=FAST)
    registry = OciRegistry(oci(token_registry, namespace), options=options)
    registry.publish(*make_bundle(tmp_path / "a", name="alpha"))
    registry.publish(*make_bundle(tmp_path / "b", name="beta"))
    assert registry.names() == ["alpha", "beta"]
