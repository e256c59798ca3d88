"""The mapping between a bundle and an OCI artifact, shared by every registry kind.

A version is one OCI image manifest (CNCF ModelPack media types): a config describing the
model, and one layer per bundle file, titled with its path. Everything here is pure -
bytes and a Manifest in, bytes or value objects out - except :func:`bundle_layers` and
:func:`plan_artifact`, which hash the bundle's files on disk.

What a registry serves is untrusted: :func:`parse_oci_manifest` checks the bytes against
their digest and refuses anything that could not have been written by :func:`plan_artifact`
in a way that matters to a reader (unsafe or duplicate titles, malformed descriptors).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from packager._io.hashing import digest_file
from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads_object
from packager.core.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    Manifest,
    dump_json,
    parse_manifest,
)
from packager.errors import TamperedError, UsageError
from packager.registry.base import Artifact, Descriptor

OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
DOC_MEDIA_TYPE = "application/vnd.cncf.model.doc.v1.raw"
DATASET_MEDIA_TYPE = "application/vnd.cncf.model.dataset.v1.raw"
MANIFEST_MEDIA_TYPE = "application/vnd.packager.manifest.v1+json"
SIGNATURE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"

TITLE_ANNOTATION = "org.opencontainers.image.title"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
VERSION_ANNOTATION = "org.opencontainers.image.version"
CREATED_ANNOTATION = "org.opencontainers.image.created"

# CNCF distribution rejects larger manifests, so no registry can legitimately serve one.
MAX_OCI_MANIFEST_BYTES = 4 << 20
_MANIFEST_LIMITS = Limits(max_bytes=MAX_OCI_MANIFEST_BYTES)

_ROLE_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "model": WEIGHT_MEDIA_TYPE,
        "weights": WEIGHT_MEDIA_TYPE,
        "doc": DOC_MEDIA_TYPE,
        "testvectors": DATASET_MEDIA_TYPE,
    }
)
_RESERVED_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {MANIFEST: MANIFEST_MEDIA_TYPE, SIGNATURE: SIGNATURE_MEDIA_TYPE}
)
# A title becomes a file name in the staging directory: one path component of the
# characters bundle paths may use, never "." or "..".
_TITLE_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")


def is_safe_title(title: str) -> bool:
    """True when ``title`` is a single, relative POSIX file name safe to create."""
    return _TITLE_RE.fullmatch(title) is not None and title not in (".", "..")


def layer_media_type(path: str, role: str | None) -> str:
    """The layer media type of a bundle file; ``role`` is None for manifest.json and model.sig.

    Raises:
        UsageError: ``role`` is unknown, or None for a file other than manifest.json/model.sig.
    """
    media_type = _ROLE_MEDIA_TYPES.get(role) if role else _RESERVED_MEDIA_TYPES.get(path)
    if media_type is None:
        raise UsageError(f"bundle file {path!r} has no known role ({role!r})")
    return media_type


def layer_descriptor(path: str, role: str | None, digest: Digest, size: int) -> Descriptor:
    """The layer descriptor of one bundle file, titled with its path.

    Raises:
        UsageError: as :func:`layer_media_type`.
    """
    return Descriptor(
        media_type=layer_media_type(path, role),
        digest=digest,
        size=size,
        annotations=MappingProxyType({TITLE_ANNOTATION: path, FILEPATH_ANNOTATION: path}),
    )


def build_config(manifest: Manifest, layer_digests: Sequence[Digest]) -> bytes:
    """The ModelPack config blob (canonical JSON); layers are uncompressed, so diff_ids
    are the layer digests themselves."""
    descriptor: dict[str, Any] = {
        "name": manifest.name,
        "version": manifest.version,
        "createdAt": manifest.created,
    }
    if manifest.license is not None:
        descriptor["licenses"] = [manifest.license]
    return dump_json(
        {
            "descriptor": descriptor,
            "config": {"format": "onnx"},
            "modelfs": {"type": "layers", "diff_ids": [str(d) for d in layer_digests]},
        }
    )


def build_oci_manifest(
    manifest: Manifest, *, config: Descriptor, layers: Sequence[Descriptor]
) -> bytes:
    """The OCI image manifest of a version: canonical JSON, so the same bundle always
    gives the same bytes and therefore the same digest."""
    return dump_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
            "annotations": {
                VERSION_ANNOTATION: manifest.version,
                CREATED_ANNOTATION: manifest.created,
            },
        }
    )


def bundle_layers(bundle: Path, manifest: Manifest) -> list[tuple[Descriptor, Path]]:
    """Hash a bundle's files into layer descriptors, each with the file it comes from.

    Order: the manifest's files in manifest order, then manifest.json, then model.sig.
    Every file is checked against ``manifest`` on the way, so a bundle changed after
    packaging is never published.

    Raises:
        UsageError: a file is missing, not a regular file, not a flat file name, or the
            bundle's manifest.json is not ``manifest``.
        TamperedError: a file's size or sha256 differs from the manifest.
    """
    listed: list[tuple[str, str | None]] = [(f.path, f.role) for f in manifest.files]
    listed += [(MANIFEST, None), (SIGNATURE, None)]
    layers: list[tuple[Descriptor, Path]] = []
    for path, role in listed:
        if not is_safe_title(path):
            raise UsageError(
                f"bundle file {path!r} is in a subfolder or has an unsafe name; "
                "registries store flat bundles only"
            )
        source = bundle / path
        try:
            st = os.lstat(source)
        except FileNotFoundError as e:
            raise UsageError(f"bundle {bundle} has no {path}; package it again") from e
        except OSError as e:
            raise UsageError(f"cannot read {source}: {e.strerror}") from e
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{source} is not a regular file; bundles hold no links or folders")
        if path == MANIFEST:
            digest, size = _check_manifest_file(source, st.st_size, manifest)
        else:
            try:
                digest, size = digest_file(source)
            except OSError as e:
                raise UsageError(f"cannot read {source}: {e.strerror}") from e
        if role is not None:
            entry = manifest.file(path)
            if (digest, size) != (entry.digest, entry.size):
                raise TamperedError(
                    f"{source} differs from manifest.json (size {size}, {digest}); "
                    "the bundle changed after packaging: package it again"
                )
        layers.append((layer_descriptor(path, role, digest, size), source))
    return layers


def _check_manifest_file(source: Path, size: int, manifest: Manifest) -> tuple[Digest, int]:
    # The layer must carry exactly the manifest the caller publishes under: its name
    # and version become the tag.
    if size > MAX_MANIFEST_BYTES:
        raise UsageError(f"{source} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = source.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {source}: {e.strerror}") from e
    if parse_manifest(data) != manifest:
        raise UsageError(f"{source} is not the manifest being published; package it again")
    return Digest.of(data), len(data)


@dataclass(frozen=True)
class ArtifactPlan:
    """Everything a registry writes to publish a bundle, in write order: layers, config,
    OCI manifest."""

    name: str
    version: str
    layers: tuple[tuple[Descriptor, Path], ...]
    config: Descriptor
    config_bytes: bytes
    manifest_bytes: bytes

    @property
    def manifest_digest(self) -> Digest:
        return Digest.of(self.manifest_bytes)

    def artifact(self) -> Artifact:
        """The artifact a reader will see once this plan is published."""
        return parse_oci_manifest(
            self.manifest_bytes,
            name=self.name,
            version=self.version,
            digest=self.manifest_digest,
        )


def plan_artifact(bundle: Path, manifest: Manifest) -> ArtifactPlan:
    """Hash a bundle and build its config and OCI manifest.

    Raises:
        UsageError, TamperedError: as :func:`bundle_layers`.
    """
    layers = bundle_layers(bundle, manifest)
    descriptors = [desc for desc, _ in layers]
    config_bytes = build_config(manifest, [desc.digest for desc in descriptors])
    config = Descriptor(CONFIG_MEDIA_TYPE, Digest.of(config_bytes), len(config_bytes))
    return ArtifactPlan(
        name=manifest.name,
        version=manifest.version,
        layers=tuple(layers),
        config=config,
        config_bytes=config_bytes,
        manifest_bytes=build_oci_manifest(manifest, config=config, layers=descriptors),
    )


def parse_descriptor(obj: object, *, where: str) -> Descriptor:
    """Parse an OCI descriptor JSON object; ``where`` names it in error messages.

    Raises:
        TamperedError: not an object, or a field is missing or malformed.
    """
    if not isinstance(obj, dict):
        raise TamperedError(f"{where}: descriptor is not a JSON object")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise TamperedError(f"{where}: descriptor has no mediaType")
    digest = obj.get("digest")
    if not isinstance(digest, str):
        raise TamperedError(f"{where}: descriptor has no digest")
    size = obj.get("size")
    # bool is an int subclass; JSON true is not a size.
    if type(size) is not int or size < 0:
        raise TamperedError(f"{where}: descriptor size {size!r} is not a non-negative integer")
    return Descriptor(
        media_type=media_type,
        digest=_parse_digest(digest, where),
        size=size,
        annotations=_string_map(obj.get("annotations", {}), f"{where} annotations"),
    )


def _parse_digest(value: str, where: str) -> Digest:
    try:
        return Digest.parse(value)
    except TamperedError as e:
        raise TamperedError(f"{where}: {e}") from e


def _string_map(obj: object, where: str) -> Mapping[str, str]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise TamperedError(f"{where} are not a map of strings")
    return MappingProxyType(dict(obj))


def parse_oci_manifest(data: bytes, *, name: str, version: str, digest: Digest) -> Artifact:
    """Check and parse the OCI manifest a registry serves for ``name``@``version``.

    ``digest`` is the one the registry's index or tag gave; the bytes must match it.

    Raises:
        TamperedError: over 4 MiB, digest mismatch, not JSON, not a packager artifact,
            a malformed descriptor, a layer without a safe and unique title, no
            manifest.json or model.sig layer, or a version annotation other than ``version``.
    """
    ref = f"{name}@{version}"
    if len(data) > MAX_OCI_MANIFEST_BYTES:
        raise TamperedError(f"OCI manifest of {ref} is larger than {MAX_OCI_MANIFEST_BYTES} bytes")
    if Digest.of(data) != digest:
        raise TamperedError(f"OCI manifest of {ref} does not match its digest {digest}")
    where = f"OCI manifest of {ref}"
    doc = loads_object(data, what=where, limits=_MANIFEST_LIMITS)
    schema_version = doc.get("schemaVersion")
    if type(schema_version) is not int or schema_version != 2:
        raise TamperedError(f"{where}: schemaVersion is {schema_version!r}, not 2")
    if doc.get("mediaType") != OCI_MANIFEST_MEDIA_TYPE:
        raise TamperedError(f"{where}: mediaType is {doc.get('mediaType')!r}, not an OCI manifest")
    config = parse_descriptor(doc.get("config"), where=f"{where} config")
    artifact_type = doc.get("artifactType")
    # artifactType is optional in OCI 1.1 when the config media type says what it is.
    if artifact_type is None and config.media_type != CONFIG_MEDIA_TYPE:
        raise TamperedError(f"{where}: config {config.media_type!r} is not a model config")
    if artifact_type is not None and artifact_type != ARTIFACT_TYPE:
        raise TamperedError(f"{where}: artifactType {artifact_type!r} is not a model")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise TamperedError(f"{where}: layers is not a list")
    files: dict[str, Descriptor] = {}
    for i, obj in enumerate(layers):
        desc = parse_descriptor(obj, where=f"{where} layer {i}")
        title = desc.annotations.get(TITLE_ANNOTATION)
        if title is None or not is_safe_title(title):
            raise TamperedError(f"{where}: layer {i} has an unsafe or no title {title!r}")
        if desc.annotations.get(FILEPATH_ANNOTATION, title) != title:
            raise TamperedError(f"{where}: layer {i} has a file path other than its title")
        if title in files:
            raise TamperedError(f"{where}: two layers are titled {title!r}")
        files[title] = desc
    for required in (MANIFEST, SIGNATURE):
        if required not in files:
            raise TamperedError(f"{where}: no {required} layer")
    annotations = _string_map(doc.get("annotations", {}), f"{where} annotations")
    # A version's manifest tagged as another version (a retag, a swapped index entry) is
    # the wrong software even though every digest matches.
    tagged = annotations.get(VERSION_ANNOTATION, version)
    if tagged != version:
        raise TamperedError(f"{where}: it is the manifest of version {tagged!r}")
    return Artifact(
        name=name,
        version=version,
        manifest_digest=digest,
        files=MappingProxyType(files),
        created=annotations.get(CREATED_ANNOTATION),
        config=config,
        oci_manifest=data,
    )
