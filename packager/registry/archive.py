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

:class:`ArchiveRegistry` reads an archive in place. It scans the tar headers once, with
its own reader (:mod:`packager.registry.tarscan`, never :mod:`tarfile`), and refuses the
whole archive if any member could trick a reader that extracts it or a reader of the
headers (links, devices, FIFOs, sparse files, global or chained extension headers,
control characters in names, absolute paths or ``..``, duplicate names); then it reads
each blob from its offset in the file, refusing a member whose size is not its
descriptor's and checking the digest while streaming. Nothing is ever extracted.

:class:`ArchiveWriter` collects blobs (staged files, or members of an existing archive)
and index entries, then writes the archive through a temporary file and a rename, checking
every blob against its digest as it goes into the tar. The bytes are deterministic:
members sorted by name, regular files only, fixed mtime, owner and mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Protocol

from packager._io.fs import fsync_dir
from packager._io.hashing import CHUNK
from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads_object
from packager.core.manifest import NAME_RE, Manifest, check_name, check_version, dump_json
from packager.core.semver import is_semver, semver_key
from packager.core.text import printable
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError, disk_or
from packager.registry._verified_read import Tagged, VerifiedRegistry
from packager.registry.artifact import (
    ARTIFACT_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    VERSION_ANNOTATION,
    plan_artifact,
)
from packager.registry.base import Artifact, Descriptor, RegistryReader
from packager.registry.document import Document, DocumentWriter
from packager.registry.files import copy_into
from packager.registry.index import (
    INDEX,
    LAYOUT_VERSION,
    MAX_INDEX_BYTES,
    OCI_LAYOUT,
    REF_NAME_ANNOTATION,
    Entry,
    OciIndex,
    manifest_entry,
    parse_index,
    ref_name,
    render_index,
)
from packager.registry.layout import FILE_MODE, semver_tag
from packager.registry.tarscan import scan_tar

if TYPE_CHECKING:
    import tarfile

ARCHIVE_SUFFIX = ".tar"
BLOB_DIR = "blobs/sha256/"
# Each version holds a handful of blobs; a header count far beyond any real archive is an
# attempt to exhaust memory or time while scanning.
MAX_MEMBERS = 100_000
# oci-layout is one short JSON object.
MAX_LAYOUT_BYTES = 4096
# A ModelPack config lists one digest per bundle file: a few KiB at most.
MAX_CONFIG_BYTES = 1 << 20


# On a version's index entry: the version of the same model whose files the archive left
# out (`packager export NAME@NEW --base NAME@OLD`).
DELTA_BASE_ANNOTATION = "dev.packager.delta.base"


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


# How much of a delta's base version, as the archive names it, an error repeats.
ECHOED = 100


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
    index: OciIndex
    versions: Mapping[tuple[str, str], Entry]  # (name, version) -> entry


