"""Static mirrors: a registry directory served by a plain static web server on 127.0.0.1
(http.server serving files, over HTTP and over TLS with a private CA) is a read-only
registry for search, install, pull and mirror."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from packager.cli import main
from packager.core.channel import ARTIFACT_TYPE as CHANNEL_TYPE
from packager.core.channel import MAX_CHANNEL_BYTES
from packager.core.digests import Digest
from packager.core.manifest import dump_json
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.distribution.pull import pull
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry import open_destination, open_registry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.document import (
    EMPTY_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MAX_DOCUMENT_MANIFEST_BYTES,
)
from packager.registry.http import StaticMirrorRegistry
from packager.registry.layout import LayoutRegistry, render_models_index
from packager.registry.options import RegistryOptions, RetryPolicy

from ..conftest import KeyPair
from .servers import TlsFiles, make_tls, serve
from .test_transport import no_dns  # noqa: F401 - a fixture

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=0.1)


@dataclass
class Site:
    """A directory served by a static web server; the registry is ``root/registry``."""

    root: Path
    credentials: str | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/registry"

    def count(self, contains: str) -> int:
        return sum(1 for path, _ in self.requests if contains in path)


class _StaticHandler(SimpleHTTPRequestHandler):
    """Python's own static file server, recording requests, optionally behind Basic auth."""

    protocol_version = "HTTP/1.1"

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        super().__init__(request, client_address, server, directory=str(server.owner.root))

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner: Site = self.server.owner  # type: ignore[attr-defined]
        owner.requests.append((self.path, self.headers.get("Authorization")))
        expected = owner.credentials and "Basic " + base64.b64encode(
            owner.credentials.encode()
        ).decode("ascii")
        if expected and self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def site(tmp_path: Path, bundles: dict[str, Path]) -> Site:
    """iris 1.0.0, 1.1.0 and 2.0.0 published into a registry directory, with models.json."""
    site = Site(tmp_path / "site")
    registry = LayoutRegistry(site.registry_dir)
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    (site.registry_dir / "models.json").write_bytes(render_models_index(registry.names()))
    return site


@pytest.fixture
def served(site: Site) -> Iterator[Site]:
    with serve(_StaticHandler, site) as port:
        site.port = port
        yield site


def mirror_at(site: Site, **options: Any) -> StaticMirrorRegistry:
    options.setdefault("retry", FAST)
    return StaticMirrorRegistry(site.url, options=RegistryOptions(**options))


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def blob_path(site: Site, digest: Digest) -> Path:
    return site.registry_dir / "iris" / "blobs" / "sha256" / digest.hex


