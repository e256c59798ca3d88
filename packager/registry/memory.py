"""A registry in memory: a reader and writer for tests, which can also be made to lie.

It keeps what the embedded directory keeps - one OCI image index per model, as bytes,
and content-addressed blobs - and reads it through the same
:class:`~packager.registry._verified_read.VerifiedRegistry` and
:func:`~packager.registry.index.parse_index` as every other kind, so whatever a test
makes it serve meets the real checks. The hooks play a compromised registry:
:meth:`MemoryRegistry.serve` hands out other bytes for a blob, :meth:`put_blob` and
:meth:`set_tag` store anything under any tag (an entry may lie about a size or a
digest), :meth:`duplicate_tag` and :meth:`drop_tag` change the index, and
:meth:`snapshot` / :meth:`roll_back` put an earlier state back. :attr:`reads` lists
every blob read, to tell what an operation fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from packager.core.digests import Digest
from packager.core.jsonio import loads_object
from packager.core.manifest import Manifest
from packager.errors import NotFoundError, RegistryError, TamperedError
from packager.registry._verified_read import IndexedStore, VerifiedRegistry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE, plan_artifact
from packager.registry.base import Artifact, Descriptor, WritesAsItGoes
from packager.registry.document import Document, DocumentWriter
from packager.registry.index import (
    EMPTY_INDEX,
    INDEX,
    REF_NAME_ANNOTATION,
    Entry,
    OciIndex,
    parse_index,
    ref_name,
    render_index,
    retag,
    with_version,
)
from packager.registry.layout import LayoutNaming


@dataclass(frozen=True)
class MemorySnapshot:
    """The indexes of a :class:`MemoryRegistry` at one moment (blobs are never removed)."""

    indexes: Mapping[str, bytes]


class MemoryStore(LayoutNaming, IndexedStore):
    """Blobs by digest and index.json bytes by model name, unchecked."""

    def __init__(self, location: str) -> None:
        self._location = location
        self.blobs: dict[str, bytes] = {}
        self.indexes: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}
        self.reads: list[Digest] = []
        self.lock = threading.Lock()

    @property
    def location(self) -> str:
        return self._location

    def close(self) -> None:
        """Nothing to release."""

    def list_names(self) -> list[str]:
        return list(self.indexes)

    def missing_model(self, name: str) -> NotFoundError:
        return NotFoundError(f"model {name!r} not found in {self.location}")

    def read_blob_into(self, name: str, desc: Descriptor, sink: IO[bytes]) -> None:
        hexdigest = desc.digest.hex
        with self.lock:
            self.reads.append(desc.digest)
        data = self.served.get(hexdigest, self.blobs.get(hexdigest))
        if data is None:
            raise RegistryError(f"blob {desc.digest} of {name} is missing from {self.location}")
        sink.write(data[: desc.size + 1])

    def index(self, name: str) -> OciIndex | None:
        data = self.indexes.get(name)
        if data is None:
            return None
        return parse_index(data, where=f"{INDEX} of {name} in {self.location}", hint="reset it")

    def put(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        self.blobs.setdefault(digest.hex, data)
        return digest

    def write_index(self, name: str, entries: list[Entry]) -> None:
        self.indexes[name] = render_index(entries, order=lambda e: ref_name(e) or "")


class MemoryRegistry(WritesAsItGoes, DocumentWriter, VerifiedRegistry):
    """A registry held in memory; see the module doc."""

    def __init__(self, location: str = "memory://registry") -> None:
        self._memory = MemoryStore(location)
        super().__init__(self._memory)

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Store the bundle as ``manifest.name``@``manifest.version``; see
        :class:`~packager.registry.base.RegistryWriter`.

        Raises:
            UsageError: the bundle does not match its manifest or cannot be read.
            TamperedError: a bundle file changed since it was hashed.
            RegistryError: the version exists with different content.
        """
        plan = plan_artifact(bundle, manifest)
        desc = Descriptor(OCI_MANIFEST_MEDIA_TYPE, plan.manifest_digest, len(plan.manifest_bytes))
        label = f"{plan.name}@{plan.version}"
        with self._memory.lock:
            index = self._memory.index(plan.name) or EMPTY_INDEX
            entries = with_version(index, plan.version, desc, label=label, location=self.location)
            if entries is None:
                return plan.artifact()
            for layer, source in plan.layers:
                if self._memory.put(source.read_bytes()) != layer.digest:
                    raise TamperedError(f"{source} changed while it was published")
            self._memory.put(plan.config_bytes)
            self._memory.put(plan.manifest_bytes)
            self._memory.write_index(plan.name, entries)
        return plan.artifact()

    def store_document(self, document: Document) -> None:
        """Store a checked document; see :class:`~packager.registry.document.DocumentWriter`."""
        with self._memory.lock:
            for _, content in document.blobs:
                self._memory.put(content)
            self._memory.put(document.manifest)
            self.set_tag(document.name, document.tag, document.index_entry)

    # -- hooks: a compromised registry ----------------------------------------------------

    def put_blob(self, data: bytes) -> Digest:
        """Store ``data`` as a blob, unchecked; returns its digest."""
        return self._memory.put(data)

    def set_tag(self, name: str, tag: str, entry: Mapping[str, Any]) -> None:
        """Make ``tag`` of ``name`` the index entry ``entry`` (annotated with the tag),
        whatever it says: a lie about a size or a digest is served as it is."""
        tagged = {
            **entry,
            "annotations": {**entry.get("annotations", {}), REF_NAME_ANNOTATION: tag},
        }
        self._memory.write_index(name, retag(self._entries(name), tagged))

    def duplicate_tag(self, name: str, tag: str, *, digest: Digest | None = None) -> None:
        """List ``tag`` a second time, naming ``digest`` (default: the same manifest)."""
        entries = self._entries(name)
        entry = next(e for e in entries if ref_name(e) == tag)
        copy = dict(entry, digest=str(digest)) if digest is not None else dict(entry)
        self._memory.write_index(name, [*entries, copy])

    def drop_tag(self, name: str, tag: str) -> None:
        """Remove every index entry of ``tag``."""
        self._memory.write_index(name, [e for e in self._entries(name) if ref_name(e) != tag])

    def serve(self, digest: Digest, data: bytes) -> None:
        """Hand out ``data`` whenever the blob ``digest`` is read."""
        self._memory.served[digest.hex] = data

    @property
    def reads(self) -> tuple[Digest, ...]:
        """Every blob read so far, by digest, in the order asked for (repeats included)."""
        with self._memory.lock:
            return tuple(self._memory.reads)

    def snapshot(self) -> MemorySnapshot:
        """The registry's tags as they are now, for :meth:`roll_back`."""
        return MemorySnapshot(MappingProxyType(dict(self._memory.indexes)))

    def roll_back(self, snapshot: MemorySnapshot) -> None:
        """Serve the tags of ``snapshot`` again, as a registry restored from an old backup."""
        self._memory.indexes = dict(snapshot.indexes)

    def _entries(self, name: str) -> list[Entry]:
        """The raw entries of ``name``'s index, read without the checks readers apply."""
        data = self._memory.indexes.get(name)
        if data is None:
            return []
        return list(loads_object(data, what=INDEX, error=RegistryError)["manifests"])
