"""Signed documents attached to one model version (approvals, revocations, and later others).

An attachment is a document (:mod:`packager.registry.document`) whose OCI manifest names
the version's OCI manifest as its ``subject`` (the OCI 1.1 referrers way), tagged
``sha256-<hex>.<kind>.<id>``: ``<hex>`` the version's OCI manifest digest, ``<kind>`` what
the document is (``approval``), ``<id>`` the first 16 hex digits of the document's own
sha256. Every document of a kind is thus reachable by tag in every registry kind, including
those with no referrers API (docker-registry, static mirrors, archives), and listing a
version's attachments is listing the tags that start with ``sha256-<hex>.``. A new
document never replaces another: several reviewers approve the same version.

The registry only stores and serves bytes: what a document says and whether it counts is
:mod:`packager.core.verify`'s to decide.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from packager.core.approval import APPROVAL_KIND, REVOCATION_KIND
from packager.core.benchrecord import KIND as BENCHMARK_KIND
from packager.core.digests import Digest
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.base import Artifact, Descriptor, Registry, RegistryReader

KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,15}", re.ASCII)
_TAG_RE = re.compile(r"sha256-([0-9a-f]{64})\.([a-z][a-z0-9-]{0,15})\.([0-9a-f]{16})", re.ASCII)
# Signed documents are a few kilobytes; the cap keeps a hostile registry from making a
# reader buffer more.
MAX_ATTACHMENT_BYTES = 1 << 20
# Documents of one kind read for one version: each is verified against every trusted key,
# so a registry listing thousands must not make an install verify thousands.
MAX_ATTACHMENTS_PER_KIND = 64
# The kinds packager reads. Listing every kind (mirror, export, search) lists these only:
# a kind is any short word, so carrying unknown kinds would let a registry multiply the
# per-kind cap by hundreds of kinds.
KNOWN_KINDS = frozenset({APPROVAL_KIND, REVOCATION_KIND, BENCHMARK_KIND})
# Tags naming one version, of every kind (unknown ones included): more is refused.
MAX_ATTACHMENTS_PER_VERSION = 256


@dataclass(frozen=True)
class Attachment:
    """One document attached to a version: its kind and the tag it is stored under."""

    kind: str
    tag: str


def check_kind(kind: str) -> str:
    """Raises UsageError unless ``kind`` is a short lowercase word like 'approval'."""
    if not KIND_RE.fullmatch(kind):
        raise UsageError(f"invalid attachment kind {kind!r}: use a short lowercase word")
    return kind


def artifact_type(kind: str) -> str:
    """The OCI ``artifactType`` of attachments of ``kind``."""
    return f"application/vnd.packager.{check_kind(kind)}.v1+json"


def attachment_tag(subject: Digest, kind: str, document: bytes) -> str:
    """The tag of ``document`` of ``kind`` attached to the version whose OCI manifest has
    digest ``subject``."""
    return f"sha256-{subject.hex}.{check_kind(kind)}.{Digest.of(document).hex[:16]}"


def put_attachment(registry: Registry, artifact: Artifact, kind: str, data: bytes) -> Attachment:
    """Attach ``data`` (a signed document of ``kind``) to the version ``artifact`` describes.

    Raises:
        UsageError: a malformed kind.
        RegistryError: writing failed.
    """
    tag = attachment_tag(artifact.manifest_digest, kind, data)
    registry.put_document(
        artifact.name, tag, data, artifact_type=artifact_type(kind), subject=subject_of(artifact)
    )
    return Attachment(kind, tag)


def list_attachments(
    registry: RegistryReader, artifact: Artifact, kind: str | None = None
) -> list[Attachment]:
    """The documents attached to the version ``artifact`` describes (of ``kind`` only,
    when given), sorted by kind and tag; see :func:`attachments_in`.

    Raises:
        TamperedError: the registry lists a tag more than once, or more than
            :data:`MAX_ATTACHMENTS_PER_KIND` documents of one kind.
        RegistryError: the registry cannot be read.
    """
    tags = registry.tags(artifact.name)
    return attachments_in(tags, artifact, kind, location=registry.location)


def attachments_in(
    tags: list[str], artifact: Artifact, kind: str | None = None, *, location: str
) -> list[Attachment]:
    """The attachments of the version ``artifact`` describes among ``tags`` (the tags of
    its model in the registry at ``location``), sorted by kind and tag: what every reader
    of attachments (install, approvals, search, mirror, export, benchmark history) reads.
    With ``kind`` None, those of :data:`KNOWN_KINDS` only: documents of other kinds are
    skipped, neither read nor carried.

    Raises:
        TamperedError: more than :data:`MAX_ATTACHMENTS_PER_VERSION` tags name the
            version, or more than :data:`MAX_ATTACHMENTS_PER_KIND` documents of one kind.
    """
    naming = _naming(tags, artifact)
    if len(naming) > MAX_ATTACHMENTS_PER_VERSION:
        raise TamperedError(
            f"{location} lists {len(naming)} documents for {artifact.ref}, "
            f"more than the {MAX_ATTACHMENTS_PER_VERSION} packager reads"
        )
    wanted = KNOWN_KINDS if kind is None else {kind}
    found = [a for a in naming if a.kind in wanted]
    _check_counts(found, location=location, ref=artifact.ref)
    return sorted(found, key=lambda a: (a.kind, a.tag))


def _naming(tags: list[str], artifact: Artifact) -> list[Attachment]:
    """The attachments among ``tags`` that name the version, of every kind."""
    found = []
    for tag in tags:
        match = _TAG_RE.fullmatch(tag)
        if match is not None and match.group(1) == artifact.manifest_digest.hex:
            found.append(Attachment(match.group(2), tag))
    return found


def _check_counts(found: Sequence[Attachment], *, location: str, ref: str) -> None:
    """Raises TamperedError if ``found`` (the documents ``location`` holds for ``ref``)
    has more than :data:`MAX_ATTACHMENTS_PER_KIND` of one kind."""
    for listed, count in sorted(Counter(a.kind for a in found).items()):
        if count > MAX_ATTACHMENTS_PER_KIND:
            raise TamperedError(
                f"{location} lists {count} {listed} documents for {ref}, "
                f"more than the {MAX_ATTACHMENTS_PER_KIND} packager reads"
            )


def get_attachment(
    registry: RegistryReader, name: str, found: Attachment, *, max_size: int
) -> bytes:
    """The bytes of one attachment (capped at ``max_size``).

    Raises:
        NotFoundError: it is gone.
        TamperedError: a malformed document artifact, another artifact type, or bytes that
            differ from their descriptor.
        RegistryError: the registry cannot be read.
    """
    return registry.get_document(
        name, found.tag, artifact_type=artifact_type(found.kind), max_size=max_size
    )


def read_attachments(
    registry: RegistryReader, artifact: Artifact, kind: str, *, max_size: int
) -> list[bytes]:
    """The bytes of every document of ``kind`` attached to the version (each capped at
    ``max_size``); see :func:`get_attachment`.

    Raises:
        TamperedError: more than :data:`MAX_ATTACHMENTS_PER_KIND` of them, or as
            :func:`get_attachment`.
    """
    found = list_attachments(registry, artifact, kind)
    return [get_attachment(registry, artifact.name, f, max_size=max_size) for f in found]


def missing_attachments(
    destination: RegistryReader, copy: Artifact, listed: Sequence[Attachment], *, source: str
) -> list[Attachment]:
    """Those of ``listed`` (documents of the version in the registry at ``source``) that
    ``copy`` (the version in ``destination``) lacks, once it is checked that it can hold
    them all: more than :data:`MAX_ATTACHMENTS_PER_KIND` of a kind there would make every
    install from ``destination`` refuse the version.

    Raises:
        RegistryError: the documents ``destination`` holds and those it lacks are together
            more than :data:`MAX_ATTACHMENTS_PER_KIND` of one kind, or than
            :data:`MAX_ATTACHMENTS_PER_VERSION`.
        TamperedError: ``destination`` already holds too many.
    """
    try:
        tags = destination.tags(copy.name)
    except NotFoundError:  # an archive not written yet, a repository not created yet
        tags = []
    held = attachments_in(tags, copy, location=destination.location)
    present = {(a.kind, a.tag.rsplit(".", 1)[1]) for a in held}
    missing = [f for f in listed if (f.kind, f.tag.rsplit(".", 1)[1]) not in present]
    others = len(_naming(tags, copy)) - len(held)  # of kinds packager does not read
    _check_room(held, missing, others, where=destination.location, ref=copy.ref, source=source)
    return missing


def _check_room(
    held: list[Attachment],
    missing: list[Attachment],
    others: int,
    *,
    where: str,
    ref: str,
    source: str,
) -> None:
    """Raises RegistryError unless the documents ``where`` holds for ``ref`` (``held``, and
    ``others`` of unknown kinds) and those ``source`` adds (``missing``) stay within the
    caps together."""
    held_count, missing_count = Counter(a.kind for a in held), Counter(a.kind for a in missing)
    checks = [
        (f"{k} documents", held_count[k], missing_count[k], MAX_ATTACHMENTS_PER_KIND)
        for k in sorted(missing_count)
    ]
    checks.append(("documents", len(held) + others, len(missing), MAX_ATTACHMENTS_PER_VERSION))
    for what, had, more, cap in checks:
        if had + more > cap:
            raise RegistryError(
                f"{where} holds {had} {what} for {ref} and {source} {more} others: together "
                f"more than the {cap} packager reads, so installs would refuse the version; "
                "nothing of it was copied"
            )


def copy_attachments(
    source: RegistryReader,
    artifact: Artifact,
    destination: Registry,
    copy: Artifact,
    *,
    listed: Sequence[Attachment],
) -> list[Attachment]:
    """Attach to ``copy`` (the version in ``destination``) every document of ``listed``
    (:func:`list_attachments` of ``artifact`` in ``source``, read before the version was
    copied) that it lacks, byte for byte (they are signed: installers judge them); returns
    those copied. Nothing is written unless the copy can hold them all (see
    :func:`missing_attachments`).

    Raises:
        TamperedError: a malformed document in ``source``; more than
            :data:`MAX_ATTACHMENTS_PER_KIND` of one kind in ``destination``.
        RegistryError: more than :data:`MAX_ATTACHMENTS_PER_KIND` of one kind in both
            together, either registry cannot be read, or ``destination`` written.
    """
    missing = missing_attachments(destination, copy, listed, source=source.location)
    copied = []
    for found in missing:
        data = get_attachment(source, artifact.name, found, max_size=MAX_ATTACHMENT_BYTES)
        copied.append(put_attachment(destination, copy, found.kind, data))
    return copied


def attached_documents(
    registry: RegistryReader, artifact: Artifact
) -> list[tuple[Attachment, bytes]]:
    """Every document attached to the version, with its bytes (each capped).

    Raises:
        TamperedError: a malformed document; more than :data:`MAX_ATTACHMENTS_PER_KIND` of
            one kind.
        RegistryError: the registry cannot be read.
    """
    return [
        (found, get_attachment(registry, artifact.name, found, max_size=MAX_ATTACHMENT_BYTES))
        for found in list_attachments(registry, artifact)
    ]


def subject_of(artifact: Artifact) -> Descriptor:
    """The descriptor of the version's OCI manifest: the ``subject`` of its attachments."""
    return Descriptor(OCI_MANIFEST_MEDIA_TYPE, artifact.manifest_digest, len(artifact.oci_manifest))