class ArchiveStore:
    """The blobs and tags of an archive file, read in place, unchecked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The last scan, by file identity: an archive rewritten since (by export or
        # mirror) is scanned again rather than read at stale offsets.
        self._scans: dict[_Identity, _Contents] = {}

    @property
    def location(self) -> str:
        return str(self.path)

    check_name = staticmethod(check_name)
    version_tag = staticmethod(check_version)
    tag_version = staticmethod(semver_tag)

    def close(self) -> None:
        """Nothing is held open between calls; the scan is forgotten."""
        self._scans.clear()

    def exists(self) -> bool:
        return self.path.exists()

    @property
    def contents(self) -> _Contents:
        """The archive's scan, made again when the file changed.

        Raises:
            NotFoundError: there is no archive at the path.
            TamperedError: the archive holds a dangerous member or a contradictory index.
            RegistryError: the archive is unreadable or not an OCI image layout.
        """
        try:
            identity = _identity(os.stat(self.path))
        except FileNotFoundError as e:
            raise NotFoundError(f"no archive at {self.path}; check the path") from e
        except OSError as e:
            raise RegistryError(f"cannot open archive {self.path}: {e.strerror}") from e
        contents = self._scans.get(identity)
        if contents is None:
            contents = _scan(self.path)
            self._scans.clear()
            self._scans[contents.identity] = contents
        return contents

    def list_names(self) -> list[str]:
        return [name for name, _ in self.contents.versions]

    def list_tags(self, name: str) -> list[str]:
        prefix = archive_ref(name, "")
        return [ref[len(prefix) :] for ref in self.contents.index.refs if ref.startswith(prefix)]

    def find_tag(self, name: str, tag: str, *, limit: int) -> Tagged | None:
        desc = self.contents.index.descriptor(archive_ref(name, tag))
        return None if desc is None else Tagged(descriptor=desc)

    def stored_size(self, name: str, desc: Descriptor) -> int | None:
        if desc.digest.hex not in self.contents.blobs and self._delta_bases(name):
            return None
        return self._locate(name, desc)[0].size

    def read_blob_into(self, name: str, desc: Descriptor, sink: IO[bytes]) -> None:
        with self._open(*self._locate(name, desc)) as (f, member):
            for chunk in _read_range(f, member, self.location):
                sink.write(chunk)

    def copy_blob_into(self, name: str, desc: Descriptor, out: int) -> tuple[Digest, int]:
        """In the kernel from the member's offset, hashed behind the copy."""
        with self._open(*self._locate(name, desc)) as (f, member):
            return copy_into(f.fileno(), out, offset=member.offset, limit=member.size)

    def _locate(self, name: str, desc: Descriptor) -> tuple[_Member, _Identity]:
        """The member holding ``desc`` and the identity of the file it was found in."""
        contents = self.contents
        member = contents.blobs.get(desc.digest.hex)
        bases = [] if member is not None else self._delta_bases(name)
        if member is None and bases:
            raise RegistryError(
                f"{self.location} is a delta against {' or '.join(bases)} and lacks blob "
                f"{desc.digest}, which this instance does not hold either: install "
                f"{bases[0]} first, or carry a full export (without --base)"
            )
        if member is None:
            raise RegistryError(
                f"blob {desc.digest} of {name} is missing from {self.location}; "
                "the archive is incomplete: export it again"
            )
        return member, contents.identity

    def _delta_bases(self, name: str) -> list[str]:
        """``name@version`` of each base the archive's versions of ``name`` are deltas of
        (as the archive says: repeated only so far, and printable)."""
        return sorted(
            {
                f"{key[0]}@{printable(entry['annotations'][DELTA_BASE_ANNOTATION], ECHOED)}"
                for key, entry in self.contents.versions.items()
                if key[0] == name and DELTA_BASE_ANNOTATION in entry["annotations"]
            }
        )

    @contextlib.contextmanager
    def _open(self, member: _Member, identity: _Identity) -> Iterator[tuple[IO[bytes], _Member]]:
        """The archive file, if it is still the one the member was found in."""
        try:
            with open(self.path, "rb") as f:
                if _identity(os.fstat(f.fileno())) != identity:
                    raise RegistryError(
                        f"{self.location} changed while it was read; run the command again"
                    )
                yield f, member
        except OSError as e:
            raise RegistryError(f"cannot read {self.location}: {e}") from e


