"""Archives: an OCI image layout in a tar file, for carrying models across an air gap.

```
models.tar
  blobs/sha256/<hex>   every layer, config and OCI manifest, each once
  index.json           one manifest descriptor per version, annotated with
                       org.opencontainers.image.ref.name = "<name>:<version>"
                       and org.opencontainers.image.version = "<version>"
  oci-layout           {"imageLayoutVersion": "1.0.0"}
```
Documents (signed channels) are tagged ``<name>:<tag>`` with a tag that is never a
version (``iris:channel.stable``); see :mod:`packager.registry.document`.

Several models share one archive, so a reference must name the model as well as the
version. ``<name>:<version>`` is how an image is named together with its tag, a model name
never contains ``:``, and skopeo addresses it as ``oci-archive:models.tar:<name>:<version>``
(skopeo splits the archive path from the reference at the first colon).

:class:`ArchiveRegistry` reads an archive in place. It scans the tar headers once and
refuses the whole archive if any member could trick a reader that extracts it (links,
devices, FIFOs, absolute paths or ``..``, duplicate names); then it reads each blob from
its offset in the file, refusing a member whose size is not its descriptor's and checking
the digest while streaming. Nothing is ever extracted.

:class:`ArchiveWriter` collects blobs (staged files, or members of an existing archive)
and index entries, then writes the archive through a temporary file and a rename, checking
every blob against its digest as it goes into the tar. The bytes are deterministic:
members sorted by name, regular files only, fixed mtime, owner and mode.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Protocol

from packager._io.hashing import CHUNK
from packager.core.digests import Digest
from packager.core.manifest import NAME_RE, Manifest, check_name, check_version, dump_json
from packager.core.semver import is_semver, semver_key, sort_versions
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry.artifact import (
    ARTIFACT_TYPE,
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    VERSION_ANNOTATION,
    parse_descriptor,
    parse_oci_manifest,
)
from packager.registry.base import Artifact, Descriptor, Registry
from packager.registry.document import (
    EMPTY_CONFIG,
    EMPTY_DESCRIPTOR,
    MAX_DOCUMENT_MANIFEST_BYTES,
    check_document_tag,
    document_manifest,
    parse_document_manifest,
)
from packager.registry.layout import (
    FILE_MODE,
    INDEX,
    INDEX_MEDIA_TYPE,
    LAYOUT_VERSION,
    MAX_INDEX_BYTES,
    OCI_LAYOUT,
    REF_NAME_ANNOTATION,
)

ARCHIVE_SUFFIX = ".tar"
BLOB_DIR = "blobs/sha256/"
# Each version holds a handful of blobs; a header count far beyond any real archive is an
# attempt to exhaust memory while scanning.
MAX_MEMBERS = 100_000
# oci-layout is one short JSON object.
MAX_LAYOUT_BYTES = 4096
# A ModelPack config lists one digest per bundle file: a few KiB at most.
MAX_CONFIG_BYTES = 1 << 20


def archive_ref(name: str, version: str) -> str:
    """The ``org.opencontainers.image.ref.name`` of ``name``@``version`` in an archive."""
    return f"{name}:{version}"


def split_archive_ref(ref: str) -> tuple[str, str] | None:
    """``<name>:<version>`` -> (name, version); None for references other tools wrote."""
    name, sep, version = ref.partition(":")
    if sep and NAME_RE.fullmatch(name) and is_semver(version):
        return name, version
    return None


def is_archive_ref(ref: str) -> bool:
    """True when a registry reference names an archive file rather than a directory."""
    return ref.endswith(ARCHIVE_SUFFIX)


# st_dev, st_ino, st_size, st_mtime_ns of the archive file: another value means the file
# was replaced or changed since it was scanned, so the offsets no longer describe it.
_Identity = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Member:
    """Where a regular member's bytes are in the archive file."""

    offset: int
    size: int


@dataclass(frozen=True)
class _Contents:
    """What one scan of an archive found."""

    identity: _Identity
    blobs: Mapping[str, _Member]  # by sha256 hex
    entries: tuple[Mapping[str, Any], ...]  # index.json manifests, verbatim
    versions: Mapping[tuple[str, str], Mapping[str, Any]]  # (name, version) -> entry


