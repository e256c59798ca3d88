"""The embedded default registry: a directory holding one OCI image layout per model name.

```
<root>/<name>/oci-layout        {"imageLayoutVersion": "1.0.0"}
<root>/<name>/index.json        one manifest descriptor per version, tagged with
                                org.opencontainers.image.ref.name = version
<root>/<name>/blobs/sha256/<hex>
```
Because it is a plain OCI image layout, ``skopeo copy oci:<root>/<name>:<version> ...``
moves a version to any other OCI store.

Crash safety: every file is written to a temporary file in its directory, fsynced and
renamed into place; blobs (layers, config, then the OCI manifest) are durable before
index.json names them, so a reader never sees a tag whose content is missing. index.json
updates are serialised with an flock so concurrent publishers never lose a tag.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager._io.hashing import CHUNK
from packager.core.digests import Digest
from packager.core.manifest import NAME_RE, Manifest, check_name, dump_json
from packager.core.semver import is_semver, semver_key, sort_versions
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry.artifact import (
    ARTIFACT_TYPE,
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    parse_descriptor,
    parse_oci_manifest,
    plan_artifact,
)
from packager.registry.base import Artifact, Descriptor
from packager.registry.document import (
    EMPTY_CONFIG,
    EMPTY_DESCRIPTOR,
    MAX_DOCUMENT_MANIFEST_BYTES,
    check_document_tag,
    document_manifest,
    parse_document_manifest,
)
from packager.registry.files import copy_into

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
INDEX_LOCK = "index.json.lock"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = dump_json({"imageLayoutVersion": "1.0.0"})
# Thousands of versions fit in well under a MiB; anything near this is not an index.
MAX_INDEX_BYTES = 16 << 20
# Registries are read by other users than the publisher (the service, a web server
# mirroring the directory); mkstemp would leave files readable by the owner only.
FILE_MODE = 0o644

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = _READ_FLAGS | os.O_DIRECTORY


@dataclass(frozen=True)
class LayoutRegistry:
    """A registry in a local directory (the default is ``$PACKAGER_HOME/registry``)."""

    root: Path

    @property
    def location(self) -> str:
        return str(self.root)

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Store the bundle as ``manifest.name``@``manifest.version``; see :class:`Registry`.

        Raises:
            UsageError: the bundle does not match its manifest or cannot be read.
            TamperedError: a bundle file differs from the manifest or changed while copied.
            RegistryError: the version exists with different content, or writing failed.
        """
        plan = plan_artifact(bundle, manifest)
        layout = self._layout(plan.name)
        manifest_desc = Descriptor(
            OCI_MANIFEST_MEDIA_TYPE, plan.manifest_digest, len(plan.manifest_bytes)
        )
        # Checked before writing any blob so that a refused publish leaves nothing behind;
        # checked again under the lock, where it decides.
        if self._tagged(self._read_index(plan.name), plan.name, plan.version, manifest_desc):
            return plan.artifact()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            blobs = _make_dir(_make_dir(_make_dir(layout) / "blobs") / "sha256")
            if not _is_regular(layout / OCI_LAYOUT):
                _write_atomic(layout, OCI_LAYOUT, [LAYOUT_VERSION])
            for desc, source in plan.layers:
                if not _has_blob(blobs, desc):
                    _copy_atomic(blobs, desc, source)
            for desc, data in (
                (plan.config, plan.config_bytes),
                (manifest_desc, plan.manifest_bytes),
            ):
                if not _has_blob(blobs, desc):
                    _write_atomic(blobs, desc.digest.hex, [data])
            _fsync_dir(blobs)
            self._tag(layout, plan.name, plan.version, manifest_desc)
            self._write_models_index()
        except OSError as e:
            raise RegistryError(f"cannot publish {plan.name} to {self.location}: {e}") from e
        return plan.artifact()

    def names(self) -> list[str]:
        """Every model name with a layout under the root, sorted; empty when none.

        Raises:
            RegistryError: the root exists but cannot be listed.
        """
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if NAME_RE.fullmatch(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                    and _is_regular(Path(entry.path) / OCI_LAYOUT)
                )
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RegistryError(f"cannot list registry {self.location}: {e}") from e

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, by SemVer precedence, lowest first; empty when none.

        Tags that are not SemVer (added by other OCI tools) are not versions and are left out.

        Raises:
            UsageError: ``name`` is not a valid model name.
            RegistryError: index.json cannot be read or is corrupt.
        """
        return sort_versions(tag for tag in self.tags(name) if is_semver(tag))

    def tags(self, name: str) -> list[str]:
        """Every tag in ``name``'s index.json (versions, documents, other tools' tags), sorted.

        Raises:
            UsageError: ``name`` is not a valid model name.
            RegistryError: index.json cannot be read or is corrupt.
        """
        refs = {_ref_name(entry) for entry in self._read_index(name) or []}
        return sorted(ref for ref in refs if ref is not None)

    def resolve(self, name: str, version: str) -> Artifact:
        """What ``name``@``version`` contains; see :class:`Registry`.

        Raises:
            UsageError: ``name`` or ``version`` is malformed.
            NotFoundError: the model or version is not in the registry.
            TamperedError: the OCI manifest does not match its descriptor or is malformed.
            RegistryError: the layout cannot be read or is corrupt.
        """
        self._layout(name)
        if not is_semver(version):
            raise UsageError(f"invalid version {version!r}: use Semantic Versioning, e.g. 1.2.0")
        entries = self._read_index(name)
        if entries is None:
            raise NotFoundError(
                f"model {name!r} not found in {self.location}; publish it with "
                f"`packager publish BUNDLE --registry {self.location}`"
            )
        where = f"index.json of {name} in {self.location}"
        matches = {
            str(entry.get("digest")): entry for entry in entries if _ref_name(entry) == version
        }
        if not matches:
            raise NotFoundError(
                f"model {name!r} version {version} not found in {self.location}; "
                f"run `packager search {name}` to list its versions"
            )
        if len(matches) > 1:
            raise RegistryError(f"{where} tags {version} more than once; remove the stray entry")
        desc = parse_descriptor(next(iter(matches.values())), where=where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(f"{where}: {version} is a {desc.media_type}, not an OCI manifest")
        data = self.read_blob(name, desc, max_size=MAX_OCI_MANIFEST_BYTES)
        return parse_oci_manifest(data, name=name, version=version, digest=desc.digest)

    def read_blob(self, name: str, desc: Descriptor, *, max_size: int) -> bytes:
        """Read a small blob into memory; see :class:`Registry`.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: ``desc.size`` is over ``max_size``, or the bytes differ from it.
            RegistryError: the blob is missing, a link, or cannot be read.
        """
        if desc.size > max_size:
            raise TamperedError(
                f"blob {desc.digest} of {name} declares {desc.size} bytes, "
                f"more than the {max_size} allowed"
            )
        fd = self._open_blob(name, desc)
        try:
            data = b"".join(_read_capped(fd, desc.size + 1))
        except OSError as e:
            raise RegistryError(f"cannot read blob {desc.digest} of {name}: {e}") from e
        finally:
            os.close(fd)
        _check_blob(name, desc, len(data), hashlib.sha256(data).hexdigest())
        return data

    def fetch_blob(self, name: str, desc: Descriptor, dest: Path) -> None:
        """Stream a blob into the new file ``dest``; see :class:`Registry`.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: the bytes differ from the descriptor (``dest`` is removed).
            RegistryError: the blob is missing, a link, or cannot be read, or ``dest``
                cannot be created (it must not exist) or written.
        """
        fd = self._open_blob(name, desc)
        try:
            # Exclusive creation never follows a link planted at dest, and a failure to
            # create leaves whatever was there alone. Readable too: the copy is hashed
            # from dest itself.
            out = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                digest, size = copy_into(fd, out, limit=desc.size + 1)
                _check_blob(name, desc, size, digest.hex)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            finally:
                os.close(out)
        except OSError as e:
            raise RegistryError(
                f"cannot fetch blob {desc.digest} of {name} into {dest}: {e}"
            ) from e
        finally:
            os.close(fd)

    def put_document(self, name: str, tag: str, data: bytes, *, artifact_type: str) -> Digest:
        """Store ``data`` as a document tagged ``tag``; see :class:`Registry`.

        The blobs are durable before index.json names them; the index entry of ``tag`` is
        replaced under the index lock, so a reader sees the old document or the new one.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed (a tag must not read as a version).
            RegistryError: writing failed.
        """
        layout = self._layout(name)
        check_document_tag(tag)
        manifest, layer = document_manifest(data, artifact_type=artifact_type)
        manifest_desc = Descriptor(OCI_MANIFEST_MEDIA_TYPE, Digest.of(manifest), len(manifest))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            blobs = _make_dir(_make_dir(_make_dir(layout) / "blobs") / "sha256")
            if not _is_regular(layout / OCI_LAYOUT):
                _write_atomic(layout, OCI_LAYOUT, [LAYOUT_VERSION])
            for desc, content in (
                (EMPTY_DESCRIPTOR, EMPTY_CONFIG),
                (layer, data),
                (manifest_desc, manifest),
            ):
                if not _has_blob(blobs, desc):
                    _write_atomic(blobs, desc.digest.hex, [content])
            _fsync_dir(blobs)
            entry = manifest_desc.to_json()
            entry["artifactType"] = artifact_type
            entry["annotations"] = {REF_NAME_ANNOTATION: tag}
            with self._index_lock(layout, name) as entries:
                kept = [e for e in entries if _ref_name(e) != tag]
                self._write_index(layout, [*kept, entry])
        except OSError as e:
            raise RegistryError(f"cannot store {name}:{tag} in {self.location}: {e}") from e
        return manifest_desc.digest

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        """The document tagged ``tag``; see :class:`Registry`.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed.
            NotFoundError: no such model or tag.
            TamperedError: malformed artifact, or bytes that differ from their descriptor.
            RegistryError: the layout cannot be read, is corrupt, or tags ``tag`` twice.
        """
        self._layout(name)
        check_document_tag(tag)
        where = f"{name}:{tag} in {self.location}"
        matches = {
            str(entry.get("digest")): entry
            for entry in self._read_index(name) or []
            if _ref_name(entry) == tag
        }
        if not matches:
            raise NotFoundError(f"no {tag} for {name} in {self.location}")
        if len(matches) > 1:
            raise RegistryError(f"index.json of {name} tags {tag} more than once")
        desc = parse_descriptor(next(iter(matches.values())), where=where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(f"{where} is a {desc.media_type}, not an OCI manifest")
        manifest = self.read_blob(name, desc, max_size=MAX_DOCUMENT_MANIFEST_BYTES)
        layer = parse_document_manifest(
            manifest, digest=desc.digest, artifact_type=artifact_type, where=where
        )
        return self.read_blob(name, layer, max_size=max_size)

    def _layout(self, name: str) -> Path:
        if not NAME_RE.fullmatch(name):
            raise UsageError(
                f"invalid model name {name!r}: use 1-128 lowercase letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        return self.root / name

    def _open_blob(self, name: str, desc: Descriptor) -> int:
        where = f"blob {desc.digest} of {name} in {self.location}"
        try:
            return _open_regular(self._layout(name), "blobs", "sha256", desc.digest.hex)
        except FileNotFoundError as e:
            raise RegistryError(f"{where} is missing; publish the version again") from e
        except OSError as e:
            raise RegistryError(f"cannot open {where}: {e}") from e

    def _read_index(self, name: str) -> list[dict[str, Any]] | None:
        """The index's manifest descriptors, or None when the model has no layout."""
        where = f"{INDEX} of {name} in {self.location}"
        try:
            fd = _open_regular(self._layout(name), INDEX)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError(f"cannot open {where}: {e}") from e
        try:
            data = b"".join(_read_capped(fd, MAX_INDEX_BYTES + 1))
        except OSError as e:
            raise RegistryError(f"cannot read {where}: {e}") from e
        finally:
            os.close(fd)
        if len(data) > MAX_INDEX_BYTES:
            raise RegistryError(f"{where} is larger than {MAX_INDEX_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryError(f"{where} is corrupt ({e}); restore it from a backup") from e
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
            raise RegistryError(f"{where} has no list of manifests; restore it from a backup")
        return manifests

    def _tagged(
        self, entries: list[dict[str, Any]] | None, name: str, version: str, desc: Descriptor
    ) -> bool:
        """True when ``version`` is already tagged with ``desc``; raises if with other content."""
        digests = {entry.get("digest") for entry in entries or [] if _ref_name(entry) == version}
        if not digests:
            return False
        if digests != {str(desc.digest)}:
            raise RegistryError(
                f"{name}@{version} already exists with different content in {self.location}; "
                "publish a new version"
            )
        return True

    def _tag(self, layout: Path, name: str, version: str, desc: Descriptor) -> None:
        with self._index_lock(layout, name) as entries:
            if self._tagged(entries, name, version, desc):
                return
            entry = desc.to_json()
            entry["artifactType"] = ARTIFACT_TYPE
            entry["annotations"] = {REF_NAME_ANNOTATION: version}
            self._write_index(layout, [*entries, entry])

    def _write_models_index(self) -> None:
        """Rewrite ``<root>/models.json``: static web servers cannot list directories, so
        a mirror of this registry served over HTTP learns its model names from it."""

        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(self.root / f"{MODELS_INDEX}.lock", flags, FILE_MODE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _write_atomic(self.root, MODELS_INDEX, [render_models_index(self.names())])
        finally:
            os.close(lock)

    @contextlib.contextmanager
    def _index_lock(self, layout: Path, name: str) -> Iterator[list[dict[str, Any]]]:
        """Hold the index lock; yields the index's entries as they are under it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(layout / INDEX_LOCK, flags, FILE_MODE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._read_index(name) or []
        finally:
            os.close(lock)  # releases the flock

    @staticmethod
    def _write_index(layout: Path, entries: list[dict[str, Any]]) -> None:
        """Replace index.json (call it holding the index lock)."""
        index = {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": sorted(entries, key=_index_order),
        }
        _write_atomic(layout, INDEX, [dump_json(index)])
        _fsync_dir(layout)


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    ref = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
    return ref if isinstance(ref, str) else None


def _index_order(entry: dict[str, Any]) -> tuple[Any, ...]:
    # Versions by SemVer precedence, then anything other tools tagged, then untagged
    # entries; the canonical JSON breaks every remaining tie, so the order is total.
    ref = _ref_name(entry)
    tie = dump_json(entry)
    if ref is not None and is_semver(ref):
        return (0, semver_key(ref), ref, tie)
    return (1, (), ref or "", tie)


def _open_regular(layout: Path, *parts: str) -> int:
    """Open ``layout/parts...`` for reading without following any link at or below
    ``layout``; raises OSError, FileNotFoundError when a part is missing."""
    fd = os.open(layout, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            parent, fd = fd, os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(parent)
        # O_NONBLOCK: opening a FIFO planted in the layout must not hang the reader.
        leaf = os.open(parts[-1], _READ_FLAGS | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", parts[-1])
    except BaseException:
        os.close(leaf)
        raise
    return leaf


def _read_capped(fd: int, limit: int) -> Iterator[bytes]:
    """Yield the file's bytes, never more than ``limit`` in total."""
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def _check_blob(name: str, desc: Descriptor, size: int, hexdigest: str) -> None:
    if size != desc.size:
        raise TamperedError(
            f"blob {desc.digest} of {name} is {'longer' if size > desc.size else 'shorter'} "
            f"than the {desc.size} bytes declared; do not use it"
        )
    if hexdigest != desc.digest.hex:
        raise TamperedError(f"blob {desc.digest} of {name} does not match its digest")


def _copy_atomic(blobs: Path, desc: Descriptor, source: Path) -> None:
    """Copy a bundle file into the blob ``desc`` names, through a fsynced temporary file and
    a rename (see :func:`~packager.registry.files.copy_into`: in the kernel, hashed behind
    the copy).

    Raises:
        TamperedError: the copy is not ``desc``: the file changed since it was hashed.
        OSError: reading or writing failed.
    """
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=f".{desc.digest.hex}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            with open(source, "rb") as src:
                digest, size = copy_into(src.fileno(), fd, limit=desc.size + 1)
        finally:
            os.close(fd)
        if (size, digest) != (desc.size, desc.digest):
            raise TamperedError(f"{source} changed while it was published; publish it again")
        os.replace(tmp, blobs / desc.digest.hex)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_atomic(directory: Path, name: str, chunks: Iterable[bytes]) -> None:
    """Write ``directory/name`` through a fsynced temporary file and a rename.

    The directory itself is not fsynced: callers batch that after several writes.
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _has_blob(blobs: Path, desc: Descriptor) -> bool:
    # Blobs are content-addressed and only ever written through a verified rename, so a
    # regular file of the right size is the blob; re-hashing it would double publish time.
    try:
        st = os.lstat(blobs / desc.digest.hex)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == desc.size


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _make_dir(path: Path) -> Path:
    """Create ``path`` (its parent exists) unless present; it must be a real directory."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    else:
        _fsync_dir(path.parent)  # so the new entry survives a crash
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise RegistryError(f"{path} is not a directory; layouts hold no links")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MODELS_INDEX = "models.json"


# 128-character names: a MiB lists thousands of models.
MAX_MODELS_INDEX_BYTES = 1 << 20


def render_models_index(names: Iterable[str]) -> bytes:
    """The ``models.json`` of a registry directory: its model names as a JSON array,
    sorted and without duplicates, in packager's canonical JSON.

    Raises:
        UsageError: a name is not a valid model name.
    """
    return dump_json(sorted({check_name(name) for name in names}))
