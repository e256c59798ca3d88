"""The embedded registry: an OCI image layout per model name, on the local filesystem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from packager.core.digests import Digest
from packager.core.manifest import Manifest, dump_json, parse_manifest
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry import LayoutRegistry, layout, open_registry
from packager.registry.artifact import MAX_OCI_MANIFEST_BYTES
from packager.registry.base import Artifact, Descriptor

ROLES = {".onnx": "model", ".data": "weights", ".npz": "testvectors"}


def make_bundle(
    where: Path,
    *,
    name: str = "iris",
    version: str = "1.0.0",
    model: bytes = b"onnx graph " * 50,
    weights: bytes = bytes(range(256)) * 40,
) -> tuple[Path, Manifest]:
    """A bundle of plain files whose manifest.json passes the v1 schema."""
    files = {
        "model.onnx": model,
        "model.onnx.data": weights,
        "testvectors.npz": b"npz " + version.encode(),
        "README.md": b"# " + name.encode() + b"\n",
    }
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "name": name,
        "version": version,
        "created": "2026-01-02T03:04:05Z",
        "license": "Apache-2.0",
        "model": {
            "path": "model.onnx",
            "irVersion": 9,
            "opsets": {"": 17},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
            "outputs": [{"name": "y", "dtype": "int64", "shape": [None]}],
            "source": {
                "framework": "sklearn",
                "frameworkVersion": "1.5.0",
                "estimator": "LogisticRegression",
                "converter": "skl2onnx",
                "converterVersion": "1.17.0",
            },
        },
        "runtime": {"onnxruntime": "1.18"},
        "files": [
            {
                "path": path,
                "sha256": Digest.of(data).hex,
                "size": len(data),
                "role": next((r for ext, r in ROLES.items() if path.endswith(ext)), "doc"),
            }
            for path, data in files.items()
        ],
        "validation": {
            "testvectors": "testvectors.npz",
            "rows": 1,
            "rtol": 0,
            "atol": 0,
            "maxAbsDiff": 0,
        },
    }
    bundle = where / f"{name}-{version}"
    bundle.mkdir(parents=True)
    for path, data in files.items():
        (bundle / path).write_bytes(data)
    (bundle / "manifest.json").write_bytes(dump_json(doc))
    # Any bytes do: checking the signature is not the registry's job.
    (bundle / "model.sig").write_bytes(b'{"sig": "' + version.encode() + b'"}')
    return bundle, parse_manifest((bundle / "manifest.json").read_bytes())


def bundle_files(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in bundle.iterdir()}


def fetch_all(registry: LayoutRegistry, artifact: Artifact, dest: Path) -> dict[str, bytes]:
    dest.mkdir(parents=True)
    for path, desc in artifact.files.items():
        registry.fetch_blob(artifact.name, desc, dest / path)
    return bundle_files(dest)


def blob_path(root: Path, name: str, desc: Descriptor) -> Path:
    return root / name / "blobs" / "sha256" / desc.digest.hex


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> LayoutRegistry:
    return LayoutRegistry(tmp_path / "registry")


@pytest.fixture
def published(registry: LayoutRegistry, tmp_path: Path) -> tuple[Path, Artifact]:
    bundle, manifest = make_bundle(tmp_path / "bundles")
    return bundle, registry.publish(bundle, manifest)


# --- publish, resolve, fetch --------------------------------------------------------------


def test_publish_resolve_fetch_round_trip(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    bundle, artifact = published
    assert registry.names() == ["iris"]
    assert registry.versions("iris") == ["1.0.0"]
    resolved = registry.resolve("iris", "1.0.0")
    assert resolved == artifact
    assert resolved.created == "2026-01-02T03:04:05Z"
    assert set(resolved.files) == {p.name for p in bundle.iterdir()}
    assert fetch_all(registry, resolved, tmp_path / "out") == bundle_files(bundle)
    sig = registry.read_blob("iris", resolved.files["model.sig"], max_size=1024)
    assert sig == (bundle / "model.sig").read_bytes()


def test_layout_files(registry: LayoutRegistry, published: tuple[Path, Artifact]) -> None:
    _, artifact = published
    layout = registry.root / "iris"
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["digest"] == str(artifact.manifest_digest)
    assert entry["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "1.0.0"}
    blobs = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    # Every layer, the config and the OCI manifest; no temporary files left behind.
    assert {d.digest.hex for d in artifact.files.values()} | {artifact.manifest_digest.hex} < blobs
    assert len(blobs) == len(artifact.files) + 2
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (layout / "blobs/sha256").iterdir())


def test_republishing_identical_content_is_idempotent(
    registry: LayoutRegistry, published: tuple[Path, Artifact]
) -> None:
    bundle, artifact = published
    index = (registry.root / "iris" / "index.json").read_bytes()
    again = registry.publish(bundle, parse_manifest((bundle / "manifest.json").read_bytes()))
    assert again == artifact
    assert (registry.root / "iris" / "index.json").read_bytes() == index


def test_conflicting_republish_is_refused_and_old_content_kept(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    bundle, artifact = published
    before = tree(registry.root)
    other, manifest = make_bundle(tmp_path / "other", model=b"a different graph")
    with pytest.raises(RegistryError, match=r"iris@1\.0\.0 already exists with different content"):
        registry.publish(other, manifest)
    assert tree(registry.root) == before
    assert registry.resolve("iris", "1.0.0") == artifact
    fetched = fetch_all(registry, registry.resolve("iris", "1.0.0"), tmp_path / "out")
    assert fetched == bundle_files(bundle)


def test_versions_sorted_by_semver(registry: LayoutRegistry, tmp_path: Path) -> None:
    for version in ["1.9.0", "1.10.0", "1.0.0", "1.0.0-rc.1", "0.1.0"]:
        registry.publish(*make_bundle(tmp_path / "b", version=version))
    expected = ["0.1.0", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0"]
    assert registry.versions("iris") == expected
    index = json.loads((registry.root / "iris" / "index.json").read_bytes())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == expected


def test_models_are_separate_layouts(registry: LayoutRegistry, tmp_path: Path) -> None:
    registry.publish(*make_bundle(tmp_path / "b", name="wine", version="2.0.0"))
    registry.publish(*make_bundle(tmp_path / "b", name="iris", version="1.0.0"))
    assert registry.names() == ["iris", "wine"]
    assert registry.versions("wine") == ["2.0.0"]
    with pytest.raises(NotFoundError):
        registry.resolve("wine", "1.0.0")


def test_same_bundles_give_identical_bytes_in_two_roots(tmp_path: Path) -> None:
    bundles = {v: make_bundle(tmp_path / "bundles", version=v) for v in ["1.0.0", "1.1.0"]}
    a, b = LayoutRegistry(tmp_path / "a"), LayoutRegistry(tmp_path / "b")
    # Publishing order does not show in the bytes either.
    for version in ["1.1.0", "1.0.0"]:
        a.publish(*bundles[version])
    for version in ["1.0.0", "1.1.0"]:
        b.publish(*bundles[version])
    assert tree(a.root) == tree(b.root)
    assert "iris/index.json" in tree(a.root)


def test_concurrent_publishers_lose_no_tag(registry: LayoutRegistry, tmp_path: Path) -> None:
    versions = [f"1.{i}.0" for i in range(8)]
    bundles = [make_bundle(tmp_path / "b", version=v) for v in versions]
    start = threading.Barrier(len(bundles))
    errors: list[BaseException] = []

    def publish(bundle: Path, manifest: Manifest) -> None:
        start.wait()
        try:
            registry.publish(bundle, manifest)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=publish, args=b) for b in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert registry.versions("iris") == versions


def test_bundle_changed_after_packaging_is_not_published(
    registry: LayoutRegistry, tmp_path: Path
) -> None:
    bundle, manifest = make_bundle(tmp_path / "b")
    (bundle / "model.onnx.data").write_bytes(b"swapped weights")
    with pytest.raises(TamperedError):
        registry.publish(bundle, manifest)
    assert registry.versions("iris") == []


def test_bundle_changed_while_copied_is_not_published(
    registry: LayoutRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy into the registry is hashed again: a file changed after the plan hashed it
    is refused, and no temporary blob is left behind."""
    bundle, manifest = make_bundle(tmp_path / "b", weights=os.urandom(3 * (8 << 20)))
    real = layout.plan_artifact

    def plan_then_change(source: Path, found: Manifest) -> Any:
        plan = real(source, found)
        with open(source / "model.onnx.data", "r+b") as f:
            f.seek(12 << 20)
            f.write(b"swapped")
        return plan

    monkeypatch.setattr(layout, "plan_artifact", plan_then_change)
    with pytest.raises(TamperedError, match="changed while it was published"):
        registry.publish(bundle, manifest)
    assert registry.versions("iris") == []
    blobs = registry.root / "iris" / "blobs" / "sha256"
    assert not [p.name for p in blobs.iterdir() if p.name.startswith(".")]