@dataclass(frozen=True)
class ArchiveRegistry:
    """A read-only registry in an archive file (a path ending in ``.tar``)."""

    path: Path
    # The last scan, by file identity: an archive rewritten since (by export or mirror) is
    # scanned again rather than read at stale offsets.
    _scans: dict[_Identity, _Contents] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def _contents(self) -> _Contents:
        try:
            identity = _identity(os.stat(self.path))
        except FileNotFoundError as e:
            raise RegistryError(f"no archive at {self.path}; check the path") from e
        except OSError as e:
            raise RegistryError(f"cannot open archive {self.path}: {e.strerror}") from e
        contents = self._scans.get(identity)
        if contents is None:
            contents = _scan(self.path)
            self._scans.clear()
            self._scans[contents.identity] = contents
        return contents

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Archives are not published to one bundle at a time.

        Raises:
            UsageError: always; the message says how to add to an archive.
        """
        raise UsageError(
            f"{self.location} is an archive: add {manifest.ref} to it with "
            f"`packager mirror SRC {self.location} {manifest.ref}`, or publish to a directory"
        )

    def names(self) -> list[str]:
        """Every model name in the archive, sorted.

        Raises:
            TamperedError: the archive holds a dangerous member or a contradictory index.
            RegistryError: the archive is missing, unreadable or not an OCI image layout.
        """
        return sorted({name for name, _ in self._contents.versions})

    def versions(self, name: str) -> list[str]:
        """Every version of ``name`` in the archive, lowest first.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError, RegistryError: as :meth:`names`.
        """
        check_name(name)
        return sort_versions(v for n, v in self._contents.versions if n == name)

    def resolve(self, name: str, version: str) -> Artifact:
        """What ``name``@``version`` contains; every blob it names must be in the archive
        with its declared size.

        Raises:
            UsageError: ``name`` or ``version`` is malformed.
            NotFoundError: the version is not in the archive.
            TamperedError: a dangerous member, or a manifest or blob that differs from its
                descriptor.
            RegistryError: the archive is missing, unreadable, not an OCI image layout, or
                lacks a blob.
        """
        check_name(name)
        check_version(version)
        entry = self._contents.versions.get((name, version))
        if entry is None:
            raise NotFoundError(
                f"{name}@{version} is not in archive {self.location}; "
                f"run `packager search --registry {self.location}` to list what it holds"
            )
        where = f"index.json of {self.location}"
        desc = parse_descriptor(dict(entry), where=where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(f"{where}: {name}@{version} is a {desc.media_type}, not a manifest")
        data = self.read_blob(name, desc, max_size=MAX_OCI_MANIFEST_BYTES)
        artifact = parse_oci_manifest(data, name=name, version=version, digest=desc.digest)
        # Refuse a short or padded blob before the caller fetches anything.
        for blob in (artifact.config, *artifact.files.values()):
            self._locate(name, blob)
        return artifact

    def read_blob(self, name: str, desc: Descriptor, *, max_size: int) -> bytes:
        """Read a small blob into memory; see :class:`Registry`.

        Raises:
            TamperedError: ``desc.size`` is over ``max_size``, the member's size is not
                ``desc.size``, or the bytes do not match the digest.
            RegistryError: the blob is missing, or the archive cannot be read or changed.
        """
        if desc.size > max_size:
            raise TamperedError(
                f"blob {desc.digest} of {name} declares {desc.size} bytes, "
                f"more than the {max_size} allowed"
            )
        data = b"".join(self._chunks(*self._locate(name, desc)))
        self._check_digest(name, desc, hashlib.sha256(data).hexdigest())
        return data

    def fetch_blob(self, name: str, desc: Descriptor, dest: Path) -> None:
        """Stream a blob into the new file ``dest``; see :class:`Registry`.

        Raises:
            TamperedError: the member's size is not ``desc.size``, or the bytes do not
                match the digest (``dest`` is removed).
            RegistryError: the blob is missing, the archive cannot be read or changed, or
                ``dest`` cannot be created (it must not exist) or written.
        """
        member, identity = self._locate(name, desc)
        try:
            # Exclusive creation never follows a link planted at dest.
            with open(dest, "xb") as out:
                try:
                    digest = hashlib.sha256()
                    for chunk in self._chunks(member, identity):
                        digest.update(chunk)
                        out.write(chunk)
                    self._check_digest(name, desc, digest.hexdigest())
                    out.flush()
                    os.fsync(out.fileno())
                except BaseException:
                    dest.unlink(missing_ok=True)
                    raise
        except OSError as e:
            raise RegistryError(
                f"cannot fetch blob {desc.digest} of {name} into {dest}: {e}"
            ) from e

    def tags(self, name: str) -> list[str]:
        """Every tag of ``name`` in the archive (versions and documents), sorted.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError, RegistryError: as :meth:`names`.
        """
        check_name(name)
        prefix = archive_ref(name, "")
        refs = (_ref_of(entry) for entry in self._contents.entries)
        return sorted({ref[len(prefix) :] for ref in refs if ref and ref.startswith(prefix)})

    def put_document(self, name: str, tag: str, data: bytes, *, artifact_type: str) -> Digest:
        """Rebuild the archive with the document tagged ``tag`` (replacing the one there),
        keeping everything else it holds; an archive that does not exist yet is created.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed, or the archive's directory does
                not exist.
            TamperedError: the archive holds a dangerous member or a blob that no longer
                matches its digest (nothing is written).
            RegistryError: the archive cannot be read or written.
        """
        check_name(name)
        check_document_tag(tag)
        if not self.path.parent.is_dir():
            raise UsageError(f"{self.path.parent} is not a directory; create it first")
        try:
            work = tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as e:
            raise RegistryError(f"cannot write {self.path}: {e}") from e
        try:
            writer = ArchiveWriter(Path(work))
            if self.path.exists():
                writer.keep(self)
            digest = writer.add_document(name, tag, data, artifact_type=artifact_type)
            writer.write(self.path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return digest

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        """The document tagged ``<name>:<tag>``; see :class:`Registry`.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed.
            NotFoundError: the archive has no such document.
            TamperedError: a dangerous member, an index tagging it twice, a malformed
                artifact, or bytes that differ from their descriptor.
            RegistryError: the archive is missing, unreadable or lacks a blob.
        """
        check_name(name)
        check_document_tag(tag)
        ref = archive_ref(name, tag)
        where = f"{ref} in {self.location}"
        entries = [entry for entry in self._contents.entries if _ref_of(entry) == ref]
        if not entries:
            raise NotFoundError(f"no {tag} for {name} in archive {self.location}")
        if len(entries) > 1:
            raise TamperedError(f"{INDEX} of {self.location} lists {ref} twice")
        desc = parse_descriptor(dict(entries[0]), where=where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(f"{where} is a {desc.media_type}, not an OCI manifest")
        manifest = self.read_blob(name, desc, max_size=MAX_DOCUMENT_MANIFEST_BYTES)
        layer = parse_document_manifest(
            manifest, digest=desc.digest, artifact_type=artifact_type, where=where
        )
        return self.read_blob(name, layer, max_size=max_size)

    def _locate(self, name: str, desc: Descriptor) -> tuple[_Member, _Identity]:
        """The member holding ``desc`` and the identity of the file it was found in."""
        contents = self._contents
        member = contents.blobs.get(desc.digest.hex)
        if member is None:
            raise RegistryError(
                f"blob {desc.digest} of {name} is missing from {self.location}; "
                "the archive is incomplete: export it again"
            )
        if member.size != desc.size:
            raise TamperedError(
                f"blob {desc.digest} of {name} in {self.location} is {member.size} bytes, "
                f"not the {desc.size} its descriptor declares; do not use this archive"
            )
        return member, contents.identity

    def _check_digest(self, name: str, desc: Descriptor, hexdigest: str) -> None:
        if hexdigest != desc.digest.hex:
            raise TamperedError(
                f"blob {desc.digest} of {name} in {self.location} does not match its digest; "
                "do not use this archive"
            )

    def _chunks(self, member: _Member, identity: _Identity) -> Iterator[bytes]:
        """Yield exactly the member's bytes, from the file the member was found in."""
        try:
            with open(self.path, "rb") as f:
                if _identity(os.fstat(f.fileno())) != identity:
                    raise RegistryError(
                        f"{self.location} changed while it was read; run the command again"
                    )
                yield from _read_range(f, member, self.location)
        except OSError as e:
            raise RegistryError(f"cannot read {self.location}: {e}") from e


