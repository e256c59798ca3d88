"""Registry authentication: Basic (htpasswd) and Bearer tokens against real docker-registry
instances, credentials from options, environment and Docker's config.json - and never in
a message, a repr or the state database."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from packager.cli import main
from packager.errors import RegistryError, UsageError
from packager.registry.auth import Credentials, docker_credentials, parse_challenges
from packager.registry.oci import OciRegistry
from packager.registry.options import RegistryOptions, RetryPolicy, options_from_environment

from ..conftest import KeyPair
from .conftest import USERS, Authenticated
from .servers import Scripted, make_tls
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
                "credHelpers": {"helper.example": "packager-test-absent"},
            }
        )
    )
    alice = docker_credentials("registry.example:5000", config)
    assert alice is not None and (alice.username, alice.password) == ("alice", "pw:x")
    bob = docker_credentials("other.example", config)
    assert bob is not None and (bob.username, bob.password) == ("bob", "pw2")
    with pytest.raises(RegistryError, match="docker-credential-packager-test-absent, which"):
        docker_credentials("helper.example", config)  # the helper, not the empty auths entry
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
        "--plain-http",
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
        "--plain-http",
        stdin=f"{PASSWORD}\n",
    )
    assert code == 0, err

    # From the environment, for install; a refused install is audited without the secret.
    monkeypatch.setenv("PACKAGER_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("PACKAGER_REGISTRY_PASSWORD", "wrong-secret-value")
    code, _, err = cli(
        capsys,
        monkeypatch,
        "install",
        "iris",
        "--registry",
        ref,
        "--plain-http",
        "--key",
        keypair.pub_path,
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
        "--plain-http",
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
        "--plain-http",
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
    ca_cert = token_registry.ca_cert
    assert ca_cert is not None
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
        "--ca-cert",
        ca_cert,
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
        "--ca-cert",
        ca_cert,
        "--key",
        keypair.pub_path,
    )
    assert code == 0, err
    # The reader may pull but not push: the registry refuses, and says so.
    code, _, err = cli(
        capsys, monkeypatch, "publish", bundles["1.1.0"], "--registry", ref, "--ca-cert", ca_cert
    )
    assert code == 4
    assert "answered 401" in err and USERS["reader"] not in err


def test_token_is_reused_until_it_expires(
    token_registry: Authenticated, namespace: str, tmp_path: Path
) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    options = RegistryOptions(
        username="alice", password=PASSWORD, retry=FAST, ca_cert=token_registry.ca_cert
    )
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
    options = RegistryOptions(
        username="alice", password="bad-password-123", retry=FAST, ca_cert=token_registry.ca_cert
    )
    registry = OciRegistry(oci(token_registry, namespace), options=options)
    with pytest.raises(RegistryError, match="refused the credentials") as caught:
        registry.versions("iris")
    assert "bad-password-123" not in str(caught.value)
    assert caught.value.exit_code == 4


def test_catalog_with_a_token(
    token_registry: Authenticated, namespace: str, tmp_path: Path
) -> None:
    options = RegistryOptions(
        username="alice", password=PASSWORD, retry=FAST, ca_cert=token_registry.ca_cert
    )
    registry = OciRegistry(oci(token_registry, namespace), options=options)
    registry.publish(*make_bundle(tmp_path / "a", name="alpha"))
    registry.publish(*make_bundle(tmp_path / "b", name="beta"))
    assert registry.names() == ["alpha", "beta"]


# --- Where credentials may go: one test per way they could leak -------------------------------

TAGS = "/v2/ns/iris/tags/list"
LISTING = (200, {"Content-Type": "application/json"}, b'{"name": "ns/iris", "tags": ["1.0.0"]}')
TOKEN = (200, {"Content-Type": "application/json"}, b'{"token": "registry-token"}')


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Scripted, Scripted]]:
    """The registry on HTTPS, answering /v2/ and asking for Basic credentials on its tag
    list; and another server on HTTPS (another port: another host) that must never receive
    them. Both trust tmp_path/tls/server.pem."""
    tls = make_tls(tmp_path / "tls")
    registry = Scripted(tls=tls, challenges={TAGS: 'Basic realm="registry"'})
    registry.routes["/v2/"] = (200, {}, b"{}")
    with ExitStack() as stack:
        yield (
            stack.enter_context(registry.running()),
            stack.enter_context(Scripted(tls=tls).running()),
        )


def leak_check(registry: Scripted, **options: Any) -> RegistryError:
    """The error of listing iris's versions with alice's credentials from ``registry``."""
    registry_options = RegistryOptions(username="alice", password=PASSWORD, retry=FAST, **options)
    with pytest.raises(RegistryError) as caught:
        OciRegistry(f"oci://127.0.0.1:{registry.port}/ns", options=registry_options).versions(
            "iris"
        )
    assert PASSWORD not in str(caught.value)
    return caught.value


def test_a_redirect_targets_challenge_gets_no_credentials(
    servers: tuple[Scripted, Scripted], tmp_path: Path
) -> None:
    registry, other = servers
    # The registry's first answer is the redirect: the 401 that follows is the target's.
    del registry.challenges[TAGS]
    registry.routes[TAGS] = (307, {"Location": f"{other.url}/list"}, b"")
    other.challenges["/list"] = f'Bearer realm="{other.url}/token"'
    other.routes["/token"] = TOKEN
    error = leak_check(registry, ca_cert=tmp_path / "tls" / "server.pem")
    assert "answered 401" in str(error)
    assert [path for path, _ in other.seen] == ["/list"]
    assert other.authorizations() == []


def test_a_listing_linking_to_another_host_gets_no_credentials(
    servers: tuple[Scripted, Scripted], tmp_path: Path
) -> None:
    registry, other = servers
    link = f'<{other.url}{TAGS}?last=1.0.0>; rel="next"'
    registry.routes[TAGS] = (LISTING[0], {**LISTING[1], "Link": link}, LISTING[2])
    other.challenges[TAGS] = f'Bearer realm="{other.url}/token"'
    other.routes["/token"] = TOKEN
    error = leak_check(registry, ca_cert=tmp_path / "tls" / "server.pem")
    assert "answered 401" in str(error)
    assert registry.authorizations()
    assert other.seen and other.authorizations() == []


@pytest.mark.parametrize("registry_scheme", ["https", "http"])
def test_a_token_realm_on_plain_http_or_named_over_it_gets_no_credentials(
    registry_scheme: str, tmp_path: Path
) -> None:
    # Over HTTPS, the registry names a plain HTTP realm on another host; over plain HTTP
    # (--plain-http given for the registry), it names an HTTPS realm: neither may have them.
    tls = make_tls(tmp_path / "tls")
    registry = Scripted(tls=tls if registry_scheme == "https" else None)
    realm = Scripted(tls=None if registry_scheme == "https" else tls, routes={"/token": TOKEN})
    with registry.running(), realm.running():
        registry.routes["/v2/"] = (200, {}, b"{}")
        registry.challenges[TAGS] = f'Bearer realm="{realm.url}/token",service="registry"'
        error = leak_check(registry, ca_cert=tls.cert, plain_http=registry_scheme == "http")
    assert "credentials go only to a token service on HTTPS" in str(error)
    assert realm.authorizations() == []


def test_the_automatic_plain_http_to_loopback_gets_no_credentials() -> None:
    # No --plain-http: a loopback registry without TLS is reached over plain HTTP, where a
    # local user could be listening on that port; it gets no credentials.
    registry = Scripted(challenges={"/v2/": 'Basic realm="r"', TAGS: 'Basic realm="r"'})
    with registry.running():
        registry.routes[TAGS] = LISTING
        error = leak_check(registry)
        assert "--plain-http" in str(error)
        assert registry.seen and registry.authorizations() == []
        # Asked for, they are sent.
        options = RegistryOptions(username="alice", password=PASSWORD, plain_http=True)
        oci_registry = OciRegistry(f"oci://127.0.0.1:{registry.port}/ns", options=options)
        assert oci_registry.versions("iris") == ["1.0.0"]
    assert registry.authorizations()
