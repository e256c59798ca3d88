"""The one read path of every registry kind: caps, hashes, new files, and what a fault is.

A kind of registry is a :class:`BlobStore`: it hands out raw bytes, tags and names, and
checks nothing. :class:`VerifiedRegistry` turns any store into a
:class:`~packager.registry.base.RegistryReader`, and everything that makes reading an
untrusted registry safe happens here, once:

- sizes: a descriptor over the caller's cap is refused before a byte is read; a blob is
  read to its declared size plus one byte at most; a store that knows a blob's stored
  size before reading (an archive) has it checked against the descriptor first;
- digests: every manifest and blob is checked against its descriptor;
- destination files are created exclusively, never through a link planted there
  (``O_EXCL | O_NOFOLLOW``), fsynced, and removed on any failure;
- faults: bytes that are not the ones described, or a registry answer that contradicts
  itself (a tag listed twice, a manifest served under another digest than claimed), are
  :class:`TamperedError` (exit 3); a missing model or tag is :class:`NotFoundError` and
  anything that cannot be read :class:`RegistryError` (exit 4).

Stores may offer a fast path for :meth:`VerifiedRegistry.fetch_blob`,
:class:`FileCopier`: local files are copied in the kernel with the hash right behind the
copy (:func:`~packager.registry.files.copy_into`), remote blobs stream with resumes and
a hashing thread (:class:`~packager.registry.transport.Transport`). The measured size and
digest still come back here to be judged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, Self, runtime_checkable

from packager._io.hashing import hash_range
from packager.core.digests import Digest
from packager.core.manifest import check_version
from packager.core.semver import sort_versions
from packager.core.shards import Shard
from packager.core.text import printable
from packager.errors import NotFoundError, RegistryError, TamperedError, disk_or
from packager.registry.artifact import (
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    parse_oci_manifest,
)
from packager.registry.base import Artifact, Descriptor
from packager.registry.document import (
    MAX_DOCUMENT_MANIFEST_BYTES,
    check_document_tag,
    parse_document_manifest,
)
from packager.registry.index import OciIndex

# Exclusive creation never follows a link planted at the destination, and a failure to
# create leaves whatever was there alone. Readable too: copies are hashed from the file.
_NEW_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Tagged:
    """What a store found under a tag.

    Stores with an index give the ``descriptor`` it lists; stores that serve manifests
    by tag (OCI distribution) give the bytes they read (``data``, at most the limit plus
    one byte) and the digest the server ``claimed`` for them, if it claimed one.
    """

    descriptor: Descriptor | None = None
    data: bytes = b""
    claimed: Digest | None = None


class BlobStore(Protocol):
    """What a kind of registry supplies to :class:`VerifiedRegistry`: raw bytes only."""

    @property
    def location(self) -> str:
        """A printable reference to the store, never containing credentials."""
        ...

    def check_name(self, name: str) -> str:
        """``name``; raises UsageError unless it is a model name this kind can hold."""
        ...

    def version_tag(self, version: str) -> str:
        """The tag a version is stored under (raises UsageError for a malformed one)."""
        ...

    def tag_version(self, tag: str) -> str | None:
        """The version a tag holds, or None for tags that are not versions."""
        ...

    def list_names(self) -> list[str]:
        """Every model name in the store."""
        ...

    def list_tags(self, name: str) -> list[str]:
        """Every tag of ``name`` as the store lists it (repeats included); empty when
        there is no such model."""
        ...

    def find_tag(self, name: str, tag: str, *, limit: int) -> Tagged | None:
        """What ``tag`` of ``name`` is, or None when the model has no such tag.

        Raises:
            NotFoundError: the store has no model ``name`` (the message says what to do).
        """
        ...

    def read_blob_into(self, name: str, desc: Descriptor, sink: IO[bytes]) -> None:
        """Write the blob's bytes into the empty ``sink``, never more than
        ``desc.size + 1`` of them.

        Raises:
            RegistryError: the blob is missing or cannot be read.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class IndexedStore(ABC):
    """The tags of a store that keeps one OCI image index per model (a registry
    directory, its static mirrors, the in-memory registry)."""

    @abstractmethod
    def index(self, name: str) -> OciIndex | None:
        """``name``'s index (see :func:`~packager.registry.index.parse_index`), or None
        when the store has no such model."""

    @abstractmethod
    def missing_model(self, name: str) -> NotFoundError:
        """The error for a model the store does not have, saying what to do."""

    def list_tags(self, name: str) -> list[str]:
        index = self.index(name)
        return list(index.refs) if index is not None else []

    def find_tag(self, name: str, tag: str, *, limit: int) -> Tagged | None:
        index = self.index(name)
        if index is None:
            raise self.missing_model(name)
        desc = index.descriptor(tag)
        return None if desc is None else Tagged(descriptor=desc)


