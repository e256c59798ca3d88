"""Signed documents (channels) in every kind of registry: the embedded directory, a real
docker-registry on 127.0.0.1 (directly and through a lying proxy), and archives."""

from __future__ import annotations

import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from packager.core.digests import Digest
from packager.distribution.mirror import export
from packager.errors import NotFoundError, TamperedError, UsageError
from packager.instance.store import Following, Store
from packager.registry import ArchiveRegistry, LayoutRegistry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.attachments import subject_of
from packager.registry.base import Registry
from packager.registry.document import EMPTY_DESCRIPTOR, LAYER_MEDIA_TYPE
from packager.registry.memory import MemoryRegistry
from packager.registry.oci import OciRegistry
from packager.registry.options import RegistryOptions

from ..conftest import KeyPair
from .servers import Proxy, ProxyHandler
from .test_layout import make_bundle
from .test_oci import cli, oci, registry_at

KIND = "application/vnd.packager.channel.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
TAG = "channel.stable"
DOC_1 = b'{"document": 1}'
DOC_2 = b'{"document": 2, "padding": "' + b"x" * 100 + b'"}'


def put(registry: Registry, data: bytes, tag: str = TAG) -> Digest:
    return registry.put_document("iris", tag, data, artifact_type=KIND)


def get(registry: Registry, tag: str = TAG, *, kind: str = KIND, max_size: int = 4096) -> bytes:
    return registry.get_document("iris", tag, artifact_type=kind, max_size=max_size)


@pytest.fixture
def layout(tmp_path: Path) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "1.1.0"):
        registry.publish(*make_bundle(tmp_path / "bundles", version=version))
    return registry


@pytest.fixture(params=["layout", "memory", "oci", "archive"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, layout: LayoutRegistry) -> Registry:
    """A registry of each kind holding iris 1.0.0 and 1.1.0."""
    if request.param == "layout":
        return layout
    if request.param == "memory":
        memory = MemoryRegistry()
        for version in ("1.0.0", "1.1.0"):
            memory.publish(*make_bundle(tmp_path / "memory", version=version))
        return memory
    if request.param == "archive":
        out = tmp_path / "models.tar"
        export(["iris@1.0.0", "iris@1.1.0"], registry=layout, out=out)
        return ArchiveRegistry(out)
    host: str = request.getfixturevalue("registry_host")
    remote = registry_at(host, request.getfixturevalue("namespace"))
    for version in ("1.0.0", "1.1.0"):
        remote.publish(*make_bundle(tmp_path / "remote", version=version))
    return remote


def test_round_trip_and_the_tag_moves(registry: Registry) -> None:
    first = put(registry, DOC_1)
    assert get(registry) == DOC_1
    second = put(registry, DOC_2)
    assert second != first
    assert get(registry) == DOC_2
    # Putting the old bytes back is possible: refusing replays is the reader's job.
    assert put(registry, DOC_1) == first
    assert get(registry) == DOC_1


def test_every_kind_stores_the_same_oci_manifest(registry: Registry) -> None:
    version = subject_of(registry.resolve("iris", "1.0.0"))
    reference = MemoryRegistry()
    for subject in (None, version):
        stored = registry.put_document("iris", TAG, DOC_1, artifact_type=KIND, subject=subject)
        expected = reference.put_document("iris", TAG, DOC_1, artifact_type=KIND, subject=subject)
        assert stored == expected
        assert get(registry) == DOC_1


def test_documents_are_never_versions(registry: Registry) -> None:
    put(registry, DOC_1)
    put(registry, DOC_2, tag="channel.canary")
    assert registry.versions("iris") == ["1.0.0", "1.1.0"]
    assert registry.names() == ["iris"]
    assert registry.resolve("iris", "1.1.0").version == "1.1.0"
    assert set(registry.tags("iris")) == {"1.0.0", "1.1.0", "channel.canary", TAG}
    with pytest.raises(UsageError):
        registry.resolve("iris", TAG)


@pytest.mark.parametrize("tag", ["1.2.0", "1.2.0_build.1", "", "a/b", "-x", "x" * 129])
def test_tags_that_read_as_versions_or_are_malformed_are_refused(
    registry: Registry, tag: str
) -> None:
    with pytest.raises(UsageError):
        put(registry, DOC_1, tag=tag)
    with pytest.raises(UsageError):
        get(registry, tag=tag)


def test_missing_document_or_model_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError):
        get(registry)
    with pytest.raises(NotFoundError):
        registry.get_document("spam", TAG, artifact_type=KIND, max_size=4096)


