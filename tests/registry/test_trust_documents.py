"""The root of trust's documents in every kind of registry: the embedded directory, a real
docker-registry on 127.0.0.1, a static mirror served over HTTP, and archives."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packager._io.keys import generate_private_key
from packager.core.policy import Trusted, TrustPolicy, Unverified
from packager.distribution.mirror import export, mirror
from packager.distribution.root import RootSpec, delegate, init_root, newest_root, publish_root
from packager.errors import RegistryError, UntrustedError, UsageError
from packager.instance.roots import pin, trusted_mode
from packager.instance.store import Store
from packager.registry import ArchiveRegistry, LayoutRegistry
from packager.registry.base import Registry, RegistryReader
from packager.registry.roots import trust_documents

from .servers import serve
from .test_http_mirror import Site, _StaticHandler, mirror_at
from .test_layout import make_bundle
from .test_oci import registry_at

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
R1, R2, ONLINE, SIGNER, SIGNER2 = (generate_private_key() for _ in range(5))
ROOT_1 = init_root(RootSpec([R1, R2], 2, [ONLINE.public_key()]), now=NOW, expires_in=YEAR)
ROOT_2 = init_root(
    RootSpec([R1, R2], 1, [ONLINE.public_key()], version=2), now=NOW, expires_in=YEAR
)


def fill(registry: Registry) -> None:
    """Roots 1 and 2, and delegations version 2 (iris to SIGNER2)."""
    publish_root(ROOT_1, registry=registry)
    publish_root(ROOT_2, registry=registry)
    for signer in (SIGNER, SIGNER2):
        delegate("iris*", signer_keys=[signer.public_key()], delegation_keys=[ONLINE],
                 registry=registry, now=NOW)  # fmt: skip


@pytest.fixture(params=["layout", "oci", "static", "archive"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryReader]:
    if request.param == "oci":
        remote = registry_at(
            request.getfixturevalue("registry_host"), request.getfixturevalue("namespace")
        )
        fill(remote)
        yield remote
        return
    site = Site(tmp_path / "site")
    layout = LayoutRegistry(site.registry_dir)
    layout.publish(*make_bundle(tmp_path / "bundles", version="1.0.0"))
    fill(layout)
    if request.param == "layout":
        yield layout
    elif request.param == "archive":
        export(["iris@1.0.0"], registry=layout, out=tmp_path / "models.tar")
        yield ArchiveRegistry(tmp_path / "models.tar")
    else:
        with serve(_StaticHandler, site) as port:
            site.port = port
            yield mirror_at(site)


def test_every_kind_serves_the_chain_and_the_delegations(
    registry: RegistryReader, tmp_path: Path
) -> None:
    assert newest_root(registry).version == 2
    tags = [tag for tag, _ in trust_documents(registry)]
    assert tags == ["root.1", "root.2", "delegations"]
    store = Store(tmp_path / "home")
    pin(store, ROOT_1, now=NOW)
    mode = trusted_mode(
        Trusted(TrustPolicy({}, (), {}, "none")), registry=registry, store=store, now=NOW
    )
    assert isinstance(mode, Trusted)
    assert mode.policy.keys_for("iris") == [SIGNER2.public_key()]


def test_publishing_refuses_what_does_not_follow(tmp_path: Path) -> None:
    layout = LayoutRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="no root of trust"):
        newest_root(layout)
    with pytest.raises(RegistryError, match="no root of trust"):
        publish_root(ROOT_2, registry=layout)
    publish_root(ROOT_1, registry=layout)
    publish_root(ROOT_1, registry=layout)  # the same bytes again: a no-op
    other = init_root(RootSpec([R1, R2], 1, [ONLINE.public_key()]), now=NOW, expires_in=YEAR)
    with pytest.raises(RegistryError, match="already has root version 1"):
        publish_root(other, registry=layout)
    stranger = init_root(
        RootSpec([generate_private_key()], 1, [ONLINE.public_key()], version=2),
        now=NOW,
        expires_in=YEAR,
    )
    with pytest.raises(UntrustedError, match="by the keys of root v1"):
        publish_root(stranger, registry=layout)
    third = init_root(RootSpec([R1], 1, [ONLINE.public_key()], version=3), now=NOW, expires_in=YEAR)
    with pytest.raises(UsageError, match="must be version 2, not 3"):
        publish_root(third, registry=layout)
    with pytest.raises(UsageError, match="does not accept these delegations"):
        delegate("iris*", signer_keys=[SIGNER.public_key()], delegation_keys=[R1],
                 registry=layout, now=NOW)  # fmt: skip


def test_mirror_between_kinds_keeps_the_documents(tmp_path: Path) -> None:
    source = LayoutRegistry(tmp_path / "source")
    source.publish(*make_bundle(tmp_path / "bundles", version="1.0.0"))
    fill(source)
    destination = LayoutRegistry(tmp_path / "destination")
    mirror(source, destination, mode=Unverified("--no-verify"))
    assert trust_documents(destination) == trust_documents(source)