@runtime_checkable
class FileCopier(Protocol):
    """A store's fast path into a new file."""

    def copy_blob_into(self, name: str, desc: Descriptor, out: int) -> tuple[Digest, int]:
        """Copy the blob, at most ``desc.size + 1`` bytes, into the empty file ``out``
        (open for reading and writing); returns the sha256 and size of what ``out`` holds.

        Raises:
            OSError, RegistryError: reading or writing failed.
        """
        ...


@dataclass(frozen=True)
class ShardedBlob:
    """A blob of model ``name`` read shard by shard: its descriptor and its signed
    ``shards``, in file order, which the reader has checked cover exactly ``desc.size``
    bytes."""

    name: str
    desc: Descriptor
    shards: Sequence[Shard]


@runtime_checkable
class ShardFetcher(Protocol):
    """A store that can read a blob one range per shard (a remote registry)."""

    def fetch_shards_into(self, blob: ShardedBlob, out: int, have: Collection[int]) -> bool:
        """Fetch the blob into the file ``out`` one range per shard, each checked
        against its shard's digest, but for the shards ``have`` indexes, in ``out``
        already; False (``out`` left empty) when the server does not serve ranges.

        Raises:
            TamperedError: a shard differs from its signed digest.
            OSError, RegistryError: reading or writing failed.
        """
        ...


@runtime_checkable
class ShardCopier(Protocol):
    """A local store that copies a blob shard by shard, every shard hashed on its own."""

    def copy_shards_into(self, blob: ShardedBlob, out: int) -> Shard | None:
        """Copy the blob's shards into ``out`` (open for reading and writing), each
        hashed where it landed; the first shard that differs from its signed digest, or
        None when every one matches.

        Raises:
            OSError, RegistryError: reading or writing failed.
        """
        ...


@runtime_checkable
class SizedStore(Protocol):
    """A store that knows a blob's stored size before reading it."""

    def stored_size(self, name: str, desc: Descriptor) -> int | None:
        """The size of the bytes the store holds for ``desc``; None when it knowingly
        leaves the blob out (a delta archive: the instance may hold it, else fetching it
        fails, naming what to install first).

        Raises:
            RegistryError: the blob is missing.
        """
        ...


def check_cap(name: str, desc: Descriptor, max_size: int) -> None:
    """Raises TamperedError when ``desc`` declares more than ``max_size`` bytes."""
    if desc.size > max_size:
        raise TamperedError(
            f"blob {desc.digest} of {name} declares {desc.size} bytes, "
            f"more than the {max_size} allowed"
        )


def check_blob(what: str, desc: Descriptor, size: int, digest: Digest) -> None:
    """Raises TamperedError unless ``size`` and ``digest`` are the ones ``desc`` declares;
    ``what`` is what was being done ("fetch blob ... of iris")."""
    if size != desc.size:
        longer = "longer" if size > desc.size else "shorter"
        raise TamperedError(
            f"cannot {what}: it is {longer} than the {desc.size} bytes declared; do not use it"
        )
    if digest != desc.digest:
        raise TamperedError(
            f"cannot {what}: the bytes do not match {desc.digest} (the blob does not match "
            "its digest); do not use it"
        )