# --- reading what is not there ------------------------------------------------------------


def test_missing_root_reads_as_empty(tmp_path: Path) -> None:
    registry = LayoutRegistry(tmp_path / "nowhere")
    assert registry.names() == []
    assert registry.versions("iris") == []
    with pytest.raises(NotFoundError, match="packager publish"):
        registry.resolve("iris", "1.0.0")
    assert not registry.root.exists()


def test_missing_version_says_how_to_list(
    registry: LayoutRegistry, published: tuple[Path, Artifact]
) -> None:
    with pytest.raises(NotFoundError, match=r"version 2\.0\.0 not found .*packager search"):
        registry.resolve("iris", "2.0.0")


@pytest.mark.parametrize("name", ["../etc", "Iris", "a/b", "", "iris\n", ".hidden"])
def test_invalid_names_are_usage_errors(registry: LayoutRegistry, name: str) -> None:
    with pytest.raises(UsageError, match="invalid model name"):
        registry.versions(name)
    with pytest.raises(UsageError, match="invalid model name"):
        registry.resolve(name, "1.0.0")


def test_invalid_version_is_a_usage_error(
    registry: LayoutRegistry, published: tuple[Path, Artifact]
) -> None:
    with pytest.raises(UsageError, match="Semantic Versioning"):
        registry.resolve("iris", "latest")