class ArchiveRegistry(DocumentWriter, VerifiedRegistry):
    """A registry in an archive file (a path ending in ``.tar``).

    Read in place. Written by rebuilding the whole file: each :meth:`publish` or
    :meth:`put_document` rewrites it, and writes inside :meth:`batch` are rewritten once
    at the end of the block (nothing is written when the block fails). Reads always see
    the archive as it is on disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._archive = ArchiveStore(path)
        self._pending: ArchiveWriter | None = None
        super().__init__(self._archive)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one rebuild of the archive, keeping everything it held.

        Raises:
            UsageError: the archive's directory does not exist.
            TamperedError: the archive holds a dangerous member or a blob that no longer
                matches its digest (nothing is written).
            RegistryError: the archive cannot be read or written.
        """
        if self._pending is not None:
            yield
            return
        if not self.path.parent.is_dir():
            raise UsageError(f"{self.path.parent} is not a directory; create it first")
        try:
            work = tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as e:
            raise disk_or(RegistryError, f"cannot write {self.path}: {e}", e) from e
        try:
            writer = ArchiveWriter(Path(work), location=self.location)
            if self._archive.exists():
                writer.keep(self._archive)
            self._pending = writer
            yield
            if writer.changed:
                writer.write(self.path)
        finally:
            self._pending = None
            shutil.rmtree(work, ignore_errors=True)

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Add the bundle as ``manifest.name``@``manifest.version``; see
        :class:`~packager.registry.base.RegistryWriter`.

        Raises:
            UsageError: the bundle does not match its manifest or cannot be read, or the
                archive's directory does not exist.
            TamperedError: a bundle file differs from the manifest.
            RegistryError: the version exists with different content, or writing failed.
        """
        with self.batch():
            assert self._pending is not None
            return self._pending.add_bundle(bundle, manifest)

    def store_document(self, document: Document) -> None:
        """Tag a checked document as ``<name>:<tag>`` (replacing the one there), keeping
        everything else the archive holds; an archive that does not exist yet is created.

        Raises:
            UsageError: the archive's directory does not exist.
            TamperedError: the archive holds a dangerous member or a blob that no longer
                matches its digest (nothing is written).
            RegistryError: the archive cannot be read or written.
        """
        with self.batch():
            assert self._pending is not None
            self._pending.store_document(document)


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
        raise NotFoundError(f"no archive at {path}; check the path") from e
    except OSError as e:
        raise RegistryError(f"cannot open archive {path}: {e.strerror}") from e
    with f:
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise RegistryError(f"{path} is not a regular file, so not an archive")
            members = _read_members(f, path, st.st_size)
            layout = _read_small(f, members, OCI_LAYOUT, MAX_LAYOUT_BYTES, path)
            index_bytes = _read_small(f, members, INDEX, MAX_INDEX_BYTES, path)
        except OSError as e:
            raise RegistryError(f"cannot read archive {path}: {e}") from e
    layout_doc = loads_object(
        layout,
        what=f"{OCI_LAYOUT} in {path}",
        error=RegistryError,
        limits=Limits(max_bytes=MAX_LAYOUT_BYTES),
    )
    if layout_doc.get("imageLayoutVersion") != "1.0.0":
        raise RegistryError(f"{path} is not an OCI image layout version 1.0.0")
    index = parse_index(index_bytes, where=f"{INDEX} of {path}", hint="export it again")
    versions: dict[tuple[str, str], Entry] = {}
    for ref, entry in index.refs.items():
        key = split_archive_ref(ref)
        if key is None:
            continue  # not a model version (another tool's tag): kept, never resolved
        tagged = entry["annotations"].get(VERSION_ANNOTATION, key[1])
        if tagged != key[1]:
            raise TamperedError(f"{INDEX} of {path} tags version {tagged!r} as {key[0]}@{key[1]}")
        versions[key] = entry
    return _Contents(
        identity=_identity(st),
        blobs=MappingProxyType(
            {
                name.removeprefix(BLOB_DIR): member
                for name, member in members.items()
                if name.startswith(BLOB_DIR) and _is_hex_digest(name.removeprefix(BLOB_DIR))
            }
        ),
        index=index,
        versions=MappingProxyType(versions),
    )


def _version_of(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, version) of an index entry tagged ``<name>:<version>``, else None."""
    ref = ref_name(entry)
    return split_archive_ref(ref) if ref is not None else None


def _read_members(f: IO[bytes], path: Path, file_size: int) -> dict[str, _Member]:
    """Every regular member by normalised name; refuses anything else but directories."""
    files: dict[str, _Member] = {}
    seen: set[str] = set()
    for member in scan_tar(f, file_size=file_size, where=str(path), max_headers=MAX_MEMBERS):
        if member.is_dir and member.name in (".", "./"):
            continue  # the root, as `tar -C dir -cf x.tar .` writes it
        name = _member_name(member.name, path)
        if name in seen:
            raise TamperedError(
                f"{path} holds {name!r} twice; tools disagree on which copy counts, "
                "so the archive is refused"
            )
        seen.add(name)
        if not member.is_dir:
            files[name] = _Member(member.offset, member.size)
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


@dataclass(frozen=True)
class _Source:
    """A blob's bytes: ``size`` bytes at ``offset`` in ``path``."""

    path: Path
    offset: int
    size: int


