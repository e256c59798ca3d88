"""Blobs signed by shards fetched one Range request per shard, from a real docker-registry
on 127.0.0.1 behind a recording proxy that misbehaves on purpose, and from a static
mirror whose server ignores ranges."""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import TamperedError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry
from packager.registry.transport import PARALLEL_SHARDS

from ..conftest import KeyPair
from ..test_shards import README, SHARD, package_sharded
from .servers import Proxy, ProxyHandler, serve
from .test_http_mirror import Site, _StaticHandler, mirror_at
from .test_oci import registry_at

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
RANGES = [
    f"bytes={start}-{min(start + SHARD, len(README)) - 1}" for start in range(0, len(README), SHARD)
]


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> Path:
    return package_sharded(tmp_path_factory.mktemp("ranges"), iris_model, iris, keypair, "3.0.0")


def readme_gets(proxy: Proxy, digest: str) -> list[str | None]:
    return [h.get("Range") for m, p, h in proxy.seen if m == "GET" and p.endswith(digest)]


def install_from(registry: Any, keypair: KeyPair, home: Path) -> Path:
    result = install(
        "iris@3.0.0",
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    return result.directory


def test_each_shard_is_fetched_with_its_own_range_a_few_at_once(
    registry_host: str, namespace: str, bundle: Path, keypair: KeyPair, home: Path
) -> None:
    registry = registry_at(registry_host, namespace)
    publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    digest = str(registry.resolve("iris", "3.0.0").files["README.md"].digest)
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def count(handler: ProxyHandler) -> bool:
        if not handler.path.endswith(digest):
            return False
        with lock:
            running[0] += 1
            running[1] = max(running)
        try:
            threading.Event().wait(0.2)  # so that the shards overlap
            handler.forward()
        finally:
            with lock:
                running[0] -= 1
        return True

    with Proxy(registry_host, hook=count).running() as proxy:
        installed = install_from(registry_at(proxy.host, namespace), keypair, home)
    assert sorted(readme_gets(proxy, digest), key=str) == sorted(RANGES)
    assert 1 < running[1] <= PARALLEL_SHARDS
    assert (installed / "README.md").read_bytes() == README


def break_range_once(digest: str, broken: str) -> Any:
    """A hook answering the Range ``broken`` of blob ``digest`` with half its bytes and a
    closed connection, once; everything else goes through."""
    done: list[bool] = []

    def hook(handler: ProxyHandler) -> bool:
        if not handler.path.endswith(digest) or handler.headers.get("Range") != broken or done:
            return False
        done.append(True)
        response = handler.upstream()
        body = response.read()
        handler.send_response(response.status)
        handler.send_header("Content-Range", response.getheader("Content-Range") or "")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True
        return True

    return hook


def test_a_broken_connection_fetches_that_shard_again_from_its_start(
    registry_host: str, namespace: str, bundle: Path, keypair: KeyPair, home: Path
) -> None:
    registry = registry_at(registry_host, namespace)
    publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    digest = str(registry.resolve("iris", "3.0.0").files["README.md"].digest)
    with Proxy(registry_host, hook=break_range_once(digest, RANGES[2])).running() as proxy:
        installed = install_from(registry_at(proxy.host, namespace), keypair, home)
    assert sorted(readme_gets(proxy, digest), key=str) == sorted([*RANGES, RANGES[2]])
    assert (installed / "README.md").read_bytes() == README


def corrupt_range(digest: str, target: str) -> Any:
    """A hook flipping one byte of the Range ``target`` of blob ``digest``."""

    def hook(handler: ProxyHandler) -> bool:
        if not handler.path.endswith(digest) or handler.headers.get("Range") != target:
            return False
        response = handler.upstream()
        body = bytearray(response.read())
        body[10] ^= 1
        handler.relay(response, bytes(body))
        return True

    return hook


def test_a_shard_that_differs_from_its_signed_digest_is_refused(
    registry_host: str, namespace: str, bundle: Path, keypair: KeyPair, home: Path
) -> None:
    registry = registry_at(registry_host, namespace)
    publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    digest = str(registry.resolve("iris", "3.0.0").files["README.md"].digest)
    hook = corrupt_range(digest, RANGES[3])
    with (
        Proxy(registry_host, hook=hook).running() as proxy,
        pytest.raises(TamperedError, match="bytes 12288-16384.*signed digest"),
    ):
        install_from(registry_at(proxy.host, namespace), keypair, home)
    assert not (home / "models" / "iris" / "3.0.0").exists()


def test_a_static_mirror_that_ignores_ranges_is_read_whole(
    tmp_path: Path, bundle: Path, keypair: KeyPair, home: Path
) -> None:
    site = Site(tmp_path / "site")
    publish_bundle(
        bundle, registry=LayoutRegistry(site.registry_dir), mode=Unverified("publish without --key")
    )
    with serve(_StaticHandler, site) as port:
        site.port = port
        installed = install_from(mirror_at(site), keypair, home)
    assert (installed / "README.md").read_bytes() == README


def test_shards_an_installed_version_holds_are_copied_not_fetched(
    registry_host: str,
    namespace: str,
    bundle: Path,
    keypair: KeyPair,
    home: Path,
    tmp_path: Path,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    changed = bytearray(README)
    changed[2 * SHARD + 100] ^= 1  # the third shard only
    newer = package_sharded(tmp_path, iris_model, iris, keypair, "3.0.1", bytes(changed))
    registry = registry_at(registry_host, namespace)
    for each in (bundle, newer):
        publish_bundle(each, registry=registry, mode=Unverified("publish without --key"))
    install_from(registry, keypair, home)
    digest = str(registry.resolve("iris", "3.0.1").files["README.md"].digest)
    with Proxy(registry_host).running() as proxy:
        result = install(
            "iris@3.0.1",
            registry=registry_at(proxy.host, namespace),
            store=Store(home),
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
    assert readme_gets(proxy, digest) == [RANGES[2]]
    assert (result.directory / "README.md").read_bytes() == bytes(changed)


def test_only_shards_whose_copied_bytes_match_are_reused(tmp_path: Path) -> None:
    from packager.core.digests import Digest
    from packager.core.shards import Shard, bounds
    from packager.registry.shard_reuse import reuse_shards

    wanted = README
    shards = [Shard(s, e, Digest.of(wanted[s:e])) for s, e in bounds(len(wanted), SHARD)]
    installed = bytearray(wanted[: 4 * SHARD])  # shorter: the last shard is not there
    installed[SHARD + 1] ^= 1  # and the second one differs
    (tmp_path / "installed").write_bytes(bytes(installed))
    fd = os.open(tmp_path / "new", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        os.ftruncate(fd, len(wanted))
        assert reuse_shards(tmp_path / "installed", fd, shards) == {0, 2, 3}
        for i in (0, 2, 3):
            assert os.pread(fd, SHARD, i * SHARD) == wanted[i * SHARD : (i + 1) * SHARD]
        assert reuse_shards(tmp_path / "missing", fd, shards) == set()
    finally:
        os.close(fd)