@contextlib.contextmanager
def new_file(dest: Path, what: str) -> Iterator[int]:
    """Create ``dest`` exclusively (no link followed) and yield its descriptor, open for
    reading and writing; fsynced when the block ends, removed if it fails.

    Raises:
        RegistryError: ``dest`` exists or cannot be created or written.
    """
    try:
        out = os.open(dest, _NEW_FILE_FLAGS, 0o666)
    except OSError as e:
        message = f"cannot {what}: cannot create {dest}: {e.strerror}"
        raise disk_or(RegistryError, message, e) from e
    try:
        try:
            yield out
            os.fsync(out)
        finally:
            os.close(out)
    except OSError as e:
        dest.unlink(missing_ok=True)
        message = f"cannot {what}: cannot write {dest}: {e.strerror}"
        raise disk_or(RegistryError, message, e) from e
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _check_shards(what: str, desc: Descriptor, shards: Sequence[Shard]) -> None:
    if shards[-1].end != desc.size:
        raise TamperedError(
            f"cannot {what}: its signed shards end at byte {shards[-1].end}, "
            f"not at the {desc.size} bytes declared"
        )


def _reused(reuse: Path | None, out: int, desc: Descriptor, shards: Sequence[Shard]) -> set[int]:
    """The shards copied into ``out`` from ``reuse``, sized to the blob first."""
    if reuse is None:
        return set()
    from packager.registry.shard_reuse import reuse_shards

    os.ftruncate(out, desc.size)
    return reuse_shards(reuse, out, shards)