def _identity(st: os.stat_result) -> _Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_range(f: IO[bytes], member: _Member, location: str) -> Iterator[bytes]:
    f.seek(member.offset)
    remaining = member.size
    while remaining > 0:
        chunk = f.read(min(CHUNK, remaining))
        if not chunk:
            raise RegistryError(f"{location} ended early; it changed while it was read")
        remaining -= len(chunk)
        yield chunk


def _scan(path: Path) -> _Contents:
    """Read an archive's member table and index.

    Raises:
        TamperedError: a dangerous or duplicate member, a truncated or unreadable tar, or a
            contradictory index.
        RegistryError: the file is missing or unreadable, or not an OCI image layout.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - the with below closes it
    except FileNotFoundError as e:
        raise RegistryError(f"no archive at {path}; check the path") from e
    except OSError as e:
        raise RegistryError(f"cannot open archive {path}: {e.strerror}") from e
    with f:
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise RegistryError(f"{path} is not a regular file, so not an archive")
            members = _read_members(f, path, st.st_size)
            layout = _read_small(f, members, OCI_LAYOUT, MAX_LAYOUT_BYTES, path)
            index = _read_small(f, members, INDEX, MAX_INDEX_BYTES, path)
        except OSError as e:
            raise RegistryError(f"cannot read archive {path}: {e}") from e
    layout_doc = _json(layout, OCI_LAYOUT, path)
    if not isinstance(layout_doc, dict) or layout_doc.get("imageLayoutVersion") != "1.0.0":
        raise RegistryError(f"{path} is not an OCI image layout version 1.0.0")
    doc = _json(index, INDEX, path)
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise RegistryError(f"{INDEX} of {path} has no list of manifests; export it again")
    versions: dict[tuple[str, str], Mapping[str, Any]] = {}
    for entry in manifests:
        key = _version_of(entry)
        if key is None:
            continue  # not a model version (another tool's tag): kept, never resolved
        name, version = key
        if key in versions:
            raise TamperedError(f"{INDEX} of {path} lists {name}@{version} twice")
        tagged = entry["annotations"].get(VERSION_ANNOTATION, version)
        if tagged != version:
            raise TamperedError(f"{INDEX} of {path} tags version {tagged!r} as {name}@{version}")
        versions[key] = MappingProxyType(entry)
    return _Contents(
        identity=_identity(st),
        blobs=MappingProxyType(
            {
                name.removeprefix(BLOB_DIR): member
                for name, member in members.items()
                if name.startswith(BLOB_DIR) and _is_hex_digest(name.removeprefix(BLOB_DIR))
            }
        ),
        entries=tuple(MappingProxyType(entry) for entry in manifests),
        versions=MappingProxyType(versions),
    )


def _ref_of(entry: Mapping[str, Any]) -> str | None:
    """The ``org.opencontainers.image.ref.name`` of an index entry, if it has one."""
    annotations = entry.get("annotations")
    ref = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, Mapping) else None
    return ref if isinstance(ref, str) else None


def _version_of(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, version) of an index entry tagged ``<name>:<version>``, else None."""
    ref = _ref_of(entry)
    return split_archive_ref(ref) if ref is not None else None


