"""Small signed documents stored beside the versions of a model (pure).

A document (a channel, for now) is an OCI 1.1 artifact: an image manifest with its own
``artifactType``, the empty config (``{}``, application/vnd.oci.empty.v1+json) and one
layer (application/vnd.dev.sigstore.bundle.v0.3+json) holding the signed bytes. It is
tagged with a name that is never a SemVer version (``channel.stable``), so
:meth:`~packager.registry.base.Registry.versions` never lists it, and the tag moves each
time a new document is put.

Every registry kind writes documents through :class:`DocumentWriter` (which checks the
name and tag and builds the manifest with :func:`document_manifest`) and checks what it
reads back with :func:`parse_document_manifest`; the document's signature is checked by
the caller.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads_object
from packager.core.manifest import check_name, dump_json
from packager.core.semver import is_semver
from packager.errors import TamperedError, UsageError
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE, parse_descriptor
from packager.registry.base import Descriptor
from packager.registry.index import Entry, tagged_entry

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_DESCRIPTOR = Descriptor(EMPTY_MEDIA_TYPE, Digest.of(EMPTY_CONFIG), len(EMPTY_CONFIG))
LAYER_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# A document manifest is a few hundred bytes; the cap keeps a hostile registry from
# making a reader buffer megabytes before anything is checked.
MAX_DOCUMENT_MANIFEST_BYTES = 64 << 10
_MANIFEST_LIMITS = Limits(max_bytes=MAX_DOCUMENT_MANIFEST_BYTES)
# The tag grammar of the OCI distribution spec.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)


def check_document_tag(tag: str) -> str:
    """Raises UsageError unless ``tag`` is an OCI tag that cannot be read as a version."""
    if not _TAG_RE.fullmatch(tag):
        raise UsageError(f"invalid document tag {tag!r}: use letters, digits, '.', '_', '-'")
    # "_" stands for "+" in the tags of remote registries (1.0.0_build.1).
    if is_semver(tag) or is_semver(tag.replace("_", "+")):
        raise UsageError(f"document tag {tag!r} would read as a version; use e.g. channel.stable")
    return tag


def document_manifest(
    data: bytes, *, artifact_type: str, subject: Descriptor | None = None
) -> tuple[bytes, Descriptor]:
    """The OCI manifest (canonical JSON) storing ``data``, and the descriptor of its layer.

    ``subject`` (the OCI manifest of a model version) makes the document one of that
    version's referrers, as the OCI 1.1 ``subject`` field says."""
    layer = Descriptor(LAYER_MEDIA_TYPE, Digest.of(data), len(data))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR.to_json(),
        "layers": [layer.to_json()],
    }
    if subject is not None:
        doc["subject"] = subject.to_json()
    return dump_json(doc), layer


@dataclass(frozen=True)
class Document:
    """A document ready to store: the bytes, the OCI manifest naming them, and its tag.

    Built by :meth:`DocumentWriter.put_document` once the name and tag are checked."""

    name: str
    tag: str
    data: bytes
    artifact_type: str
    manifest: bytes
    layer: Descriptor

    @property
    def manifest_descriptor(self) -> Descriptor:
        """The descriptor of :attr:`manifest`, the one the tag names."""
        return Descriptor(OCI_MANIFEST_MEDIA_TYPE, Digest.of(self.manifest), len(self.manifest))

    @property
    def index_entry(self) -> Entry:
        """The OCI image index entry of a registry that keeps its tags in one: the
        manifest under :attr:`tag`."""
        return tagged_entry(self.manifest_descriptor, self.tag, artifact_type=self.artifact_type)

    @property
    def blobs(self) -> tuple[tuple[Descriptor, bytes], ...]:
        """What the manifest references, each with its bytes: the empty config, the layer."""
        return ((EMPTY_DESCRIPTOR, EMPTY_CONFIG), (self.layer, self.data))


class DocumentWriter(ABC):
    """:meth:`~packager.registry.base.RegistryWriter.put_document` for every kind: the
    checks and the manifest are the same everywhere; a kind only stores the result."""

    def put_document(
        self,
        name: str,
        tag: str,
        data: bytes,
        *,
        artifact_type: str,
        subject: Descriptor | None = None,
    ) -> Digest:
        """Tag ``data`` as ``<name>:<tag>``; see :class:`~packager.registry.base.RegistryWriter`.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed (a tag must not read as a version),
                or the kind cannot hold ``name``.
            TamperedError, RegistryError: as the kind's :meth:`store_document`.
        """
        check_name(name)
        check_document_tag(tag)
        manifest, layer = document_manifest(data, artifact_type=artifact_type, subject=subject)
        document = Document(name, tag, data, artifact_type, manifest, layer)
        self.store_document(document)
        return document.manifest_descriptor.digest

    @abstractmethod
    def store_document(self, document: Document) -> None:
        """Write the blobs of ``document`` (skipping those present), then its manifest, then
        move its tag to it, replacing whatever the tag named."""


def parse_document_manifest(
    data: bytes, *, digest: Digest, artifact_type: str, where: str
) -> Descriptor:
    """Check the OCI manifest of a document against ``digest``; return its layer descriptor.

    ``where`` names the document in messages.

    Raises:
        TamperedError: too large, not matching ``digest``, not JSON, not an OCI image
            manifest, another artifact type, or not exactly one layer of the document
            media type.
    """
    if len(data) > MAX_DOCUMENT_MANIFEST_BYTES:
        raise TamperedError(f"{where}: manifest is larger than {MAX_DOCUMENT_MANIFEST_BYTES} bytes")
    if Digest.of(data) != digest:
        raise TamperedError(f"{where}: manifest does not match its digest {digest}")
    doc = loads_object(data, what=f"{where}: manifest", limits=_MANIFEST_LIMITS)
    if doc.get("mediaType") != OCI_MANIFEST_MEDIA_TYPE:
        raise TamperedError(f"{where}: not an OCI image manifest")
    schema_version = doc.get("schemaVersion")
    if type(schema_version) is not int or schema_version != 2:
        raise TamperedError(f"{where}: schemaVersion is {schema_version!r}, not 2")
    if doc.get("artifactType") != artifact_type:
        raise TamperedError(
            f"{where}: artifactType is {doc.get('artifactType')!r}, not {artifact_type!r}"
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise TamperedError(f"{where}: a document has exactly one layer")
    layer = parse_descriptor(layers[0], where=f"{where} layer")
    if layer.media_type != LAYER_MEDIA_TYPE:
        raise TamperedError(f"{where}: layer is a {layer.media_type!r}, not a signed document")
    return layer