class VerifiedRegistry:
    """A :class:`~packager.registry.base.RegistryReader` over any :class:`BlobStore`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    @property
    def location(self) -> str:
        return self._store.location

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's connections and files."""
        self._store.close()

    def names(self) -> list[str]:
        """Every model name in the registry, sorted; see :class:`RegistryReader`."""
        return sorted(set(self._store.list_names()))

    def tags(self, name: str) -> list[str]:
        """Every tag of ``name``, sorted; see :class:`RegistryReader`.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: the registry lists a tag more than once.
            RegistryError: the registry cannot be read.
        """
        self._store.check_name(name)
        listed = self._store.list_tags(name)
        if len(set(listed)) != len(listed):
            twice = sorted({tag for tag in listed if listed.count(tag) > 1})
            raise TamperedError(
                f"{self.location} lists tag {printable(twice[0])} of {name} more than once; "
                "readers could disagree on what it names"
            )
        return sorted(listed)

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, lowest first; tags that are not versions are left out."""
        tag_version = self._store.tag_version
        return sort_versions(v for tag in self.tags(name) if (v := tag_version(tag)))

    def resolve(self, name: str, version: str) -> Artifact:
        """What ``name``@``version`` contains; see :class:`RegistryReader`.

        A store that knows stored sizes has every blob of the version checked against its
        descriptor here, before the caller fetches anything.
        """
        self._store.check_name(name)
        check_version(version)
        found = self._manifest(name, self._store.version_tag(version), MAX_OCI_MANIFEST_BYTES)
        if found is None:
            raise NotFoundError(
                f"model {name!r} version {version} not found in {self.location}; "
                f"run `packager search {name} --registry {self.location}` to list its versions"
            )
        data, digest = found
        artifact = parse_oci_manifest(data, name=name, version=version, digest=digest)
        if isinstance(self._store, SizedStore):
            for blob in (artifact.config, *artifact.files.values()):
                self._check_stored(name, blob)
        return artifact

    def read_blob(self, name: str, desc: Descriptor, *, max_size: int) -> bytes:
        """Read a small blob into memory; see :class:`RegistryReader`."""
        self._store.check_name(name)
        check_cap(name, desc, max_size)
        self._check_stored(name, desc)
        sink = io.BytesIO()
        self._store.read_blob_into(name, desc, sink)
        data = sink.getvalue()
        check_blob(f"read blob {desc.digest} of {name}", desc, len(data), Digest.of(data))
        return data

    def fetch_blob(
        self,
        name: str,
        desc: Descriptor,
        dest: Path,
        shards: Sequence[Shard] = (),
        reuse: Path | None = None,
    ) -> None:
        """Stream a blob into the new file ``dest``; see :class:`RegistryReader`.

        Read by ``shards`` where the store reads ranges (:class:`ShardFetcher`,
        :class:`ShardCopier`), once they are found to end at exactly ``desc.size``; what
        ``reuse`` holds: :func:`~packager.registry.shard_reuse.reuse_shards`.
        """
        self._store.check_name(name)
        self._check_stored(name, desc)
        what = f"fetch blob {desc.digest} of {name} into {dest}"
        with new_file(dest, what) as out:
            sharded = ShardedBlob(name, desc, shards)
            if len(shards) > 1 and self._by_shards(sharded, out, reuse, what):
                return
            if isinstance(self._store, FileCopier):
                digest, size = self._store.copy_blob_into(name, desc, out)
            else:
                digest, size = self._stream_into(name, desc, out)
            check_blob(what, desc, size, digest)

    def _by_shards(self, blob: ShardedBlob, out: int, reuse: Path | None, what: str) -> bool:
        """Read the blob into ``out`` shard by shard, each checked against its signed
        digest; False when the store cannot (or its server will not) read by shards."""
        store = self._store
        if not isinstance(store, ShardFetcher | ShardCopier):
            return False
        _check_shards(what, blob.desc, blob.shards)
        if isinstance(store, ShardFetcher):
            have = _reused(reuse, out, blob.desc, blob.shards)
            return store.fetch_shards_into(blob, out, have)
        bad = store.copy_shards_into(blob, out)
        if bad is not None:
            raise TamperedError(
                f"cannot {what}: bytes {bad.start}-{bad.end} do not match their signed "
                "digest; do not use it"
            )
        return True

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        """The document tagged ``tag``; see :class:`RegistryReader`."""
        self._store.check_name(name)
        check_document_tag(tag)
        found = self._manifest(name, tag, MAX_DOCUMENT_MANIFEST_BYTES)
        if found is None:
            raise NotFoundError(f"no {tag} for {name} in {self.location}")
        data, digest = found
        layer = parse_document_manifest(
            data,
            digest=digest,
            artifact_type=artifact_type,
            where=f"{name}:{tag} in {self.location}",
        )
        return self.read_blob(name, layer, max_size=max_size)

    def _manifest(self, name: str, tag: str, limit: int) -> tuple[bytes, Digest] | None:
        """The bytes of the OCI manifest ``tag`` names (at most ``limit`` + 1) and the
        digest they must have; None when there is no such tag."""
        found = self._store.find_tag(name, tag, limit=limit)
        if found is None:
            return None
        desc = found.descriptor
        if desc is not None:
            if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
                raise TamperedError(
                    f"{name}:{tag} in {self.location} is a {printable(desc.media_type)}, "
                    "not an OCI manifest"
                )
            return self.read_blob(name, desc, max_size=limit), desc.digest
        if len(found.data) > limit:
            raise TamperedError(f"OCI manifest of {name}:{tag} is larger than {limit} bytes")
        digest = Digest.of(found.data)
        if found.claimed is not None and found.claimed != digest:
            raise TamperedError(
                f"{self.location} says the manifest of {name}:{tag} is {found.claimed}, "
                f"but its bytes are {digest}; do not use it"
            )
        return found.data, digest

    def _check_stored(self, name: str, desc: Descriptor) -> None:
        if not isinstance(self._store, SizedStore):
            return
        stored = self._store.stored_size(name, desc)
        if stored is not None and stored != desc.size:
            raise TamperedError(
                f"blob {desc.digest} of {name} in {self.location} is {stored} bytes, "
                f"not the {desc.size} its descriptor declares; do not use it"
            )

    def _stream_into(self, name: str, desc: Descriptor, out: int) -> tuple[Digest, int]:
        """The plain path into a new file: the store's bytes, then a hash of the file."""
        with os.fdopen(os.dup(out), "r+b") as sink:
            self._store.read_blob_into(name, desc, sink)
            sink.flush()
            size = sink.tell()
        h = hashlib.sha256()
        hash_range(out, 0, size, h)
        return Digest(h.hexdigest()), size