def _read_members(f: IO[bytes], path: Path, file_size: int) -> dict[str, _Member]:
    """Every regular member by normalised name; refuses anything else but directories."""
    files: dict[str, _Member] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for count, info in enumerate(iter(tar.next, None), start=1):
                if count > MAX_MEMBERS:
                    raise TamperedError(f"{path} has more than {MAX_MEMBERS} members")
                if info.isdir() and info.name in (".", "./"):
                    continue  # the root, as `tar -C dir -cf x.tar .` writes it
                name = _member_name(info.name, path)
                if name in seen:
                    raise TamperedError(
                        f"{path} holds {name!r} twice; tools disagree on which copy counts, "
                        "so the archive is refused"
                    )
                seen.add(name)
                if info.isdir():
                    continue
                if not info.isreg() or info.issparse():
                    raise TamperedError(
                        f"{path}: member {info.name!r} is a {_kind(info)}; "
                        "archives hold regular files only"
                    )
                if info.offset_data + info.size > file_size:
                    raise TamperedError(f"{path} is truncated; copy it again")
                files[name] = _Member(info.offset_data, info.size)
            # tarfile stops quietly at a header that is cut short or garbled; only a block
            # of zeros is a real end of archive.
            f.seek(tar.offset)
            if f.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                raise TamperedError(f"{path} is truncated or has a damaged header; copy it again")
    except tarfile.TarError as e:
        raise TamperedError(
            f"{path} is damaged or not an uncompressed tar ({e}); copy it again"
        ) from e
    return files


def _member_name(name: str, path: Path) -> str:
    relative = name.removeprefix("./")
    parts = relative.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise TamperedError(
            f"{path}: member {name!r} is an absolute path or points outside the archive; "
            "do not use it"
        )
    return relative