class ArchiveWriter(DocumentWriter):
    """Collects versions and blobs, then writes them as one archive with deterministic bytes.

    Blobs are staged under ``work`` (a directory the caller owns and removes) or read from
    an existing archive; every one is checked against its digest while it is written, so a
    blob that changed after it was staged never reaches the archive. ``changed`` says
    whether anything was added since the archive kept.
    """

    def __init__(self, work: Path, *, location: str = "the archive") -> None:
        """Stage blobs in ``work/blobs``; ``location`` names the archive in messages.

        Raises:
            RegistryError: the staging directory cannot be created.
        """
        self._blob_dir = work / "blobs"
        try:
            self._blob_dir.mkdir()
        except OSError as e:
            raise disk_or(RegistryError, f"cannot stage blobs in {work}: {e}", e) from e
        self._location = location
        self._sources: dict[str, _Source] = {}
        self._entries: dict[bytes, Entry] = {}
        self._versions: dict[tuple[str, str], Digest] = {}
        self.changed = False

    def keep(self, archive: ArchiveStore) -> None:
        """Carry over everything an existing archive holds, every blob and index entry.

        Raises:
            TamperedError, RegistryError: as :attr:`ArchiveStore.contents`.
        """
        contents = archive.contents
        for hexdigest, member in contents.blobs.items():
            self._add_source(Digest(hexdigest), _Source(archive.path, member.offset, member.size))
        for entry in contents.index.entries:
            self._add_entry(entry)
        for key, entry in contents.versions.items():
            self._versions[key] = Digest.parse(str(entry.get("digest")))

    def add_artifact(
        self,
        registry: RegistryReader,
        artifact: Artifact,
        *,
        files: Path | None,
        base: Artifact | None = None,
    ) -> None:
        """Add a version: its OCI manifest exactly as served, its config read from
        ``registry``, and its layers moved from ``files`` (a directory holding the bundle's
        files, already fetched and checked) or, when None, fetched from ``registry``.

        With a ``base`` (another version of the model), the layers the base has too are
        left out and the version is annotated as a delta against it: only an instance
        holding those files can install it.

        Raises:
            RegistryError: the archive already holds the version with another digest, a
                blob cannot be read or staged.
            TamperedError: a blob differs from its descriptor.
        """
        if self._holds(artifact):
            return
        self._stage(artifact.manifest_digest, artifact.oci_manifest)
        if artifact.config.digest.hex not in self._sources:
            config = registry.read_blob(artifact.name, artifact.config, max_size=MAX_CONFIG_BYTES)
            self._stage(artifact.config.digest, config)
        omit = set() if base is None else {d.digest for d in base.files.values()}
        for title, desc in artifact.files.items():
            if desc.digest.hex in self._sources or desc.digest in omit:
                continue
            dest = self._blob_dir / desc.digest.hex
            if files is None:
                registry.fetch_blob(artifact.name, desc, dest)
            else:
                try:
                    os.replace(files / title, dest)
                except OSError as e:
                    message = f"cannot stage {title} of {artifact.ref}: {e}"
                    raise disk_or(RegistryError, message, e) from e
            self._add_source(desc.digest, _Source(dest, 0, desc.size))
        self._add_version(artifact, base=None if base is None else base.version)

    def add_bundle(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Add the bundle directory ``bundle`` as ``manifest.name``@``manifest.version``;
        its files are linked (or copied) into the staging directory.

        Raises:
            UsageError, TamperedError: as :func:`~packager.registry.artifact.plan_artifact`.
            RegistryError: the archive already holds the version with another digest, or
                a file cannot be staged.
        """
        plan = plan_artifact(bundle, manifest)
        artifact = plan.artifact()
        if self._holds(artifact):
            return artifact
        self._stage(plan.manifest_digest, plan.manifest_bytes)
        self._stage(plan.config.digest, plan.config_bytes)
        for desc, source in plan.layers:
            if desc.digest.hex not in self._sources:
                self._stage_file(desc, source)
        self._add_version(artifact)
        return artifact

    def store_document(self, document: Document) -> None:
        """Stage a checked document and tag it as ``<name>:<tag>``, replacing whatever that
        reference named.

        Raises:
            RegistryError: a blob cannot be staged.
        """
        manifest_desc = document.manifest_descriptor
        for desc, content in (*document.blobs, (manifest_desc, document.manifest)):
            self._stage(desc.digest, content)
        ref = archive_ref(document.name, document.tag)
        self._entries = {k: e for k, e in self._entries.items() if ref_name(e) != ref}
        self.changed = True
        self._add_entry(
            {
                **manifest_desc.to_json(),
                "artifactType": document.artifact_type,
                "annotations": {REF_NAME_ANNOTATION: ref},
            }
        )

    # Named like add_artifact and add_bundle for the exporter, which fills an archive.
    add_document = DocumentWriter.put_document

    def write(self, out: Path) -> None:
        """Write the archive to ``out`` through a temporary file beside it and a rename.

        Raises:
            TamperedError: a blob no longer matches its digest (nothing is written).
            RegistryError: the archive cannot be written.
        """
        try:
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        except OSError as e:
            raise disk_or(RegistryError, f"cannot write {out}: {e}", e) from e
        import tarfile  # here: reading archives and every other command never need it

        try:
            with os.fdopen(fd, "wb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for hexdigest in sorted(self._sources):
                        self._write_blob(tar, hexdigest, self._sources[hexdigest])
                    index = render_index(self._entries.values(), order=_entry_order)
                    for name, data in ((INDEX, index), (OCI_LAYOUT, LAYOUT_VERSION)):
                        _add_member(tar, name, len(data), io.BytesIO(data))
                f.flush()
                os.fchmod(f.fileno(), FILE_MODE)
                os.fsync(f.fileno())
            os.replace(tmp, out)
            fsync_dir(out.parent)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise disk_or(RegistryError, f"cannot write {out}: {e}", e) from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _holds(self, artifact: Artifact) -> bool:
        """True when the archive already holds ``artifact``; raises if with other content."""
        held = self._versions.get((artifact.name, artifact.version))
        if held is None:
            return False
        if held != artifact.manifest_digest:
            raise RegistryError(
                f"{artifact.ref} already exists with different content in {self._location} "
                f"({held}); publish a new version"
            )
        return True

    def _add_version(self, artifact: Artifact, *, base: str | None = None) -> None:
        desc = Descriptor(
            OCI_MANIFEST_MEDIA_TYPE, artifact.manifest_digest, len(artifact.oci_manifest)
        )
        annotations = {
            REF_NAME_ANNOTATION: archive_ref(artifact.name, artifact.version),
            VERSION_ANNOTATION: artifact.version,
        }
        if base is not None:
            annotations[DELTA_BASE_ANNOTATION] = base
        self._add_entry(manifest_entry(desc, artifact_type=ARTIFACT_TYPE, annotations=annotations))
        self._versions[(artifact.name, artifact.version)] = artifact.manifest_digest
        self.changed = True

    def _stage(self, digest: Digest, data: bytes) -> None:
        if digest.hex in self._sources:
            return
        dest = self._blob_dir / digest.hex
        try:
            dest.write_bytes(data)
        except OSError as e:
            raise disk_or(RegistryError, f"cannot stage blob {digest}: {e}", e) from e
        self._add_source(digest, _Source(dest, 0, len(data)))

    def _stage_file(self, desc: Descriptor, source: Path) -> None:
        # A link costs nothing and survives the caller removing the bundle; the bytes are
        # checked against the digest when the archive is written either way.
        dest = self._blob_dir / desc.digest.hex
        try:
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)
        except OSError as e:
            raise disk_or(RegistryError, f"cannot stage {source}: {e}", e) from e
        self._add_source(desc.digest, _Source(dest, 0, desc.size))

    def _add_source(self, digest: Digest, source: _Source) -> None:
        self._sources.setdefault(digest.hex, source)

    def _add_entry(self, entry: Entry) -> None:
        self._entries.setdefault(dump_json(dict(entry)), entry)

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


def _entry_order(entry: Entry) -> tuple[Any, ...]:
    # Model versions by name and SemVer precedence, then anything other tools wrote; the
    # canonical JSON breaks every remaining tie, so the order (and the bytes) are fixed.
    canonical = dump_json(dict(entry))
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
    import tarfile  # here, as in the writer above: reading an archive never needs it

    info = tarfile.TarInfo(name)
    info.size = size
    # Fixed metadata: the same blobs always give the same archive bytes.
    info.mtime = 0
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, reader)