def test_another_artifact_type_or_an_oversized_document_is_refused(registry: Registry) -> None:
    put(registry, DOC_2)
    with pytest.raises(TamperedError, match="artifactType"):
        get(registry, kind="application/vnd.example.other+json")
    with pytest.raises(TamperedError, match="more than"):
        get(registry, max_size=len(DOC_2) - 1)
    assert get(registry, max_size=len(DOC_2)) == DOC_2


# -- the embedded directory ---------------------------------------------------------------


def index_entries(layout: LayoutRegistry) -> list[dict[str, Any]]:
    index = json.loads((layout.root / "iris" / "index.json").read_text())
    entries: list[dict[str, Any]] = index["manifests"]
    return entries


def test_layout_replaces_the_index_entry_of_the_tag(layout: LayoutRegistry) -> None:
    put(layout, DOC_1)
    digest = put(layout, DOC_2)
    tagged = [e for e in index_entries(layout) if e["annotations"][REF_NAME] == TAG]
    assert tagged == [
        {
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": str(digest),
            "size": tagged[0]["size"],
            "artifactType": KIND,
            "annotations": {REF_NAME: TAG},
        }
    ]
    blobs = layout.root / "iris" / "blobs" / "sha256"
    manifest = json.loads((blobs / digest.hex).read_bytes())
    assert manifest["artifactType"] == KIND
    assert manifest["config"] == EMPTY_DESCRIPTOR.to_json()
    assert (blobs / EMPTY_DESCRIPTOR.digest.hex).read_bytes() == b"{}"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPE]
    assert not [p for p in (layout.root / "iris").iterdir() if p.name.endswith(".tmp")]


def test_layout_refuses_a_tampered_document_blob(layout: LayoutRegistry) -> None:
    put(layout, DOC_1)
    blob = layout.root / "iris" / "blobs" / "sha256" / Digest.of(DOC_1).hex
    blob.write_bytes(b'{"document": 9}')
    with pytest.raises(TamperedError, match="does not match"):
        get(layout)


@pytest.mark.parametrize("other_digest", [True, False], ids=["two-digests", "same-entry"])
def test_layout_refuses_a_tag_listed_twice(layout: LayoutRegistry, other_digest: bool) -> None:
    # An index that contradicts itself is tampering (exit 3), even with identical entries.
    put(layout, DOC_1)
    index_path = layout.root / "iris" / "index.json"
    index = json.loads(index_path.read_text())
    entry = next(e for e in index["manifests"] if e.get("artifactType") == KIND)
    other = dict(entry, digest=f"sha256:{'0' * 64}") if other_digest else dict(entry)
    index["manifests"].append(other)
    index_path.write_text(json.dumps(index))
    with pytest.raises(TamperedError, match="more than once") as caught:
        get(layout)
    assert caught.value.exit_code == 3
    with pytest.raises(TamperedError, match="more than once"):
        layout.tags("iris")


def test_documents_and_versions_written_concurrently_are_all_kept(
    layout: LayoutRegistry, tmp_path: Path
) -> None:
    bundles = [make_bundle(tmp_path / "more", version=f"2.{i}.0") for i in range(4)]
    channels = [f"channel.c{i}" for i in range(4)]
    start = threading.Barrier(len(bundles) + len(channels))
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        start.wait()
        try:
            job()
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    jobs = [lambda b=b: layout.publish(*b) for b in bundles]
    jobs += [lambda t=t: put(layout, t.encode(), tag=t) for t in channels]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert layout.versions("iris") == ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0"]
    for tag in channels:
        assert get(layout, tag=tag) == tag.encode()


# -- a remote OCI registry ----------------------------------------------------------------