def _kind(info: tarfile.TarInfo) -> str:
    kinds = [
        (info.issym(), "symbolic link"),
        (info.islnk(), "hard link"),
        (info.ischr(), "character device"),
        (info.isblk(), "block device"),
        (info.isfifo(), "FIFO"),
        (info.issparse(), "sparse file"),
    ]
    return next((kind for match, kind in kinds if match), f"member of type {info.type!r}")


def _is_hex_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _read_small(
    f: IO[bytes], members: Mapping[str, _Member], name: str, cap: int, path: Path
) -> bytes:
    member = members.get(name)
    if member is None:
        raise RegistryError(
            f"{path} is not an OCI image layout (it has no {name}); "
            "make archives with `packager export`"
        )
    if member.size > cap:
        raise RegistryError(f"{name} in {path} is larger than {cap} bytes")
    return b"".join(_read_range(f, member, str(path)))


def _json(data: bytes, name: str, path: Path) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{name} in {path} is corrupt ({e}); export the archive again") from e


@dataclass(frozen=True)
class _Source:
    """A blob's bytes: ``size`` bytes at ``offset`` in ``path``."""

    path: Path
    offset: int
    size: int


class ArchiveWriter:
    """Collects versions and blobs, then writes them as one archive with deterministic bytes.

    Blobs are staged under ``work`` (a directory the caller owns and removes) or read from
    an existing archive; every one is checked against its digest while it is written, so a
    blob that changed after it was staged never reaches the archive.
    """

    def __init__(self, work: Path) -> None:
        """Stage blobs in ``work/blobs``.

        Raises:
            RegistryError: the staging directory cannot be created.
        """
        self._blob_dir = work / "blobs"
        try:
            self._blob_dir.mkdir()
        except OSError as e:
            raise RegistryError(f"cannot stage blobs in {work}: {e}") from e
        self._sources: dict[str, _Source] = {}
        self._entries: dict[bytes, Mapping[str, Any]] = {}
        self._versions: dict[tuple[str, str], Digest] = {}

    def keep(self, archive: ArchiveRegistry) -> frozenset[tuple[str, str]]:
        """Carry over everything an existing archive holds, every blob and index entry;
        returns the (name, version) pairs it holds.

        Raises:
            TamperedError, RegistryError: as :meth:`ArchiveRegistry.names`.
        """
        contents = archive._contents
        for hexdigest, member in contents.blobs.items():
            self._add_source(Digest(hexdigest), _Source(archive.path, member.offset, member.size))
        for entry in contents.entries:
            self._add_entry(entry)
        for key, entry in contents.versions.items():
            self._versions[key] = Digest.parse(str(entry.get("digest")))
        return frozenset(contents.versions)

    def add_artifact(self, registry: Registry, artifact: Artifact, *, files: Path | None) -> None:
        """Add a version: its OCI manifest exactly as served, its config read from
        ``registry``, and its layers moved from ``files`` (a directory holding the bundle's
        files, already fetched and checked) or, when None, fetched from ``registry``.

        Raises:
            RegistryError: the archive already holds the version with another digest, a
                blob cannot be read or staged.
            TamperedError: a blob differs from its descriptor.
        """
        key = (artifact.name, artifact.version)
        if key in self._versions:
            if self._versions[key] == artifact.manifest_digest:
                return
            raise RegistryError(
                f"the archive already holds {artifact.ref} with other content "
                f"({self._versions[key]})"
            )
        self._stage(artifact.manifest_digest, artifact.oci_manifest)
        if artifact.config.digest.hex not in self._sources:
            config = registry.read_blob(artifact.name, artifact.config, max_size=MAX_CONFIG_BYTES)
            self._stage(artifact.config.digest, config)
        for title, desc in artifact.files.items():
            if desc.digest.hex in self._sources:
                continue
            dest = self._blob_dir / desc.digest.hex
            if files is None:
                registry.fetch_blob(artifact.name, desc, dest)
            else:
                try:
                    os.replace(files / title, dest)
                except OSError as e:
                    raise RegistryError(f"cannot stage {title} of {artifact.ref}: {e}") from e
            self._add_source(desc.digest, _Source(dest, 0, desc.size))
        self._add_entry(
            {
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "digest": str(artifact.manifest_digest),
                "size": len(artifact.oci_manifest),
                "artifactType": ARTIFACT_TYPE,
                "annotations": {
                    REF_NAME_ANNOTATION: archive_ref(artifact.name, artifact.version),
                    VERSION_ANNOTATION: artifact.version,
                },
            }
        )
        self._versions[key] = artifact.manifest_digest

    def add_document(self, name: str, tag: str, data: bytes, *, artifact_type: str) -> Digest:
        """Tag the document ``data`` as ``<name>:<tag>``, replacing whatever that reference
        named; returns its OCI manifest digest.

        Raises:
            RegistryError: a blob cannot be staged.
        """
        manifest, layer = document_manifest(data, artifact_type=artifact_type)
        digest = Digest.of(manifest)
        for blob, content in ((EMPTY_DESCRIPTOR, EMPTY_CONFIG), (layer, data)):
            self._stage(blob.digest, content)
        self._stage(digest, manifest)
        ref = archive_ref(name, tag)
        self._entries = {k: e for k, e in self._entries.items() if _ref_of(e) != ref}
        self._add_entry(
            {
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "digest": str(digest),
                "size": len(manifest),
                "artifactType": artifact_type,
                "annotations": {REF_NAME_ANNOTATION: ref},
            }
        )
        return digest

    def write(self, out: Path) -> None:
        """Write the archive to ``out`` through a temporary file beside it and a rename.

        Raises:
            TamperedError: a blob no longer matches its digest (nothing is written).
            RegistryError: the archive cannot be written.
        """
        try:
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        except OSError as e:
            raise RegistryError(f"cannot write {out}: {e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for hexdigest in sorted(self._sources):
                        self._write_blob(tar, hexdigest, self._sources[hexdigest])
                    for name, data in ((INDEX, self._index()), (OCI_LAYOUT, LAYOUT_VERSION)):
                        _add_member(tar, name, len(data), io.BytesIO(data))
                f.flush()
                os.fchmod(f.fileno(), FILE_MODE)
                os.fsync(f.fileno())
            os.replace(tmp, out)
            _fsync_dir(out.parent)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise RegistryError(f"cannot write {out}: {e}") from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _stage(self, digest: Digest, data: bytes) -> None:
        if digest.hex in self._sources:
            return
        dest = self._blob_dir / digest.hex
        try:
            dest.write_bytes(data)
        except OSError as e:
            raise RegistryError(f"cannot stage blob {digest}: {e}") from e
        self._add_source(digest, _Source(dest, 0, len(data)))

    def _add_source(self, digest: Digest, source: _Source) -> None:
        self._sources.setdefault(digest.hex, source)

    def _add_entry(self, entry: Mapping[str, Any]) -> None:
        self._entries.setdefault(dump_json(dict(entry)), entry)

    def _index(self) -> bytes:
        return dump_json(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [
                    dict(entry) for _, entry in sorted(self._entries.items(), key=_entry_order)
                ],
            }
        )

    def _write_blob(self, tar: tarfile.TarFile, hexdigest: str, source: _Source) -> None:
        with open(source.path, "rb") as f:
            f.seek(source.offset)
            reader = _HashingReader(f, source.size)
            _add_member(tar, BLOB_DIR + hexdigest, source.size, reader)
            if reader.hexdigest() != hexdigest:
                raise TamperedError(
                    f"blob sha256:{hexdigest} read from {source.path} does not match its "
                    "digest; nothing was written"
                )


def _entry_order(item: tuple[bytes, Mapping[str, Any]]) -> tuple[Any, ...]:
    # Model versions by name and SemVer precedence, then anything other tools wrote; the
    # canonical JSON breaks every remaining tie, so the order (and the bytes) are fixed.
    canonical, entry = item
    key = _version_of(entry)
    if key is None:
        return (1, "", (), canonical)
    return (0, key[0], semver_key(key[1]), canonical)


class _HashingReader:
    """A file-like view of ``size`` bytes of ``f`` that hashes what is read.

    A file that ends early raises TamperedError rather than leaving a short member.
    """

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._remaining = size
        self._digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = self._remaining if n < 0 else min(n, self._remaining)
        data = self._f.read(want)
        if len(data) < want:
            raise TamperedError(f"{self._f.name} is shorter than its descriptor declares")
        self._digest.update(data)
        self._remaining -= len(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _add_member(tar: tarfile.TarFile, name: str, size: int, reader: _Readable) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    # Fixed metadata: the same blobs always give the same archive bytes.
    info.mtime = 0
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, reader)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
