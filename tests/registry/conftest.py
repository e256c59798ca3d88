"""Real OCI registries on 127.0.0.1: docker-registry without auth, with htpasswd basic
auth, and with token auth from a token server started here.

Without docker-registry (or htpasswd) the tests that need them are skipped with the
command that installs them, and fail under CI=true. PACKAGER_TEST_REGISTRY=host:port
points the unauthenticated tests at a registry that is already running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import RegistryProcess, TokenServer, htpasswd, make_tls

USERS = {"alice": "wonderland-secret", "reader": "read-only-secret"}


@dataclass(frozen=True)
class Authenticated:
    host: str
    token_server: TokenServer | None = None
    ca_cert: Path | None = None


@pytest.fixture(scope="session")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a registry without auth (docker-registry, or PACKAGER_TEST_REGISTRY)."""
    existing = os.environ.get("PACKAGER_TEST_REGISTRY")
    if existing:
        yield existing
        return
    process = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield process.host
    process.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authenticated]:
    """A registry taking HTTP Basic credentials for alice and reader (both may push)."""
    directory = tmp_path_factory.mktemp("basic-registry")
    path = htpasswd(directory / "htpasswd", USERS)
    auth = {"htpasswd": {"realm": "packager-test", "path": str(path)}}
    process = RegistryProcess(directory, auth=auth).start()
    yield Authenticated(process.host)
    process.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authenticated]:
    """A registry in token mode, both on HTTPS (credentials go only to a token service
    named over TLS): alice may pull and push, reader may only pull."""
    directory = tmp_path_factory.mktemp("token-registry")
    tls = make_tls(directory / "tls")
    users = {"alice": (USERS["alice"], {"pull", "push"}), "reader": (USERS["reader"], {"pull"})}
    with TokenServer(directory, users=users, tls=tls).running() as tokens:
        auth = {
            "token": {
                "realm": tokens.realm,
                "service": tokens.service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(tokens.root_bundle),
            }
        }
        process = RegistryProcess(directory, auth=auth, tls=tls).start()
        yield Authenticated(process.host, tokens, tls.cert)
        process.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test, so that tests sharing a registry never meet."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def docker_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Docker config directory: the user's own docker login never leaks in."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    monkeypatch.delenv("PACKAGER_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PACKAGER_REGISTRY_PASSWORD", raising=False)
    return directory
