"""The seam every registry kind implements, and the value objects that cross it.

A registry stores each published version as an OCI artifact (see
:mod:`packager.registry.artifact`). Everything a registry returns is untrusted until the
signature in ``model.sig`` has been checked by the caller; the registry itself only
guarantees that the bytes it hands out match the size and digest it was asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from packager.core.digests import Digest
from packager.core.manifest import Manifest
from packager.core.shards import Shard


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its exact size."""

    media_type: str
    digest: Digest
    size: int
    # Excluded from the hash so descriptors stay hashable; still part of equality.
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as an OCI JSON object (annotations only when there are any)."""
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class Artifact:
    """What a registry says a version contains. UNTRUSTED until the signature is checked.

    ``files`` maps each bundle path (including manifest.json and model.sig) to the
    descriptor of the layer holding it. ``config`` and ``oci_manifest`` (the OCI manifest
    bytes exactly as served) are what copying the version elsewhere needs to keep its
    manifest digest.
    """

    name: str
    version: str
    manifest_digest: Digest
    files: Mapping[str, Descriptor] = field(hash=False)
    created: str | None = None
    config: Descriptor = field(kw_only=True)
    oci_manifest: bytes = field(kw_only=True, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class RegistryReader(Protocol):
    """Where bundles are fetched from: every kind of registry is one.

    Implementations turn every foreign exception into a :class:`~packager.errors.PackagerError`
    subclass: ``NotFoundError`` for a missing model or version, ``TamperedError`` when bytes
    do not match their descriptor or the registry contradicts itself, ``RegistryError`` for
    everything else that goes wrong. A reader holds connections or files until
    :meth:`close`; it is a context manager that closes on exit.
    """

    @property
    def location(self) -> str:
        """A printable reference to the registry, never containing credentials."""
        ...

    def names(self) -> list[str]:
        """Every model name in the registry, sorted; empty when there is none.

        Raises:
            RegistryError: the registry cannot be read.
        """
        ...

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, sorted by SemVer precedence, lowest first.

        Raises:
            UsageError: ``name`` is not a valid model name.
            RegistryError: the registry cannot be read.
        """
        ...

    def tags(self, name: str) -> list[str]:
        """Every tag in ``name``'s repository (versions, documents, other tools'), sorted.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: the registry lists a tag more than once.
            RegistryError: the registry cannot be read.
        """
        ...

    def resolve(self, name: str, version: str) -> Artifact:
        """What ``name``@``version`` contains, as the registry describes it.

        Raises:
            UsageError: ``name`` or ``version`` is malformed.
            NotFoundError: the model or version is not in the registry.
            TamperedError: the OCI manifest does not match its digest or is malformed.
            RegistryError: the registry cannot be read.
        """
        ...

    def read_blob(self, name: str, desc: Descriptor, *, max_size: int) -> bytes:
        """Read a small blob into memory.

        Refuses ``desc.size > max_size`` before reading anything, reads at most
        ``desc.size + 1`` bytes, and checks size and sha256.

        Raises:
            TamperedError: the descriptor is over ``max_size``, or the bytes differ from it.
            RegistryError: the blob is missing or cannot be read.
        """
        ...

    def fetch_blob(
        self,
        name: str,
        desc: Descriptor,
        dest: Path,
        shards: Sequence[Shard] = (),
        reuse: Path | None = None,
    ) -> None:
        """Stream a blob into the new file ``dest`` (created, fsynced).

        Stops after ``desc.size + 1`` bytes and checks size and sha256 while copying;
        ``dest`` is removed on any failure. ``shards``: the blob's signed shards, in file
        order; a registry that serves ranges is then read one range per shard, several
        at once, each range checked against its shard's digest instead of the whole
        blob against ``desc.digest``; the shards the installed file ``reuse`` holds at
        the same offsets are copied from it (and checked) instead of fetched.

        Raises:
            TamperedError: the bytes differ from the descriptor.
            RegistryError: the blob is missing or cannot be read, or ``dest`` cannot be
                written (including when it already exists).
        """
        ...

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        """The document stored by :meth:`RegistryWriter.put_document` under ``tag``.

        The OCI manifest (capped) must have ``artifactType`` and exactly one layer; the
        layer is read with ``max_size`` as a cap and its digest checked.

        Raises:
            NotFoundError: no such tag.
            TamperedError: malformed artifact, or bytes that differ from the descriptor.
            RegistryError: the registry cannot be read.
        """
        ...

    def close(self) -> None:
        """Release connections and files; the reader must not be used afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class RegistryWriter(Protocol):
    """Where bundles are published to. Static mirrors are not writers."""

    @property
    def location(self) -> str:
        """A printable reference to the registry, never containing credentials."""
        ...

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Store the bundle as ``manifest.name``@``manifest.version``.

        Writes every blob (skipping those already present), then the config, then the OCI
        manifest, then the tag. Publishing a version again with identical content returns
        the existing artifact.

        Raises:
            UsageError: the bundle does not match its manifest or cannot be read.
            RegistryError: the version exists with different content, or writing failed.
        """
        ...

    def put_document(
        self,
        name: str,
        tag: str,
        data: bytes,
        *,
        artifact_type: str,
        subject: Descriptor | None = None,
    ) -> Digest:
        """Tag a small signed document (e.g. a channel) in ``name``'s repository as ``tag``.

        Stored as the OCI artifact :mod:`packager.registry.document` describes, with
        ``subject`` (a model version's OCI manifest) when the document is attached to a
        version (:mod:`packager.registry.attachments`). The tag moves to the new document;
        returns the new OCI manifest's digest.

        Raises:
            UsageError: ``tag`` is malformed.
            RegistryError: writing failed.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """A block whose writes become visible together when it ends without an error.

        Kinds that write as they go (directories, OCI registries) do nothing special; an
        archive is rebuilt once at the end of the block, and left untouched on an error.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class WritesAsItGoes:
    """The :meth:`RegistryWriter.batch` of a kind whose every write is durable and visible
    when it returns: there is nothing to group."""

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()


class Registry(RegistryReader, RegistryWriter, Protocol):
    """A registry that can be read and written: the embedded directory, OCI registries,
    archives and the in-memory registry."""
