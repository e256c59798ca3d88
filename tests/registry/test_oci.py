"""OCI distribution registries: publish, search, install and pull against a real
docker-registry on 127.0.0.1, directly or through a recording proxy that misbehaves on
purpose; and interoperability with skopeo."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from packager.cli import main
from packager.core.digests import Digest
from packager.core.manifest import parse_manifest
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import NotFoundError, RegistryError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry import open_registry
from packager.registry.artifact import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE
from packager.registry.oci import (
    MAX_LISTED,
    MAX_LISTING_BYTES,
    MAX_PAGES,
    OciRegistry,
    parse_reference,
    tag_version,
    version_tag,
)
from packager.registry.options import RegistryOptions, RetryPolicy

from ..conftest import KeyPair
from .servers import EndlessListing, Proxy, ProxyHandler, make_tls, require
from .test_layout import make_bundle

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=0.1)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def oci(host: str, namespace: str) -> str:
    return f"oci://{host}/{namespace}"


def registry_at(host: str, namespace: str, **options: Any) -> OciRegistry:
    options.setdefault("retry", FAST)
    return OciRegistry(oci(host, namespace), options=RegistryOptions(**options))


def publish(registry: OciRegistry, bundle: Path) -> Digest:
    return publish_bundle(
        bundle, registry=registry, mode=Unverified("publish without --key")
    ).manifest_digest


def served_manifest(host: str, repository: str, tag: str) -> bytes:
    response = requests.get(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": OCI_MANIFEST_MEDIA_TYPE},
        timeout=10,
    )
    response.raise_for_status()
    return response.content


def blob_digests(registry: OciRegistry, name: str, version: str) -> set[str]:
    artifact = registry.resolve(name, version)
    return {str(d.digest) for d in artifact.files.values()}


def test_publish_search_install_pull_via_the_cli(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    ref = oci(registry_host, namespace)
    code, out, err = cli(
        capsys, "publish", bundles["1.0.0"], "--registry", ref, "--key", keypair.pub_path, "--json"
    )
    assert code == 0, err
    published = json.loads(out)
    assert published["reference"] == f"{ref}/iris:1.0.0"
    served = served_manifest(registry_host, f"{namespace}/iris", "1.0.0")
    assert published["digest"] == f"sha256:{hashlib.sha256(served).hexdigest()}"
    assert cli(capsys, "publish", bundles["1.1.0"], "--registry", ref)[0] == 0

    code, out, err = cli(capsys, "search", "--registry", ref, "--json")
    assert code == 0, err
    assert json.loads(out) == {"registry": ref, "models": {"iris": ["1.0.0", "1.1.0"]}}

    code, out, err = cli(capsys, "install", "iris", "--registry", ref, "--key", keypair.pub_path)
    assert code == 0, err
    assert "installed iris@1.1.0" in out
    assert (home / "models" / "iris" / "current").resolve().name == "1.1.0"

    code, out, err = cli(
        capsys,
        "pull",
        "iris@1.0.0",
        "--registry",
        ref,
        "--key",
        keypair.pub_path,
        "-o",
        tmp_path / "pulled",
        "--json",
    )
    assert code == 0, err
    pulled = Path(json.loads(out)["bundle"])
    assert pulled == tmp_path / "pulled" / "iris-1.0.0"
    assert {p.name: p.read_bytes() for p in pulled.iterdir()} == {
        p.name: p.read_bytes() for p in bundles["1.0.0"].iterdir()
    }
    assert cli(capsys, "verify", pulled, "--key", keypair.pub_path)[0] == 0


def test_publish_and_install_via_the_library(
    registry_host: str, namespace: str, bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> None:
    registry = open_registry(
        oci(registry_host, namespace), home=home, options=RegistryOptions(retry=FAST)
    )
    for version in ("1.0.0", "2.0.0"):
        publish_bundle(
            bundles[version], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
        )
    assert registry.names() == ["iris"]
    assert registry.versions("iris") == ["1.0.0", "2.0.0"]
    result = install(
        "iris",
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert result.version == "2.0.0"
    assert result.smoke_test.rows > 0


def test_republishing_is_idempotent_and_a_conflict_is_refused(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
) -> None:
    with Proxy(registry_host).running() as proxy:
        registry = registry_at(proxy.host, namespace)
        first = publish(registry, bundles["1.0.0"])
        proxy.seen.clear()
        assert publish(registry, bundles["1.0.0"]) == first
        # One look at the tag, and nothing written.
        assert [(m, p.split("?")[0]) for m, p, _ in proxy.seen] == [
            ("GET", f"/v2/{namespace}/iris/manifests/1.0.0")
        ]
    impostor, manifest = make_bundle(tmp_path, name="iris", version="1.1.0")
    registry_at(registry_host, namespace).publish(impostor, manifest)
    code, _, err = cli(
        capsys, "publish", bundles["1.1.0"], "--registry", oci(registry_host, namespace)
    )
    assert code == 4
    assert "iris@1.1.0 already exists with different content" in err
    assert "publish a new version" in err


def test_blobs_already_present_are_not_uploaded_again(
    registry_host: str, namespace: str, bundles: dict[str, Path]
) -> None:
    registry = registry_at(registry_host, namespace)
    publish(registry, bundles["1.0.0"])
    present = blob_digests(registry, "iris", "1.0.0")
    with Proxy(registry_host).running() as proxy:
        publish(registry_at(proxy.host, namespace), bundles["1.1.0"])
    new = blob_digests(registry, "iris", "1.1.0")
    assert new & present, "versions of one model share the graph and test vectors"
    config = json.loads(served_manifest(registry_host, f"{namespace}/iris", "1.1.0"))["config"]
    blobs = len(new) + 1  # the layers and the config
    assert proxy.count("HEAD", "/blobs/sha256:") == blobs
    assert proxy.count("POST", "/blobs/uploads/") == len(new - present) + 1
    assert proxy.count("PUT", "/manifests/1.1.0") == 1
    assert config["mediaType"] == CONFIG_MEDIA_TYPE


def test_chunked_upload(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    with Proxy(registry_host).running() as proxy:
        code, _, err = cli(
            capsys,
            "publish",
            bundles["1.0.0"],
            "--registry",
            oci(proxy.host, namespace),
            "--chunk-size",
            "1K",
        )
    assert code == 0, err
    sizes = [p.stat().st_size for p in bundles["1.0.0"].iterdir()]
    assert proxy.count("PATCH") == sum(-(-s // 1024) for s in sizes if s > 1024) > 2
    ranges = [h["Content-Range"] for m, _, h in proxy.seen if m == "PATCH"]
    # Each blob is sent in 1 KiB chunks from its start (the smaller files end early).
    assert ranges[0] == "0-1023" and "1024-2047" in ranges
    code, _, err = cli(
        capsys,
        "install",
        "iris",
        "--registry",
        oci(registry_host, namespace),
        "--key",
        keypair.pub_path,
    )
    assert code == 0, err


def refuse_patch(handler: ProxyHandler) -> bool:
    if handler.command != "PATCH":
        return False
    handler.body()
    handler.answer(405, b'{"errors": [{"code": "UNSUPPORTED", "message": "no chunks"}]}')
    return True


def test_falls_back_to_one_put_when_patch_is_refused(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    with Proxy(registry_host, hook=refuse_patch).running() as proxy:
        registry = registry_at(proxy.host, namespace, chunk_size=1024)
        publish(registry, bundles["1.0.0"])
    large = [p for p in bundles["1.0.0"].iterdir() if p.stat().st_size > 1024]
    assert large
    assert proxy.count("PATCH") == len(large)  # one refused try per large blob
    code, _, err = cli(
        capsys,
        "install",
        "iris",
        "--registry",
        oci(registry_host, namespace),
        "--key",
        keypair.pub_path,
    )
    assert code == 0, err


def chunk_minimum(value: str) -> Callable[[ProxyHandler], bool]:
    """A proxy hook adding ``OCI-Chunk-Min-Length: value`` to the answers opening uploads."""

    def hook(handler: ProxyHandler) -> bool:
        if handler.command != "POST":
            return False
        response = handler.upstream()
        body = response.read()
        response.msg["OCI-Chunk-Min-Length"] = value
        handler.relay(response, body)
        return True

    return hook


@pytest.mark.parametrize(
    ("value", "chunked"),
    [("1234567", False), ("²", True), ("1_234_567", True), ("+1234567", True), ("9" * 40, True)],
)
def test_a_chunk_minimum_is_ascii_digits_or_ignored(
    value: str, chunked: bool, registry_host: str, namespace: str, bundles: dict[str, Path]
) -> None:
    with Proxy(registry_host, hook=chunk_minimum(value)).running() as proxy:
        publish(registry_at(proxy.host, namespace, chunk_size=1024), bundles["1.0.0"])
    sizes = [p.stat().st_size for p in bundles["1.0.0"].iterdir()]
    patches = sum(-(-s // 1024) for s in sizes if s > 1024)
    assert patches > 2
    # A minimum the registry states is honoured (one PUT each); anything else is no number.
    assert proxy.count("PATCH") == (patches if chunked else 0)


def test_a_blob_known_in_another_repository_is_mounted(
    tmp_path: Path, registry_host: str, namespace: str
) -> None:
    alpha = make_bundle(tmp_path / "a", name="alpha")
    beta = make_bundle(tmp_path / "b", name="beta")
    with Proxy(registry_host).running() as proxy:
        registry = registry_at(proxy.host, namespace)
        registry.publish(*alpha)
        proxy.seen.clear()
        registry.publish(*beta)
    registry = registry_at(registry_host, namespace)
    shared = blob_digests(registry, "alpha", "1.0.0") & blob_digests(registry, "beta", "1.0.0")
    assert shared
    mounts = [p for m, p, _ in proxy.seen if m == "POST" and "mount=" in p]
    assert len(mounts) == len(shared)
    assert all(f"from={namespace}%2Falpha" in p or f"from={namespace}/alpha" in p for p in mounts)
    # Mounted, not uploaded: no PUT carries a shared digest.
    puts = [p for m, p, _ in proxy.seen if m == "PUT" and "digest=" in p]
    assert not any(d.replace(":", "%3A") in p or d in p for d in shared for p in puts)
    for desc in registry.resolve("beta", "1.0.0").files.values():
        registry.read_blob("beta", desc, max_size=1 << 20)


def test_build_metadata_is_written_as_underscore_in_the_tag(
    tmp_path: Path, registry_host: str, namespace: str
) -> None:
    registry = registry_at(registry_host, namespace)
    registry.publish(*make_bundle(tmp_path, name="iris", version="1.0.0+build.5"))
    tags = requests.get(f"http://{registry_host}/v2/{namespace}/iris/tags/list", timeout=10)
    assert tags.json()["tags"] == ["1.0.0_build.5"]
    assert registry.versions("iris") == ["1.0.0+build.5"]
    assert registry.resolve("iris", "1.0.0+build.5").version == "1.0.0+build.5"
    assert version_tag("1.0.0-rc.1+b") == "1.0.0-rc.1_b"
    assert tag_version("latest") is None and tag_version("sha256-abc.sig") is None


def test_missing_model_or_version_is_not_found(registry_host: str, namespace: str) -> None:
    registry = registry_at(registry_host, namespace)
    assert registry.versions("nosuch") == []
    with pytest.raises(NotFoundError, match="not found"):
        registry.resolve("nosuch", "1.0.0")


def test_references_are_checked_before_any_connection() -> None:
    with pytest.raises(UsageError, match="no credentials") as caught:
        parse_reference("oci://alice:hunter2@registry.example/models")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError, match="invalid namespace"):
        parse_reference("oci://registry.example/Models")
    assert parse_reference("oci://Registry.example:5000/team/models/") == (
        "registry.example:5000",
        "team/models",
    )
    with pytest.raises(UsageError, match="not a valid OCI repository name"):
        OciRegistry("oci://127.0.0.1:1/ns", options=RegistryOptions()).versions("iris-")
    opened = open_registry("oci://registry.example:5000/models", home=Path("/nonexistent"))
    assert isinstance(opened, OciRegistry)
    assert opened.location == "oci://registry.example:5000/models"


def drop_blob_once(digest: str) -> Any:
    """A hook sending half of blob ``digest`` and closing, once; later requests go through."""
    dropped: list[str] = []

    def hook(handler: ProxyHandler) -> bool:
        if handler.command != "GET" or not handler.path.endswith(digest) or dropped:
            return False
        dropped.append(handler.path)
        response = handler.upstream()
        body = response.read()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True
        return True

    return hook


def test_install_resumes_a_dropped_blob(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    registry = registry_at(registry_host, namespace)
    publish(registry, bundles["1.0.0"])
    model = registry.resolve("iris", "1.0.0").files["model.onnx"]
    with Proxy(registry_host, hook=drop_blob_once(str(model.digest))).running() as proxy:
        code, _, err = cli(
            capsys,
            "install",
            "iris@1.0.0",
            "--registry",
            oci(proxy.host, namespace),
            "--key",
            keypair.pub_path,
        )
    assert code == 0, err
    ranges = [h.get("Range") for m, p, h in proxy.seen if m == "GET" and str(model.digest) in p]
    assert ranges == [None, f"bytes={model.size // 2}-"]


def corrupt_blob(digest: str) -> Any:
    def hook(handler: ProxyHandler) -> bool:
        if handler.command != "GET" or not handler.path.endswith(digest):
            return False
        response = handler.upstream()
        body = response.read()
        handler.relay(response, bytes([body[0] ^ 1]) + body[1:])
        return True

    return hook


def resize_layer(title: str) -> Any:
    """Serves manifests with one layer declared a byte larger (and no digest header)."""

    def hook(handler: ProxyHandler) -> bool:
        if handler.command != "GET" or "/manifests/" not in handler.path:
            return False
        response = handler.upstream()
        doc = json.loads(response.read())
        for layer in doc["layers"]:
            if layer["annotations"]["org.opencontainers.image.title"] == title:
                layer["size"] += 1
        body = json.dumps(doc).encode()
        handler.answer(200, body, {"Content-Type": OCI_MANIFEST_MEDIA_TYPE})
        return True

    return hook


def wrong_digest_header(handler: ProxyHandler) -> bool:
    if handler.command != "GET" or "/manifests/" not in handler.path:
        return False
    body = handler.upstream().read()
    claimed = f"sha256:{'0' * 64}"
    headers = {"Content-Type": OCI_MANIFEST_MEDIA_TYPE, "Docker-Content-Digest": claimed}
    handler.answer(200, body, headers)
    return True


@pytest.mark.parametrize("lie", ["corrupt blob", "larger size", "digest header"])
def test_a_lying_registry_is_refused_with_exit_3(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
    lie: str,
) -> None:
    registry = registry_at(registry_host, namespace)
    publish(registry, bundles["1.0.0"])
    model = registry.resolve("iris", "1.0.0").files["model.onnx"]
    hook = {
        "corrupt blob": corrupt_blob(str(model.digest)),
        "larger size": resize_layer("model.onnx"),
        "digest header": wrong_digest_header,
    }[lie]
    with Proxy(registry_host, hook=hook).running() as proxy:
        code, _, err = cli(
            capsys,
            "install",
            "iris@1.0.0",
            "--registry",
            oci(proxy.host, namespace),
            "--key",
            keypair.pub_path,
        )
    assert code == 3, err
    assert not (home / "models" / "iris").exists()


def test_a_registry_refusing_the_catalog_is_named(
    capsys: pytest.CaptureFixture[str], registry_host: str, namespace: str
) -> None:
    def refuse_catalog(handler: ProxyHandler) -> bool:
        if "/_catalog" not in handler.path:
            return False
        handler.answer(403, b'{"errors": [{"code": "DENIED"}]}')
        return True

    with Proxy(registry_host, hook=refuse_catalog).running() as proxy:
        ref = oci(proxy.host, namespace)
        code, _, err = cli(capsys, "search", "--registry", ref)
        assert code == 4
        assert "does not let this client list its repositories" in err
        assert "packager search NAME" in err
        # The hinted command lists one repository's tags, which needs no catalog: here it
        # reaches the registry and finds no iris (nothing was published), exit 4.
        code, out, err = cli(capsys, "search", "iris", "--registry", ref, "--json")
        assert code == 4, err
        assert "model 'iris' not found" in err and "list its repositories" not in err
        assert json.loads(out)["exitCode"] == 4


def test_tls_with_a_private_ca(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    tls = make_tls(tmp_path / "tls")
    with Proxy(registry_host, tls=tls).running() as proxy:
        ref = oci(proxy.host, namespace)
        code, _, err = cli(capsys, "publish", bundles["1.0.0"], "--registry", ref)
        assert code == 4
        assert "not trusted" in err and "--ca-cert" in err
        for command in (
            ["publish", bundles["1.0.0"]],
            ["install", "iris", "--key", keypair.pub_path],
        ):
            code, _, err = cli(capsys, *command, "--registry", ref, "--ca-cert", tls.cert)
            assert code == 0, err
    assert {m for m, _, _ in proxy.seen} >= {"GET", "HEAD", "POST", "PUT"}


def test_plain_http_to_a_named_host_needs_the_flag(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    # "registry.test" is this machine's registry under a name that is not loopback.
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "registry.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = registry_host.rpartition(":")[2]
    ref = oci(f"registry.test:{port}", namespace)
    code, _, err = cli(capsys, "publish", bundles["1.0.0"], "--registry", ref)
    assert code == 4
    assert "TLS failed" in err  # HTTPS was tried, and never plain HTTP
    code, _, err = cli(capsys, "publish", bundles["1.0.0"], "--registry", ref, "--plain-http")
    assert code == 0, err
    code, _, err = cli(
        capsys, "install", "iris", "--registry", ref, "--plain-http", "--key", keypair.pub_path
    )
    assert code == 0, err


def skopeo(*args: str) -> str:
    return subprocess.run(
        [require("skopeo"), "--insecure-policy", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_skopeo_reads_a_published_model(
    registry_host: str, namespace: str, bundles: dict[str, Path]
) -> None:
    require("skopeo")
    publish(registry_at(registry_host, namespace), bundles["1.0.0"])
    source = f"docker://{registry_host}/{namespace}/iris:1.0.0"
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", source))
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    config = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false", source))
    assert config["descriptor"]["name"] == "iris"
    assert config["config"] == {"format": "onnx"}


def test_skopeo_copies_keep_digests_and_install(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    require("skopeo")
    digest = publish(registry_at(registry_host, namespace), bundles["1.0.0"])
    layout = tmp_path / "copied"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        f"docker://{registry_host}/{namespace}/iris:1.0.0",
        f"oci:{layout}:1.0.0",
    )
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:1.0.0",
        f"docker://{registry_host}/{namespace}-other/iris:1.0.0",
    )
    other = registry_at(registry_host, f"{namespace}-other")
    assert other.resolve("iris", "1.0.0").manifest_digest == digest
    code, _, err = cli(
        capsys,
        "install",
        "iris@1.0.0",
        "--registry",
        oci(registry_host, f"{namespace}-other"),
        "--key",
        keypair.pub_path,
    )
    assert code == 0, err


def test_skopeo_moves_a_model_from_the_embedded_registry(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    require("skopeo")
    assert cli(capsys, "publish", bundles["1.0.0"])[0] == 0
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{home}/registry/iris:1.0.0",
        f"docker://{registry_host}/{namespace}/iris:1.0.0",
    )
    code, out, err = cli(
        capsys,
        "install",
        "iris",
        "--registry",
        oci(registry_host, namespace),
        "--key",
        keypair.pub_path,
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["version"] == "1.0.0"


def test_version_manifest_is_parsed_not_trusted(
    tmp_path: Path, registry_host: str, namespace: str
) -> None:
    bundle, manifest = make_bundle(tmp_path, name="iris", version="1.0.0")
    registry = registry_at(registry_host, namespace)
    artifact = registry.publish(bundle, manifest)
    assert registry.resolve("iris", "1.0.0") == artifact
    assert parse_manifest((bundle / "manifest.json").read_bytes()) == manifest
    with pytest.raises(RegistryError, match="already exists with different content"):
        registry.publish(
            *make_bundle(tmp_path / "again", name="iris", version="1.0.0", model=b"another graph")
        )


def test_progress_is_reported_on_stderr_when_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, registry_host: str, namespace: str
) -> None:
    bundle, manifest = make_bundle(tmp_path, name="iris")
    registry_at(registry_host, namespace, progress=True).publish(bundle, manifest)
    registry = registry_at(registry_host, namespace, progress=True)
    desc = registry.resolve("iris", "1.0.0").files["model.onnx.data"]
    registry.fetch_blob("iris", desc, tmp_path / "weights")
    out, err = capsys.readouterr()
    # Without a terminal click prints each bar's label once; the CLI asks for bars only on one.
    assert out == ""
    assert "uploading model.onnx.data" in err and "fetching model.onnx.data" in err
    registry_at(registry_host, namespace).fetch_blob("iris", desc, tmp_path / "again")
    assert capsys.readouterr().err == ""


def test_closing_an_oci_registry_closes_its_connections(registry_host: str, namespace: str) -> None:
    with registry_at(registry_host, namespace) as registry:
        assert registry.versions("iris") == []
        transport = registry._oci._transport  # type: ignore[attr-defined]
        # A response read to its end leaves its connection open in the pool.
        probe = transport.request("GET", f"http://{registry_host}/v2/", what="probe")
        transport.read(probe, limit=1 << 10, what="probe")
        pool = transport._pool
        idle = [c for connections in pool._idle.values() for c in connections]
        assert len(idle) >= 1
    assert not pool._idle
    assert all(connection.sock is None for connection in idle)


@pytest.mark.parametrize(
    ("tags", "pad", "cap", "pages"),
    [
        (1, 0, f"{MAX_PAGES} pages", MAX_PAGES),
        (1000, 0, f"{MAX_LISTED} entries", MAX_LISTED // 1000 + 1),
        (1, 15 << 20, f"{MAX_LISTING_BYTES} bytes", MAX_LISTING_BYTES // (15 << 20) + 1),
    ],
)
def test_a_listing_that_links_on_forever_is_refused(
    tags: int, pad: int, cap: str, pages: int
) -> None:
    with EndlessListing(tags=tags, pad=pad).running() as server:
        registry = OciRegistry(server.ref, options=RegistryOptions(retry=FAST))
        with pytest.raises(RegistryError, match=f"listing runs past {cap}") as caught:
            registry.versions("iris")
    assert caught.value.exit_code == 4
    assert server.pages == pages


def test_an_upgrade_asks_the_registry_only_for_files_the_instance_lacks(
    registry_host: str, namespace: str, bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> None:
    trusted = Trusted(adhoc_policy([keypair.public]))
    remote = registry_at(registry_host, namespace)
    for version in ("1.0.0", "1.1.0"):
        publish_bundle(bundles[version], registry=remote, mode=trusted)
    store = Store(home)
    with Proxy(registry_host).running() as proxy:
        registry = registry_at(proxy.host, namespace)
        install("iris@1.0.0", registry=registry, store=store, now=datetime.now(UTC),
                options=InstallOptions(verify=trusted))  # fmt: skip
        proxy.seen.clear()
        install("iris@1.1.0", registry=registry, store=store, now=datetime.now(UTC),
                options=InstallOptions(verify=trusted))  # fmt: skip
    old, new = (
        {
            f.path: f.digest
            for f in parse_manifest((bundles[v] / "manifest.json").read_bytes()).files
        }
        for v in ("1.0.0", "1.1.0")
    )
    assert old["model.onnx"] == new["model.onnx"]
    blobs = {path.rsplit("/", 1)[1] for m, path, _ in proxy.seen if "/blobs/" in path}
    assert str(new["model.onnx"]) not in blobs
    for path, digest in new.items():
        assert (str(digest) in blobs) == (old.get(path) != digest)
    installed = store.installed_dir("iris", "1.1.0") / "model.onnx"
    assert Digest.of(installed.read_bytes()) == new["model.onnx"]