def test_corrupt_index_is_a_registry_error(
    registry: LayoutRegistry, published: tuple[Path, Artifact]
) -> None:
    (registry.root / "iris" / "index.json").write_bytes(b"{not json")
    with pytest.raises(RegistryError, match="corrupt"):
        registry.versions("iris")


def test_index_tagging_another_versions_manifest_is_refused(
    registry: LayoutRegistry, tmp_path: Path
) -> None:
    registry.publish(*make_bundle(tmp_path / "b", version="1.0.0"))
    registry.publish(*make_bundle(tmp_path / "b", version="2.0.0"))
    index_path = registry.root / "iris" / "index.json"
    index = json.loads(index_path.read_bytes())
    # Every digest and size matches: only the version annotation tells the swap.
    index["manifests"][0]["digest"] = index["manifests"][1]["digest"]
    index_path.write_bytes(json.dumps(index).encode())
    with pytest.raises(TamperedError, match=r"manifest of version '2\.0\.0'"):
        registry.resolve("iris", "1.0.0")


# --- untrusted blobs ----------------------------------------------------------------------


def test_corrupted_blob_is_refused_and_dest_removed(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    desc = artifact.files["model.onnx.data"]
    blob = blob_path(registry.root, "iris", desc)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    dest = tmp_path / "model.onnx.data"
    with pytest.raises(TamperedError, match="does not match its digest"):
        registry.fetch_blob("iris", desc, dest)
    assert not dest.exists()
    with pytest.raises(TamperedError):
        registry.read_blob("iris", desc, max_size=1 << 20)


def test_truncated_blob_is_refused(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    desc = artifact.files["model.onnx"]
    blob = blob_path(registry.root, "iris", desc)
    blob.write_bytes(blob.read_bytes()[:-1])
    with pytest.raises(TamperedError, match="shorter"):
        registry.fetch_blob("iris", desc, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_overlong_blob_is_refused_without_reading_it_all(
    registry: LayoutRegistry,
    published: tuple[Path, Artifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, artifact = published
    desc = artifact.files["model.onnx.data"]
    blob = blob_path(registry.root, "iris", desc)
    # A sparse terabyte: reading it through would take hours, and stopping at
    # desc.size + 1 bytes takes microseconds.
    os.truncate(blob, desc.size + (1 << 40))
    read = 0
    real_read, real_copy = os.read, os.copy_file_range

    def counting_read(fd: int, n: int) -> bytes:
        nonlocal read
        chunk = real_read(fd, n)
        read += len(chunk)
        return chunk

    def counting_copy(source: int, dest: int, n: int, *offsets: int | None) -> int:
        nonlocal read
        copied = real_copy(source, dest, n, *offsets)
        read += copied
        return copied

    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "copy_file_range", counting_copy)
    dest = tmp_path / "model.onnx.data"
    with pytest.raises(TamperedError, match="longer"):
        registry.fetch_blob("iris", desc, dest)
    assert read == desc.size + 1
    assert not dest.exists()
    read = 0
    with pytest.raises(TamperedError, match="longer"):
        registry.read_blob("iris", desc, max_size=1 << 20)
    assert read == desc.size + 1


def test_read_blob_refuses_oversize_descriptor_before_opening(tmp_path: Path) -> None:
    # Nothing exists at this root: reaching the filesystem would be a RegistryError.
    registry = LayoutRegistry(tmp_path / "empty")
    desc = Descriptor("application/octet-stream", Digest.of(b"x"), 10_000)
    with pytest.raises(TamperedError, match="more than the 9999 allowed"):
        registry.read_blob("iris", desc, max_size=9999)


def test_oversize_oci_manifest_is_refused(
    registry: LayoutRegistry, published: tuple[Path, Artifact]
) -> None:
    index_path = registry.root / "iris" / "index.json"
    index = json.loads(index_path.read_bytes())
    index["manifests"][0]["size"] = MAX_OCI_MANIFEST_BYTES + 1
    index_path.write_bytes(json.dumps(index).encode())
    with pytest.raises(TamperedError, match="more than"):
        registry.resolve("iris", "1.0.0")


def test_missing_blob_is_a_registry_error(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    desc = artifact.files["README.md"]
    blob_path(registry.root, "iris", desc).unlink()
    with pytest.raises(RegistryError, match="missing"):
        registry.fetch_blob("iris", desc, tmp_path / "README.md")
    assert not (tmp_path / "README.md").exists()


def test_symlinked_blob_is_not_followed(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    desc = artifact.files["README.md"]
    blob = blob_path(registry.root, "iris", desc)
    outside = tmp_path / "outside"
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.raises(RegistryError):
        registry.fetch_blob("iris", desc, tmp_path / "README.md")
    with pytest.raises(RegistryError):
        registry.read_blob("iris", desc, max_size=1024)


def test_symlinked_blob_directory_is_not_followed(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    blobs = registry.root / "iris" / "blobs"
    moved = tmp_path / "moved-blobs"
    shutil.move(blobs, moved)
    blobs.symlink_to(moved)
    with pytest.raises(RegistryError):
        registry.resolve("iris", "1.0.0")


def test_fifo_blob_does_not_hang(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    desc = artifact.files["README.md"]
    blob = blob_path(registry.root, "iris", desc)
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(RegistryError, match="not a regular file"):
        registry.read_blob("iris", desc, max_size=1024)


def test_fetch_never_overwrites_dest(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    dest = tmp_path / "keep.txt"
    dest.write_bytes(b"precious")
    with pytest.raises(RegistryError, match="cannot fetch"):
        registry.fetch_blob("iris", artifact.files["README.md"], dest)
    assert dest.read_bytes() == b"precious"


# --- open_registry ------------------------------------------------------------------------


def test_open_registry_default_and_paths(tmp_path: Path) -> None:
    default = open_registry(None, home=tmp_path)
    assert isinstance(default, LayoutRegistry)
    assert default.root == tmp_path / "registry"
    assert default.location == str(tmp_path / "registry")
    assert open_registry(tmp_path / "r", home=tmp_path) == LayoutRegistry(tmp_path / "r")
    assert open_registry(str(tmp_path / "r"), home=tmp_path) == LayoutRegistry(tmp_path / "r")


@pytest.mark.parametrize(
    "ref",
    [
        "ftp://mirror.example/models",
        "s3://bucket/models",
    ],
)
def test_other_registry_kinds_are_not_supported_yet(ref: str | Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not supported yet; use a directory"):
        open_registry(ref, home=tmp_path)


def test_unsupported_reference_never_echoes_credentials(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        open_registry("oci://robot:s3cret@registry.example/models", home=tmp_path)
    assert "s3cret" not in str(info.value)


# --- interoperability with skopeo ---------------------------------------------------------


def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "skopeo is required in CI for the OCI layout interop test: apt-get install skopeo"
            )
        pytest.skip("skopeo is not installed: apt-get install skopeo")
    return path


def run_skopeo(*args: str) -> None:
    # A throwaway local copy: no signature policy applies, so none is configured.
    subprocess.run([skopeo(), "--insecure-policy", *args], check=True, capture_output=True)


def test_skopeo_copies_a_version_out_of_the_layout(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    _, artifact = published
    out = tmp_path / "dir-copy"
    run_skopeo("copy", f"oci:{registry.root / 'iris'}:1.0.0", f"dir:{out}")
    # The manifest is copied byte for byte, so its digest (the version's identity) holds.
    assert Digest.of((out / "manifest.json").read_bytes()) == artifact.manifest_digest
    for path, desc in artifact.files.items():
        assert (out / desc.digest.hex).read_bytes() == blob_path(
            registry.root, "iris", desc
        ).read_bytes(), path


def test_layout_written_by_skopeo_is_readable_and_publishable(
    registry: LayoutRegistry, published: tuple[Path, Artifact], tmp_path: Path
) -> None:
    bundle, artifact = published
    copy = LayoutRegistry(tmp_path / "copy")
    copy.root.mkdir()
    run_skopeo("copy", f"oci:{registry.root / 'iris'}:1.0.0", f"oci:{copy.root / 'iris'}:1.0.0")
    assert copy.resolve("iris", "1.0.0") == artifact
    assert fetch_all(copy, artifact, tmp_path / "out") == bundle_files(bundle)
    # Publishing into a layout another tool wrote keeps that tool's entries.
    copy.publish(*make_bundle(tmp_path / "b", version="1.1.0"))
    assert copy.versions("iris") == ["1.0.0", "1.1.0"]
    run_skopeo("copy", f"oci:{copy.root / 'iris'}:1.1.0", f"dir:{tmp_path / 'again'}")


def test_publish_keeps_models_json_for_static_mirrors(tmp_path: Path) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    for name in ("spam-filter", "iris"):
        bundle, manifest = make_bundle(tmp_path / name, name=name)
        registry.publish(bundle, manifest)
    assert json.loads((registry.root / "models.json").read_text()) == ["iris", "spam-filter"]
    assert registry.names() == ["iris", "spam-filter"]


def test_every_kind_of_registry_is_a_context_manager(tmp_path: Path) -> None:
    from packager.registry import open_destination, open_registry
    from packager.registry.memory import MemoryRegistry

    refs: list[str | None] = [None, str(tmp_path / "dir"), str(tmp_path / "a.tar")]
    for ref in refs:
        with open_registry(ref, home=tmp_path) as reader:
            assert reader.location
        with open_destination(ref, home=tmp_path) as writer:
            assert writer.location
    with MemoryRegistry() as memory:
        assert memory.names() == []