@pytest.fixture
def remote(registry_host: str, namespace: str, tmp_path: Path) -> OciRegistry:
    registry = registry_at(registry_host, namespace)
    registry.publish(*make_bundle(tmp_path / "remote", version="1.0.0"))
    return registry


def test_oci_stores_an_oci_1_1_artifact(
    remote: OciRegistry, registry_host: str, namespace: str
) -> None:
    digest = put(remote, DOC_1)
    response = requests.get(
        f"http://{registry_host}/v2/{namespace}/iris/manifests/{TAG}",
        headers={"Accept": OCI_MANIFEST_MEDIA_TYPE},
        timeout=10,
    )
    response.raise_for_status()
    assert Digest.of(response.content) == digest
    manifest = response.json()
    assert manifest["artifactType"] == KIND
    assert manifest["config"] == EMPTY_DESCRIPTOR.to_json()
    assert manifest["layers"] == [
        {"mediaType": LAYER_MEDIA_TYPE, "digest": str(Digest.of(DOC_1)), "size": len(DOC_1)}
    ]


def test_oci_asks_for_an_oci_manifest_explicitly(
    remote: OciRegistry, registry_host: str, namespace: str
) -> None:
    put(remote, DOC_1)
    with Proxy(registry_host).running() as proxy:
        assert get(registry_at(proxy.host, namespace)) == DOC_1
    accepts = [h.get("Accept") for m, path, h in proxy.seen if m == "GET" and "/manifests/" in path]
    assert accepts == [OCI_MANIFEST_MEDIA_TYPE]


def lie_about_documents(change: str) -> Any:
    def hook(handler: ProxyHandler) -> bool:
        if handler.command != "GET":
            return False
        if "/manifests/" in handler.path:
            body = handler.upstream().read()
            headers = {"Content-Type": OCI_MANIFEST_MEDIA_TYPE}
            if change == "digest header":
                headers["Docker-Content-Digest"] = f"sha256:{'0' * 64}"
            elif change == "two layers":
                doc = json.loads(body)
                doc["layers"] *= 2
                body = json.dumps(doc).encode()
            elif change == "huge manifest":
                body = body[:-1] + b', "padding": "' + b"x" * (64 << 10) + b'"}'
            handler.answer(200, body, headers)
            return True
        if change == "corrupt layer" and handler.path.endswith(Digest.of(DOC_1).hex):
            response = handler.upstream()
            handler.relay(response, response.read().replace(b"1", b"9"))
            return True
        return False

    return hook


@pytest.mark.parametrize(
    "change", ["digest header", "two layers", "huge manifest", "corrupt layer"]
)
def test_oci_a_lying_registry_is_refused(
    remote: OciRegistry, registry_host: str, namespace: str, change: str
) -> None:
    put(remote, DOC_1)
    proxy = Proxy(registry_host, hook=lie_about_documents(change))
    with proxy.running(), pytest.raises(TamperedError):
        get(registry_at(proxy.host, namespace))


