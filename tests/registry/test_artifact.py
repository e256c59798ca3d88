"""The bundle <-> OCI artifact mapping: media types, config, manifest bytes, strict parsing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from packager.core.digests import Digest
from packager.core.manifest import Manifest, dump_json, parse_manifest
from packager.errors import RegistryError, TamperedError, UsageError
from packager.registry.artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DATASET_MEDIA_TYPE,
    DOC_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    WEIGHT_MEDIA_TYPE,
    build_config,
    build_oci_manifest,
    bundle_layers,
    is_safe_title,
    layer_descriptor,
    layer_media_type,
    parse_descriptor,
    parse_oci_manifest,
    plan_artifact,
)
from packager.registry.base import Descriptor
from packager.registry.document import parse_document_manifest
from packager.registry.index import parse_index

ROLES = {".onnx": "model", ".data": "weights", ".npz": "testvectors"}


def role_of(path: str) -> str:
    return next((role for ext, role in ROLES.items() if path.endswith(ext)), "doc")


def manifest_doc(files: dict[str, bytes], *, license: str | None = "MIT") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "name": "iris",
        "version": "1.2.0",
        "created": "2026-01-02T03:04:05Z",
        "model": {
            "path": "model.onnx",
            "irVersion": 9,
            "opsets": {"": 17},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
            "outputs": [{"name": "label", "dtype": "int64", "shape": [None]}],
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
            {"path": p, "sha256": Digest.of(d).hex, "size": len(d), "role": role_of(p)}
            for p, d in files.items()
        ],
        "validation": {
            "testvectors": "testvectors.npz",
            "rows": 3,
            "rtol": 1e-5,
            "atol": 1e-6,
            "maxAbsDiff": 0.0,
        },
    }
    if license is not None:
        doc["license"] = license
    return doc


FILES = {
    "model.onnx": b"onnx graph bytes",
    "model.onnx.data": b"\x00\x01weights" * 100,
    "testvectors.npz": b"npz bytes",
    "README.md": b"# iris\n",
}


def write_bundle(root: Path, files: dict[str, bytes] = FILES) -> tuple[Path, Manifest]:
    bundle = root / "iris-1.2.0"
    bundle.mkdir()
    for path, data in files.items():
        (bundle / path).write_bytes(data)
    (bundle / "manifest.json").write_bytes(dump_json(manifest_doc(files)))
    (bundle / "model.sig").write_bytes(b'{"not": "checked here"}')
    return bundle, parse_manifest((bundle / "manifest.json").read_bytes())


@pytest.fixture
def manifest() -> Manifest:
    return parse_manifest(dump_json(manifest_doc(FILES)))


# --- media types and config -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "role", "media_type"),
    [
        ("model.onnx", "model", WEIGHT_MEDIA_TYPE),
        ("model.onnx.data", "weights", WEIGHT_MEDIA_TYPE),
        ("README.md", "doc", DOC_MEDIA_TYPE),
        ("LICENSE", "doc", DOC_MEDIA_TYPE),
        ("testvectors.npz", "testvectors", DATASET_MEDIA_TYPE),
        ("manifest.json", None, MANIFEST_MEDIA_TYPE),
        ("model.sig", None, SIGNATURE_MEDIA_TYPE),
    ],
)
def test_layer_media_types(path: str, role: str | None, media_type: str) -> None:
    assert layer_media_type(path, role) == media_type


@pytest.mark.parametrize(("path", "role"), [("x.bin", None), ("model.onnx", "code")])
def test_unknown_role_is_refused(path: str, role: str | None) -> None:
    with pytest.raises(UsageError):
        layer_media_type(path, role)


def test_config_follows_modelpack(manifest: Manifest) -> None:
    digests = [Digest.of(b"a"), Digest.of(b"b")]
    config = build_config(manifest, digests)
    assert json.loads(config) == {
        "descriptor": {
            "name": "iris",
            "version": "1.2.0",
            "createdAt": "2026-01-02T03:04:05Z",
            "licenses": ["MIT"],
        },
        "config": {"format": "onnx"},
        "modelfs": {"type": "layers", "diff_ids": [str(d) for d in digests]},
    }
    assert config == dump_json(json.loads(config))


def test_config_without_license_omits_licenses() -> None:
    manifest = parse_manifest(dump_json(manifest_doc(FILES, license=None)))
    assert "licenses" not in json.loads(build_config(manifest, []))["descriptor"]


# --- the OCI manifest ---------------------------------------------------------------------

GOLDEN_OCI_MANIFEST = """\
{
  "annotations": {
    "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
    "org.opencontainers.image.version": "1.2.0"
  },
  "artifactType": "application/vnd.cncf.model.manifest.v1+json",
  "config": {
    "digest": "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
    "mediaType": "application/vnd.cncf.model.config.v1+json",
    "size": 123
  },
  "layers": [
    {
      "annotations": {
        "org.cncf.model.filepath": "model.onnx",
        "org.opencontainers.image.title": "model.onnx"
      },
      "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "mediaType": "application/vnd.cncf.model.weight.v1.raw",
      "size": 10
    },
    {
      "annotations": {
        "org.cncf.model.filepath": "model.sig",
        "org.opencontainers.image.title": "model.sig"
      },
      "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
      "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
      "size": 0
    }
  ],
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "schemaVersion": 2
}
"""


def test_oci_manifest_golden_bytes(manifest: Manifest) -> None:
    config = Descriptor(CONFIG_MEDIA_TYPE, Digest("c" * 64), 123)
    layers = [
        layer_descriptor("model.onnx", "model", Digest("a" * 64), 10),
        layer_descriptor("model.sig", None, Digest("b" * 64), 0),
    ]
    data = build_oci_manifest(manifest, config=config, layers=layers)
    assert data.decode() == GOLDEN_OCI_MANIFEST
    assert build_oci_manifest(manifest, config=config, layers=layers) == data


# --- bundle_layers and plan_artifact ------------------------------------------------------


def test_bundle_layers_order_and_digests(tmp_path: Path) -> None:
    bundle, manifest = write_bundle(tmp_path)
    layers = bundle_layers(bundle, manifest)
    paths = [desc.annotations["org.opencontainers.image.title"] for desc, _ in layers]
    assert paths == [*FILES, "manifest.json", "model.sig"]
    for desc, source in layers:
        assert source == bundle / desc.annotations["org.cncf.model.filepath"]
        assert desc.digest == Digest.of(source.read_bytes())
        assert desc.size == source.stat().st_size


def test_plan_round_trips_through_the_parser(tmp_path: Path) -> None:
    bundle, manifest = write_bundle(tmp_path)
    plan = plan_artifact(bundle, manifest)
    artifact = plan.artifact()
    assert (artifact.name, artifact.version) == ("iris", "1.2.0")
    assert artifact.created == "2026-01-02T03:04:05Z"
    assert artifact.manifest_digest == Digest.of(plan.manifest_bytes)
    assert list(artifact.files) == [*FILES, "manifest.json", "model.sig"]
    assert [d for d, _ in plan.layers] == list(artifact.files.values())
    diff_ids = json.loads(plan.config_bytes)["modelfs"]["diff_ids"]
    assert diff_ids == [str(d.digest) for d in artifact.files.values()]
    assert plan.config.digest == Digest.of(plan.config_bytes)


def test_bundle_file_changed_after_packaging_is_refused(tmp_path: Path) -> None:
    bundle, manifest = write_bundle(tmp_path)
    (bundle / "model.onnx").write_bytes(b"onnx graph byteZ")
    with pytest.raises(TamperedError, match=r"model\.onnx differs"):
        bundle_layers(bundle, manifest)


def test_missing_signature_is_refused(tmp_path: Path) -> None:
    bundle, manifest = write_bundle(tmp_path)
    (bundle / "model.sig").unlink()
    with pytest.raises(UsageError, match=r"has no model\.sig"):
        bundle_layers(bundle, manifest)


def test_symlinked_file_is_refused(tmp_path: Path) -> None:
    bundle, manifest = write_bundle(tmp_path)
    outside = tmp_path / "elsewhere.md"
    outside.write_bytes(FILES["README.md"])
    (bundle / "README.md").unlink()
    (bundle / "README.md").symlink_to(outside)
    with pytest.raises(UsageError, match="not a regular file"):
        bundle_layers(bundle, manifest)


def test_manifest_other_than_the_one_published_is_refused(tmp_path: Path) -> None:
    bundle, _ = write_bundle(tmp_path)
    doc = manifest_doc(FILES)
    doc["version"] = "9.9.9"
    with pytest.raises(UsageError, match="not the manifest being published"):
        bundle_layers(bundle, parse_manifest(dump_json(doc)))


def test_bundle_with_subfolder_is_refused(tmp_path: Path) -> None:
    files = {**FILES, "docs/README.md": b"nested"}
    bundle = tmp_path / "b"
    (bundle / "docs").mkdir(parents=True)
    for path, data in files.items():
        (bundle / path).write_bytes(data)
    (bundle / "manifest.json").write_bytes(dump_json(manifest_doc(files)))
    (bundle / "model.sig").write_bytes(b"sig")
    manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    with pytest.raises(UsageError, match="flat bundles only"):
        bundle_layers(bundle, manifest)


# --- parse_oci_manifest: strict on what a registry serves ---------------------------------


def valid_doc() -> dict[str, Any]:
    def layer(title: str, media_type: str = WEIGHT_MEDIA_TYPE) -> dict[str, Any]:
        return {
            "mediaType": media_type,
            "digest": str(Digest.of(title.encode())),
            "size": len(title),
            "annotations": {
                "org.opencontainers.image.title": title,
                "org.cncf.model.filepath": title,
            },
        }

    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [
            layer("model.onnx"),
            layer("manifest.json", MANIFEST_MEDIA_TYPE),
            layer("model.sig", SIGNATURE_MEDIA_TYPE),
        ],
        "annotations": {"org.opencontainers.image.created": "2026-01-02T03:04:05Z"},
    }


def parse(doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode()
    parse_oci_manifest(data, name="iris", version="1.2.0", digest=Digest.of(data))


def test_valid_document_parses() -> None:
    data = json.dumps(valid_doc()).encode()
    artifact = parse_oci_manifest(data, name="iris", version="1.2.0", digest=Digest.of(data))
    assert sorted(artifact.files) == ["manifest.json", "model.onnx", "model.sig"]
    assert artifact.files["model.sig"].media_type == SIGNATURE_MEDIA_TYPE


def test_artifact_type_may_be_left_to_the_config() -> None:
    doc = valid_doc()
    del doc["artifactType"]
    parse(doc)


def set_title(i: int, title: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["layers"][i]["annotations"] = {"org.opencontainers.image.title": title}

    return mutate


def set_field(*keys: str | int, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def drop(*keys: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def no_artifact_type_and_image_config(doc: dict[str, Any]) -> None:
    del doc["artifactType"]
    doc["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "title ..": set_title(0, ".."),
    "title .": set_title(0, "."),
    "title with ..": set_title(0, "../model.onnx"),
    "title with /": set_title(0, "sub/model.onnx"),
    "absolute title": set_title(0, "/etc/passwd"),
    "empty title": set_title(0, ""),
    "backslash title": set_title(0, "..\\x"),
    "newline title": set_title(0, "model.onnx\n"),
    "duplicate title": set_title(0, "model.sig"),
    "no title": drop("layers", 0, "annotations"),
    "filepath differs": set_field(
        "layers", 0, "annotations", "org.cncf.model.filepath", value="other.onnx"
    ),
    "wrong mediaType": set_field("mediaType", value="application/vnd.oci.image.index.v1+json"),
    "no mediaType": drop("mediaType"),
    "wrong artifactType": set_field("artifactType", value="application/vnd.example+json"),
    "image config": no_artifact_type_and_image_config,
    "schemaVersion 1": set_field("schemaVersion", value=1),
    "schemaVersion true": set_field("schemaVersion", value=True),
    "malformed digest": set_field("layers", 0, "digest", value="sha256:abc"),
    "sha512 digest": set_field("layers", 0, "digest", value="sha512:" + "a" * 128),
    "uppercase digest": set_field("layers", 0, "digest", value="sha256:" + "A" * 64),
    "negative size": set_field("layers", 0, "size", value=-1),
    "float size": set_field("layers", 0, "size", value=1.5),
    "bool size": set_field("layers", 0, "size", value=True),
    "string size": set_field("layers", 0, "size", value="10"),
    "no size": drop("layers", 0, "size"),
    "layer not an object": set_field("layers", 0, value="model.onnx"),
    "annotation not a string": set_field(
        "layers", 0, "annotations", "org.opencontainers.image.title", value=1
    ),
    "layers not a list": set_field("layers", value={}),
    "no config": drop("config"),
    "no manifest.json": drop("layers", 1),
    "no model.sig": drop("layers", 2),
    "manifest annotations not strings": set_field("annotations", value={"a": 1}),
    "another version": set_field("annotations", "org.opencontainers.image.version", value="1.2.1"),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_malformed_manifests_are_refused(mutation: Callable[[dict[str, Any]], None]) -> None:
    doc = valid_doc()
    mutation(doc)
    with pytest.raises(TamperedError):
        parse(doc)


def test_digest_mismatch_is_refused() -> None:
    data = json.dumps(valid_doc()).encode()
    with pytest.raises(TamperedError, match="does not match its digest"):
        parse_oci_manifest(data, name="iris", version="1.2.0", digest=Digest.of(data + b" "))


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b"[]", b"null"])
def test_non_objects_are_refused(data: bytes) -> None:
    with pytest.raises(TamperedError):
        parse_oci_manifest(data, name="iris", version="1.2.0", digest=Digest.of(data))


def test_oversize_manifest_is_refused_before_parsing() -> None:
    data = b" " * (MAX_OCI_MANIFEST_BYTES + 1)
    with pytest.raises(TamperedError, match="larger than"):
        parse_oci_manifest(data, name="iris", version="1.2.0", digest=Digest.of(data))


def test_every_byte_flip_is_refused() -> None:
    data = json.dumps(valid_doc()).encode()
    digest = Digest.of(data)
    for i in range(0, len(data), 7):
        flipped = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        with pytest.raises(TamperedError):
            parse_oci_manifest(flipped, name="iris", version="1.2.0", digest=digest)


@pytest.mark.parametrize(
    ("title", "safe"),
    [
        ("model.onnx", True),
        ("model.onnx.data", True),
        ("LICENSE", True),
        (".hidden", True),
        ("..", False),
        (".", False),
        ("a/b", False),
        ("/a", False),
        ("", False),
        ("a" * 256, False),
        ("caf\u00e9", False),
    ],
)
def test_safe_titles(title: str, safe: bool) -> None:
    assert is_safe_title(title) is safe


def test_parse_descriptor_reports_where() -> None:
    with pytest.raises(TamperedError, match="index entry 3"):
        parse_descriptor({"mediaType": "x", "digest": "md5:00", "size": 1}, where="index entry 3")


def test_registry_json_with_a_repeated_key_is_refused() -> None:
    manifest = b'{"schemaVersion": 2, "schemaVersion": 2}'
    with pytest.raises(TamperedError, match="duplicate key 'schemaVersion'"):
        parse_oci_manifest(manifest, name="m", version="1.0.0", digest=Digest.of(manifest))
    with pytest.raises(TamperedError, match="duplicate key"):
        parse_document_manifest(
            manifest, digest=Digest.of(manifest), artifact_type="x", where="m:channel.stable"
        )
    with pytest.raises(RegistryError, match="duplicate key 'manifests'"):
        parse_index(b'{"manifests": [], "manifests": []}', where="index.json", hint="fix it")
    with pytest.raises(RegistryError, match="non-standard number"):
        parse_index(b'{"manifests": [{"size": NaN}]}', where="index.json", hint="fix it")