def test_search_install_and_pull_from_a_static_mirror(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    served: Site,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    code, out, err = cli(capsys, "search", "--registry", served.url, "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "registry": served.url,
        "models": {"iris": ["1.0.0", "1.1.0", "2.0.0"]},
    }

    registry = open_registry(served.url, home=home, options=RegistryOptions(retry=FAST))
    assert isinstance(registry, StaticMirrorRegistry)
    result = install(
        "iris",
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert result.version == "2.0.0"
    assert result.smoke_test is not None and result.smoke_test.rows > 0
    assert files_of(result.directory) == files_of(bundles["2.0.0"])

    code, out, err = cli(
        capsys,
        "pull",
        "iris@1.0.0",
        "--registry",
        served.url,
        "--key",
        keypair.pub_path,
        "-o",
        tmp_path / "pulled",
        "--json",
    )
    assert code == 0, err
    assert files_of(Path(json.loads(out)["bundle"])) == files_of(bundles["1.0.0"])
    # Only files of the registry directory were asked for, never a directory listing.
    assert all(
        path.startswith("/registry/") and not path.endswith("/") for path, _ in served.requests
    )


def stable_channel(registry: LayoutRegistry) -> bytes:
    return registry.get_document(
        "iris", "channel.stable", artifact_type=CHANNEL_TYPE, max_size=MAX_CHANNEL_BYTES
    )


def test_install_through_a_channel_and_mirror_it_with_its_channel(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    served: Site,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    source = LayoutRegistry(served.registry_dir)
    promote("iris@1.1.0", channel="stable", registry=source, private_key=keypair.private, now=NOW)
    result = install(
        "iris@stable",
        registry=mirror_at(served),
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert result.version == "1.1.0"
    assert files_of(result.directory) == files_of(bundles["1.1.0"])

    code, _, err = cli(
        capsys, "mirror", served.url, tmp_path / "copy", "iris@1.1.0", "--key", keypair.pub_path
    )
    assert code == 0, err
    copy = LayoutRegistry(tmp_path / "copy")
    assert copy.tags("iris") == ["1.1.0", "channel.stable"]
    assert copy.resolve("iris", "1.1.0") == source.resolve("iris", "1.1.0")
    assert stable_channel(copy) == stable_channel(source)


def test_tls_with_a_private_ca(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    site: Site,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    tls: TlsFiles = make_tls(tmp_path / "tls")
    site.scheme = "https"
    with serve(_StaticHandler, site, tls) as port:
        site.port = port
        with pytest.raises(RegistryError, match="not trusted.*--ca-cert") as caught:
            mirror_at(site).versions("iris")
        assert caught.value.exit_code == 4

        registry = mirror_at(site, ca_cert=tls.cert)
        result = install(
            "iris@1.1.0",
            registry=registry,
            store=Store(home),
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
        assert files_of(result.directory) == files_of(bundles["1.1.0"])
        code, out, err = cli(capsys, "search", "--registry", site.url, "--ca-cert", tls.cert)
        assert code == 0, err
        assert out == "iris  1.0.0, 1.1.0, 2.0.0\n"


def test_without_models_json_search_needs_a_name(
    capsys: pytest.CaptureFixture[str], served: Site
) -> None:
    (served.registry_dir / "models.json").unlink()
    with pytest.raises(RegistryError, match="no models.json") as caught:
        mirror_at(served).names()
    assert caught.value.exit_code == 4
    code, _, err = cli(capsys, "search", "--registry", served.url)
    assert code == 4
    assert f"`packager search NAME --registry {served.url}` still works" in err
    code, out, err = cli(capsys, "search", "iris", "--registry", served.url)
    assert code == 0, err
    assert out == "iris  1.0.0, 1.1.0, 2.0.0\n"


@pytest.mark.parametrize("content", [b'{"models": []}', b"not json", b'["Bad Name"]', b"[1]"])
def test_a_malformed_models_json_is_refused(served: Site, content: bytes) -> None:
    (served.registry_dir / "models.json").write_bytes(content)
    with pytest.raises(RegistryError, match="not a JSON list of model names"):
        mirror_at(served).names()


def test_models_index_is_canonical_and_checked() -> None:
    assert render_models_index(["b-model", "a.model", "b-model"]) == dump_json(
        ["a.model", "b-model"]
    )
    assert render_models_index([]) == b"[]\n"
    with pytest.raises(UsageError, match="invalid model name"):
        render_models_index(["iris", "../etc"])


def test_missing_model_or_version_is_not_found_with_a_hint(
    capsys: pytest.CaptureFixture[str], served: Site, keypair: KeyPair, home: Path
) -> None:
    registry = mirror_at(served)
    assert registry.versions("fraud") == []
    with pytest.raises(NotFoundError, match="model 'fraud' not found") as caught:
        registry.resolve("fraud", "1.0.0")
    assert caught.value.exit_code == 4
    with pytest.raises(NotFoundError, match=r"version 9\.9\.9 not found.*packager search iris"):
        registry.resolve("iris", "9.9.9")
    code, _, err = cli(
        capsys, "install", "fraud", "--registry", served.url, "--key", keypair.pub_path
    )
    assert code == 4
    assert "no version of fraud" in err and "packager search" in err
    assert not (home / "models" / "fraud").exists()


@pytest.mark.parametrize("blob", ["model.onnx", "model.sig", "OCI manifest"])
def test_a_tampered_blob_on_the_server_is_refused_with_exit_3(
    capsys: pytest.CaptureFixture[str], served: Site, keypair: KeyPair, home: Path, blob: str
) -> None:
    artifact = LayoutRegistry(served.registry_dir).resolve("iris", "1.1.0")
    digest = artifact.manifest_digest if blob == "OCI manifest" else artifact.files[blob].digest
    path = blob_path(served, digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    code, _, err = cli(
        capsys, "install", "iris@1.1.0", "--registry", served.url, "--key", keypair.pub_path
    )
    assert code == 3, err
    assert not (home / "models" / "iris").exists()


def test_a_mirror_is_read_only(
    capsys: pytest.CaptureFixture[str], served: Site, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    # A mirror has no write methods at all; asking for a writer is refused when opening.
    registry = mirror_at(served)
    assert not hasattr(registry, "publish")
    assert not hasattr(registry, "put_document")
    with pytest.raises(UsageError, match="read-only mirror; publish") as caught:
        open_destination(served.url, home=served.registry_dir)
    assert caught.value.exit_code == 2
    code, _, err = cli(capsys, "publish", bundles["1.0.0"], "--registry", served.url)
    assert code == 2
    assert "read-only mirror" in err
    code, _, err = cli(
        capsys,
        "promote",
        "iris@1.0.0",
        "--channel",
        "stable",
        "--key",
        keypair.key_path,
        "--registry",
        served.url,
    )
    assert code == 2
    assert "read-only mirror" in err
    assert served.requests == []


def corrupted(index: dict[str, Any], how: str) -> bytes:
    """index.json of the layout, damaged as ``how`` says."""
    entries = index["manifests"]
    if how == "not-json":
        return b"{"
    if how == "no-list":
        return b'{"manifests": {}}'
    if how == "same-entry-twice":
        entries = entries * 2
    if how == "two-digests":
        entries = [*entries, *({**e, "digest": "sha256:" + "0" * 64} for e in entries)]
    if how == "not-a-manifest":
        entries = [{**e, "mediaType": "text/plain"} for e in entries]
    return dump_json({**index, "manifests": entries})


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        ("not-json", RegistryError, "not an OCI image index"),
        ("no-list", RegistryError, "not an OCI image index"),
        ("same-entry-twice", TamperedError, "tags 1.0.0 more than once"),
        ("two-digests", TamperedError, "tags 1.0.0 more than once"),
        ("not-a-manifest", TamperedError, "not an OCI manifest"),
    ],
)
def test_a_corrupt_index_is_refused(
    served: Site, how: str, error: type[Exception] | None, message: str
) -> None:
    path = served.registry_dir / "iris" / "index.json"
    path.write_bytes(corrupted(json.loads(path.read_bytes()), how))
    registry = mirror_at(served)
    if error is None:
        assert registry.resolve("iris", "1.0.0").version == "1.0.0"
        return
    with pytest.raises(error, match=message):
        registry.resolve("iris", "1.0.0")


def write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def tag_document(
    layout: Path,
    tag: str,
    data: bytes,
    *,
    artifact_type: str = CHANNEL_TYPE,
    layers: int = 1,
    declared_size: int | None = None,
) -> None:
    """Tag a malformed document in ``layout``, the way a hostile registry could."""
    layer = {"mediaType": LAYER_MEDIA_TYPE, **write_blob(layout, data)}
    manifest = dump_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, **write_blob(layout, b"{}")},
            "layers": [layer] * layers,
        }
    )
    entry = {
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        **write_blob(layout, manifest),
        "artifactType": artifact_type,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    if declared_size is not None:
        entry["size"] = declared_size
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"].append(entry)
    (layout / "index.json").write_bytes(dump_json(index))


def test_documents_are_read_with_their_caps_and_checks(served: Site) -> None:
    layout = served.registry_dir / "iris"
    document = b'{"channel": "stable"}'
    source = LayoutRegistry(served.registry_dir)
    source.put_document("iris", "channel.stable", document, artifact_type=CHANNEL_TYPE)
    tag_document(layout, "channel.other", document, artifact_type="application/vnd.example+json")
    tag_document(layout, "channel.two-layers", document, layers=2)
    tag_document(layout, "channel.huge", document, declared_size=100 << 20)
    registry = mirror_at(served)

    def get(tag: str, max_size: int = 1024, name: str = "iris") -> bytes:
        return registry.get_document(name, tag, artifact_type=CHANNEL_TYPE, max_size=max_size)

    assert get("channel.stable") == document
    assert registry.versions("iris") == ["1.0.0", "1.1.0", "2.0.0"]
    assert registry.tags("iris") == source.tags("iris")
    with pytest.raises(NotFoundError, match="no channel.beta for iris"):
        get("channel.beta")
    with pytest.raises(NotFoundError, match="model 'fraud' not found"):
        get("channel.stable", name="fraud")
    with pytest.raises(UsageError, match="would read as a version"):
        get("1.0.0")
    with pytest.raises(TamperedError, match="artifactType"):
        get("channel.other")
    with pytest.raises(TamperedError, match="exactly one layer"):
        get("channel.two-layers")

    # Sizes over the caps are refused from the descriptors, before any byte is asked for.
    served.requests.clear()
    with pytest.raises(TamperedError, match=f"more than the {MAX_DOCUMENT_MANIFEST_BYTES}"):
        get("channel.huge")
    with pytest.raises(TamperedError, match="more than the 16 allowed"):
        get("channel.stable", max_size=16)
    layer_hex = hashlib.sha256(document).hexdigest()
    assert served.count(layer_hex) == 0

    (layout / "blobs" / "sha256" / layer_hex).write_bytes(document.upper())
    with pytest.raises(TamperedError, match="do not match"):
        get("channel.stable")


def test_basic_auth_is_answered_only_after_a_challenge(
    capsys: pytest.CaptureFixture[str], site: Site, keypair: KeyPair
) -> None:
    site.credentials = "reader:mirror-secret"
    with serve(_StaticHandler, site) as port:
        site.port = port
        code, _, err = cli(capsys, "search", "iris", "--registry", site.url)
        assert code == 4
        assert "answered 401" in err
        # Credentials go over plain HTTP only when --plain-http asks for it.
        registry = mirror_at(site, username="reader", password="mirror-secret", plain_http=True)
        assert registry.versions("iris") == ["1.0.0", "1.1.0", "2.0.0"]
    sent = [auth for _, auth in site.requests]
    assert sent[:2] == [None, None]  # anonymous first, as with any registry
    assert sent[-1] == "Basic " + base64.b64encode(b"reader:mirror-secret").decode()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:secret@mirror.example/models", "put no credentials"),
        ("https://mirror.example/models?token=secret", "must not have a query"),
        ("https://mirror.example:99999/models", "invalid mirror URL"),
        ("https:///models", "invalid mirror URL"),
    ],
)
def test_malformed_mirror_urls_are_refused_without_echoing_secrets(
    url: str, message: str, home: Path
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        open_registry(url, home=home)
    assert "secret" not in str(caught.value)


def test_urls_are_dispatched_and_normalised(home: Path) -> None:
    for url in ("https://Mirror.Example/models/", "HTTPS://mirror.example/models"):
        registry = open_registry(url, home=home)
        assert isinstance(registry, StaticMirrorRegistry)
        assert registry.location == "https://mirror.example/models"
    assert open_registry("http://127.0.0.1:8080", home=home).location == "http://127.0.0.1:8080"
    with pytest.raises(UsageError, match="ftp:// registries are not supported"):
        open_registry("ftp://mirror.example/models", home=home)


def test_plain_http_elsewhere_is_refused_before_any_socket(
    no_dns: list[str],  # noqa: F811 - the fixture imported above
    home: Path,
) -> None:
    registry = open_registry("http://mirror.example.test/models", home=home)
    with pytest.raises(RegistryError, match="refusing plain HTTP.*--plain-http") as caught:
        registry.versions("iris")
    assert caught.value.exit_code == 4
    assert no_dns == []


def test_pull_writes_nothing_when_a_blob_is_missing(
    tmp_path: Path, served: Site, keypair: KeyPair
) -> None:
    artifact = LayoutRegistry(served.registry_dir).resolve("iris", "1.0.0")
    os.remove(blob_path(served, artifact.files["testvectors.npz"].digest))
    out = tmp_path / "pulled"
    with pytest.raises(RegistryError, match="answered 404") as caught:
        pull(
            "iris@1.0.0",
            registry=mirror_at(served),
            out_dir=tmp_path / "o",
            mode=Trusted(adhoc_policy([keypair.public])),
            now=datetime.now(UTC),
        )
    assert caught.value.exit_code == 4
    assert not out.exists() or not any(out.iterdir())


def test_closing_a_mirror_closes_its_connections(served: Site) -> None:
    with mirror_at(served) as registry:
        assert registry.versions("iris")
        pool = registry._store._transport._pool  # type: ignore[attr-defined]
        idle = [c for connections in pool._idle.values() for c in connections]
        assert len(idle) == 1  # one keep-alive connection served every request
    assert not pool._idle
    assert all(connection.sock is None for connection in idle)