def list_a_tag_twice(handler: ProxyHandler) -> bool:
    if handler.command != "GET" or "/tags/list" not in handler.path:
        return False
    doc = json.loads(handler.upstream().read())
    doc["tags"] = [*doc["tags"], doc["tags"][0]]
    handler.answer(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    return True


def test_oci_a_tag_listed_twice_is_tampering(
    remote: OciRegistry, registry_host: str, namespace: str
) -> None:
    # The rule every kind follows: a registry answer that contradicts itself is exit 3.
    put(remote, DOC_1)
    proxy = Proxy(registry_host, hook=list_a_tag_twice)
    with proxy.running(), pytest.raises(TamperedError, match="more than once") as caught:
        registry_at(proxy.host, namespace).tags("iris")
    assert caught.value.exit_code == 3


def test_a_channel_through_a_remote_registry(
    capsys: pytest.CaptureFixture[str],
    registry_host: str,
    namespace: str,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    ref = oci(registry_host, namespace)
    for version in ("1.0.0", "2.0.0"):
        assert cli(capsys, "publish", bundles[version], "--registry", ref)[0] == 0
    promote = ["promote", "--channel", "stable", "--key", keypair.key_path, "--registry", ref]
    code, _, err = cli(capsys, *promote, "iris@1.0.0")
    assert code == 0, err
    code, out, err = cli(
        capsys, "install", "iris@stable", "--registry", ref, "--key", keypair.pub_path, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["version"] == "1.0.0"
    assert Store(home).following() == [Following("iris", "stable", ref)]
    assert cli(capsys, *promote, "iris@2.0.0")[0] == 0
    code, out, err = cli(capsys, "update", "--key", keypair.pub_path, "--json")
    assert code == 0, err
    assert [m["version"] for m in json.loads(out)["models"]] == ["2.0.0"]
    assert registry_at(registry_host, namespace).versions("iris") == ["1.0.0", "2.0.0"]


def test_oci_names_and_tags_are_checked_before_any_connection() -> None:
    # Nothing listens on port 1: a request would fail with a RegistryError.
    registry = OciRegistry(oci("127.0.0.1:1", "ns"), options=RegistryOptions())
    with pytest.raises(UsageError):
        registry.put_document("../iris", TAG, DOC_1, artifact_type=KIND)
    with pytest.raises(UsageError):
        registry.get_document("iris", "1.0.0", artifact_type=KIND, max_size=10)


# -- archives -----------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path, layout: LayoutRegistry) -> ArchiveRegistry:
    out = tmp_path / "models.tar"
    export(["iris@1.0.0", "iris@1.1.0"], registry=layout, out=out)
    return ArchiveRegistry(out)


def member_bytes(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_archive_put_rebuilds_the_tar_keeping_everything(archive: ArchiveRegistry) -> None:
    before = member_bytes(archive.path)
    digest = put(archive, DOC_1)
    after = member_bytes(archive.path)
    blobs = {name for name in before if name.startswith("blobs/")}
    assert all(after[name] == before[name] for name in blobs)
    assert set(after) - set(before) == {
        f"blobs/sha256/{h}" for h in (digest.hex, Digest.of(DOC_1).hex, EMPTY_DESCRIPTOR.digest.hex)
    }
    index = json.loads(after["index.json"])
    refs = sorted(e["annotations"][REF_NAME] for e in index["manifests"])
    assert refs == ["iris:1.0.0", "iris:1.1.0", f"iris:{TAG}"]
    assert not [p for p in archive.path.parent.iterdir() if p.name.startswith(".")]
    # The tag moves: still one entry for it.
    put(archive, DOC_2)
    index = json.loads(member_bytes(archive.path)["index.json"])
    assert len(index["manifests"]) == 3
    assert get(archive) == DOC_2


def test_archive_put_creates_a_new_archive(tmp_path: Path) -> None:
    archive = ArchiveRegistry(tmp_path / "new.tar")
    put(archive, DOC_1)
    assert get(archive) == DOC_1
    assert archive.versions("iris") == []
    with pytest.raises(UsageError, match="not a directory"):
        put(ArchiveRegistry(tmp_path / "missing" / "x.tar"), DOC_1)


def test_export_carries_documents_unchanged(layout: LayoutRegistry, tmp_path: Path) -> None:
    put(layout, DOC_1)
    put(layout, DOC_2, tag="channel.canary")
    out = tmp_path / "carried.tar"
    messages: list[str] = []
    export(["iris@1.0.0"], registry=layout, out=out, progress=messages.append)
    carried = ArchiveRegistry(out)
    assert get(carried) == DOC_1
    assert get(carried, tag="channel.canary") == DOC_2
    assert "exported channel iris@stable" in messages
    assert carried.versions("iris") == ["1.0.0"]


def test_archive_put_refuses_a_tampered_archive_and_leaves_it(archive: ArchiveRegistry) -> None:
    data = bytearray(archive.path.read_bytes())
    data[data.find(b"onnx graph ")] ^= 1
    archive.path.write_bytes(bytes(data))
    with pytest.raises(TamperedError, match="nothing was written"):
        put(archive, DOC_1)
    assert archive.path.read_bytes() == bytes(data)
    assert [p.name for p in archive.path.parent.iterdir() if p.name.startswith(".")] == []
