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
import io
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from packager._io.fs import atomic_write, fsync_dir
from packager._io.hashing import CHUNK
from packager.core.digests import Digest
from packager.core.jsonio import loads_object
from packager.core.manifest import NAME_RE, Manifest, check_name, check_version, dump_json
from packager.core.semver import is_semver, semver_key
from packager.core.shards import Shard
from packager.errors import NotFoundError, RegistryError, TamperedError, disk_or
from packager.registry._verified_read import IndexedStore, ShardedBlob, VerifiedRegistry
from packager.registry.artifact import (
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    parse_descriptor,
    plan_artifact,
)
from packager.registry.base import Artifact, Descriptor, WritesAsItGoes
from packager.registry.document import Document, DocumentWriter
from packager.registry.files import copy_into
from packager.registry.index import (
    EMPTY_INDEX,
    INDEX,
    LAYOUT_VERSION,
    MAX_INDEX_BYTES,
    OCI_LAYOUT,
    Entry,
    OciIndex,
    already_tagged,
    parse_index,
    ref_name,
    render_index,
    retag,
    with_version,
)

INDEX_LOCK = "index.json.lock"
# Held shared by every publish from its first blob to its tag, exclusively by gc.
WRITE_LOCK = "blobs.lock"
# A layout gc dropped is renamed to .<name><_DROPPED> in the root, then deleted.
_DROPPED = ".dropped"
_HEX = re.compile(r"[0-9a-f]{64}")
_MANIFEST_TYPES = frozenset(
    {
        OCI_MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


@dataclass(frozen=True)
class Garbage:
    """A blob (or a killed write's temporary file) no manifest of ``name`` references."""

    name: str
    file: str
    size: int


# Registries are read by other users than the publisher (the service, a web server
# mirroring the directory); mkstemp would leave files readable by the owner only.
FILE_MODE = 0o644
MODELS_INDEX = "models.json"
# 128-character names: a MiB lists thousands of models.
MAX_MODELS_INDEX_BYTES = 1 << 20

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = _READ_FLAGS | os.O_DIRECTORY


def semver_tag(tag: str) -> str | None:
    """The version a tag of a registry directory or archive holds: the tag itself."""
    return tag if is_semver(tag) else None


class LayoutNaming:
    """Names and tags as a registry directory has them: model names as manifests have
    them, each version tagged with the version itself."""

    check_name = staticmethod(check_name)
    version_tag = staticmethod(check_version)
    tag_version = staticmethod(semver_tag)


class LayoutStore(LayoutNaming, IndexedStore):
    """The blobs, tags and names of a registry directory, unchecked."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def close(self) -> None:
        """Nothing is held open between calls."""

    def list_names(self) -> list[str]:
        """Every model name with a layout under the root; empty when the root is missing.

        Raises:
            RegistryError: the root exists but cannot be listed.
        """
        try:
            with os.scandir(self.root) as entries:
                return [
                    entry.name
                    for entry in entries
                    if NAME_RE.fullmatch(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                    and _is_regular(Path(entry.path) / OCI_LAYOUT)
                ]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RegistryError(f"cannot list registry {self.location}: {e}") from e

    def missing_model(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"model {name!r} not found in {self.location}; publish it with "
            f"`packager publish BUNDLE --registry {self.location}`, or read it from the "
            "registry that has it with --registry REF"
        )

    def read_blob_into(self, name: str, desc: Descriptor, sink: IO[bytes]) -> None:
        fd = self._open_blob(name, desc)
        try:
            for chunk in _read_capped(fd, desc.size + 1):
                sink.write(chunk)
        except OSError as e:
            raise RegistryError(f"cannot read blob {desc.digest} of {name}: {e}") from e
        finally:
            os.close(fd)

    def copy_blob_into(self, name: str, desc: Descriptor, out: int) -> tuple[Digest, int]:
        """In the kernel, hashed behind the copy: see :func:`copy_into`."""
        fd = self._open_blob(name, desc)
        try:
            return copy_into(fd, out, limit=desc.size + 1)
        finally:
            os.close(fd)

    def copy_shards_into(self, blob: ShardedBlob, out: int) -> Shard | None:
        """In the kernel, every shard on its own thread, each hashed where it landed:
        see :func:`~packager.registry.shard_reuse.copy_shards`."""
        from packager.registry.shard_reuse import copy_shards

        fd = self._open_blob(blob.name, blob.desc)
        try:
            return copy_shards(fd, out, blob.shards)
        finally:
            os.close(fd)

    def index(self, name: str) -> OciIndex | None:
        """The index of ``name``, or None when the model has no layout.

        Raises:
            RegistryError: index.json cannot be read or is corrupt.
            TamperedError: it lists a tag more than once.
        """
        where = f"{INDEX} of {name} in {self.location}"
        try:
            fd = _open_regular(self.root / name, INDEX)
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
        return parse_index(data, where=where, hint="restore it from a backup")

    def _open_blob(self, name: str, desc: Descriptor) -> int:
        where = f"blob {desc.digest} of {name} in {self.location}"
        try:
            return _open_regular(self.root / name, "blobs", "sha256", desc.digest.hex)
        except FileNotFoundError as e:
            raise RegistryError(f"{where} is missing; publish the version again") from e
        except OSError as e:
            raise RegistryError(f"cannot open {where}: {e}") from e


class LayoutRegistry(WritesAsItGoes, DocumentWriter, VerifiedRegistry):
    """A registry in a local directory (the default is ``$PACKAGER_HOME/registry``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._layouts = LayoutStore(root)
        super().__init__(self._layouts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayoutRegistry) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Store the bundle as ``manifest.name``@``manifest.version``; see
        :class:`~packager.registry.base.RegistryWriter`.

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
        if self._tagged(self._layouts.index(plan.name), plan.name, plan.version, manifest_desc):
            return plan.artifact()
        try:
            with self._writing(layout) as blobs:
                for desc, source in plan.layers:
                    if not _has_blob(blobs, desc):
                        _copy_atomic(blobs, desc, source)
                for desc, data in (
                    (plan.config, plan.config_bytes),
                    (manifest_desc, plan.manifest_bytes),
                ):
                    if not _has_blob(blobs, desc):
                        _write(blobs / desc.digest.hex, data)
                fsync_dir(blobs)
                self._tag(layout, plan.version, manifest_desc)
            self._write_models_index()
        except OSError as e:
            raise disk_or(
                RegistryError, f"cannot publish {plan.name} to {self.location}: {e}", e
            ) from e
        return plan.artifact()

    def store_document(self, document: Document) -> None:
        """Store a checked document; see :class:`~packager.registry.document.DocumentWriter`.

        The blobs are durable before index.json names them; the index entry of the tag is
        replaced under the index lock, so a reader sees the old document or the new one.

        Raises:
            RegistryError: writing failed.
        """
        name, tag = document.name, document.tag
        layout = self._layout(name)
        manifest_desc = document.manifest_descriptor
        try:
            with self._writing(layout) as blobs:
                for desc, content in (*document.blobs, (manifest_desc, document.manifest)):
                    if not _has_blob(blobs, desc):
                        _write(blobs / desc.digest.hex, content)
                fsync_dir(blobs)
                with self._index_lock(layout, name) as index:
                    self._write_index(layout, retag(index.entries, document.index_entry))
        except OSError as e:
            message = f"cannot store {name}:{tag} in {self.location}: {e}"
            raise disk_or(RegistryError, message, e) from e

    def collect_garbage(
        self,
        *,
        dry_run: bool = False,
        warn: Callable[[str], None] | None = None,
        refused: Callable[[RegistryError], None] | None = None,
    ) -> list[Garbage]:
        """Remove the blobs no manifest of any model references (a channel's replaced
        documents, what a killed publish left); returns what was (or, ``dry_run``, would
        be) removed.

        Each model's layout is swept holding its write lock exclusively: a publish holds
        it shared from its first blob to its tag, so a blob being published is never
        taken for garbage, and a publish waits while its layout is swept. An entry of a
        blob directory that is not a regular file (packager never writes one), or that
        cannot be removed, is left where it is and passed to ``warn``: the sweep goes on.
        A model whose layout needs repair (below) is passed to ``refused``, if given, and
        the other models are swept; without ``refused`` the error is raised at once.

        Raises:
            NotFoundError: the root is missing, or is not a registry directory (no
                models.json, no model layout begun): a mistyped path is not a success.
            RegistryError: a layout cannot be read, or a manifest it tags is missing or
                unreadable (nothing of that model is removed: the registry needs repair).
        """
        if not self.root.is_dir():
            raise NotFoundError(
                f"no registry at {self.location}; give the registry directory with --registry REF"
            )
        names = sorted(self._layouts.list_names())
        if not names and not self._started():
            raise NotFoundError(
                f"{self.location} is not a registry directory (no model layout in it); "
                "give the registry directory with --registry REF"
            )
        found: list[Garbage] = []
        emptied = False
        for name in names:
            layout = self._layout(name)
            try:
                with self._writing(layout, exclusive=True) as blobs:
                    found.extend(self._sweep(name, blobs, dry_run=dry_run, warn=warn))
                    if not dry_run:
                        emptied |= self._drop_if_empty(layout, blobs)
            except OSError as e:
                raise RegistryError(f"cannot clean {name} in {self.location}: {e}") from e
            except RegistryError as e:
                if refused is None:
                    raise
                refused(e)  # nothing of this model was removed; the next one is swept
        try:
            self._forget_dropped()
            if emptied:
                self._write_models_index()
        except OSError as e:
            raise RegistryError(f"cannot clean {self.location}: {e}") from e
        return found

    def _drop_if_empty(self, layout: Path, blobs: Path) -> bool:
        """Remove a layout whose index names nothing and whose blobs are all gone (a first
        publish of a model killed before its tag), holding its write lock exclusively: it
        leaves the root in one rename, so readers never list a model without versions, and
        a publish waiting for the lock finds the layout gone and makes it again (see
        :meth:`_writing`). Returns whether it was removed."""
        import shutil

        index = self._layouts.index(layout.name)
        if (index is not None and index.entries) or any(blobs.iterdir()):
            return False
        dropped = self.root / f".{layout.name}{_DROPPED}"
        shutil.rmtree(dropped, ignore_errors=True)
        os.rename(layout, dropped)
        fsync_dir(self.root)
        shutil.rmtree(dropped, ignore_errors=True)
        return True

    def _forget_dropped(self) -> None:
        """Delete what a gc killed while deleting a dropped layout left (no writer uses it)."""
        import shutil

        with os.scandir(self.root) as entries:
            for entry in entries:
                dropped = entry.name.startswith(".") and entry.name.endswith(_DROPPED)
                if dropped and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)

    def _started(self) -> bool:
        """Whether the root is a registry directory, its first layout perhaps still being
        written: it holds models.json, or a directory named as a model that is empty or
        has blobs/ (what a publish makes before its oci-layout file)."""
        if (self.root / MODELS_INDEX).is_file():
            return True
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if NAME_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                        held = os.listdir(entry.path)  # once: a publish may be adding to it
                        if not held or "blobs" in held:
                            return True
        except OSError as e:
            raise RegistryError(f"cannot list registry {self.location}: {e}") from e
        return False

    def _sweep(
        self, name: str, blobs: Path, *, dry_run: bool, warn: Callable[[str], None] | None
    ) -> list[Garbage]:
        """Remove the unreferenced blobs of one layout (its write lock held exclusively).

        Raises:
            RegistryError: the layout has no index.json: every blob would look unreferenced.
        """
        index = self._layouts.index(name)
        if index is None:
            raise RegistryError(
                f"{name}/{INDEX} is missing in {self.location}: restore it from a backup "
                f"(if no version of {name} was ever published, remove {name}/ instead)"
            )
        needed = self._referenced(
            name, [parse_descriptor(dict(e), where=INDEX) for e in index.entries]
        )
        found = []
        skipped = []
        with os.scandir(blobs) as entries:
            for entry in entries:
                stale = entry.name.startswith(".") and entry.name.endswith(".tmp")
                if entry.name in needed or not (stale or _HEX.fullmatch(entry.name)):
                    continue
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(f"{entry.path} is not a regular file (no blob is)")
                    continue
                if not dry_run:
                    try:
                        os.unlink(entry.path)
                    except OSError as e:
                        skipped.append(f"cannot remove {entry.path} ({e.strerror})")
                        continue
                found.append(Garbage(name, entry.name, info.st_size))
        if found and not dry_run:
            fsync_dir(blobs)
        for message in skipped:
            if warn is not None:
                warn(f"{message}: left where it is")
        return found

    def _referenced(self, name: str, roots: list[Descriptor]) -> set[str]:
        """The hex digests of ``roots`` and of every blob their manifests and indexes name."""
        needed: set[str] = set()
        pending = list(roots)
        while pending:
            desc = pending.pop()
            if desc.digest.hex in needed:
                continue
            needed.add(desc.digest.hex)
            if desc.media_type in _MANIFEST_TYPES:
                pending.extend(self._children(name, desc))
        return needed

    def _children(self, name: str, desc: Descriptor) -> list[Descriptor]:
        """The descriptors an OCI manifest or index names (config, layers, subject,
        manifests), read with its size and digest checked."""
        where = f"manifest {desc.digest} of {name} in {self.location}"
        if desc.size > MAX_OCI_MANIFEST_BYTES:
            raise RegistryError(f"{where} is larger than {MAX_OCI_MANIFEST_BYTES} bytes")
        sink = io.BytesIO()
        self._layouts.read_blob_into(name, desc, sink)
        data = sink.getvalue()
        if len(data) != desc.size or Digest.of(data) != desc.digest:
            raise RegistryError(f"{where} does not match its digest; nothing was removed")
        doc = loads_object(data, what=where, error=RegistryError)
        children: list[object] = [doc.get("config"), doc.get("subject")]
        for key in ("layers", "manifests", "blobs"):
            value = doc.get(key)
            if isinstance(value, list):
                children.extend(value)
        return [parse_descriptor(c, where=where) for c in children if c is not None]

    @contextlib.contextmanager
    def _writing(self, layout: Path, *, exclusive: bool = False) -> Iterator[Path]:
        """Hold the layout's write lock (shared: publishing; exclusive: collecting
        garbage) and yield its blob directory. A layout gc dropped (:meth:`_drop_if_empty`)
        while this waited is made again, and its lock taken again."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            blobs = self._blob_dir(layout)
            try:
                lock = os.open(layout / WRITE_LOCK, flags, FILE_MODE)
            except FileNotFoundError:  # the layout left between the two: make it again
                continue
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                if _same_inode(lock, layout / WRITE_LOCK):
                    yield blobs
                    return
            finally:
                os.close(lock)

    def _layout(self, name: str) -> Path:
        check_name(name)
        return self.root / name

    def _blob_dir(self, layout: Path) -> Path:
        """``layout/blobs/sha256``, created with the layout's index.json (empty) and then
        its oci-layout file if missing: a layout listed (it has oci-layout) always has an
        index, so one without is damaged, never a publish under way (see :meth:`_sweep`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        blobs = _make_dir(_make_dir(_make_dir(layout) / "blobs") / "sha256")
        if not _is_regular(layout / OCI_LAYOUT):
            with self._index_lock(layout, layout.name):
                if not (layout / INDEX).exists():
                    self._write_index(layout, ())
            _write(layout / OCI_LAYOUT, LAYOUT_VERSION)
        return blobs

    def _tagged(self, index: OciIndex | None, name: str, version: str, desc: Descriptor) -> bool:
        """True when ``version`` is already tagged with ``desc``; raises if with other content."""
        return index is not None and already_tagged(
            index, version, desc, label=f"{name}@{version}", location=self.location
        )

    def _tag(self, layout: Path, version: str, desc: Descriptor) -> None:
        label = f"{layout.name}@{version}"
        with self._index_lock(layout, layout.name) as index:
            entries = with_version(index, version, desc, label=label, location=self.location)
            if entries is not None:
                self._write_index(layout, entries)

    def _write_models_index(self) -> None:
        """Rewrite ``<root>/models.json``: static web servers cannot list directories, so
        a mirror of this registry served over HTTP learns its model names from it."""

        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(self.root / f"{MODELS_INDEX}.lock", flags, FILE_MODE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _write(self.root / MODELS_INDEX, render_models_index(self.names()))
        finally:
            os.close(lock)

    @contextlib.contextmanager
    def _index_lock(self, layout: Path, name: str) -> Iterator[OciIndex]:
        """Hold the index lock; yields the index as it is under it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(layout / INDEX_LOCK, flags, FILE_MODE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._layouts.index(name) or EMPTY_INDEX
        finally:
            os.close(lock)  # releases the flock

    @staticmethod
    def _write_index(layout: Path, entries: Iterable[Entry]) -> None:
        """Replace index.json (call it holding the index lock)."""
        atomic_write(layout / INDEX, render_index(entries, order=_index_order), mode=FILE_MODE)


def _index_order(entry: Entry) -> tuple[Any, ...]:
    # Versions by SemVer precedence, then anything other tools tagged, then untagged
    # entries; the canonical JSON breaks every remaining tie, so the order is total.
    ref = ref_name(entry)
    tie = dump_json(dict(entry))
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


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` durably; the caller fsyncs the directory once after a batch."""
    atomic_write(path, data, mode=FILE_MODE, sync_dir=False)


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


def _same_inode(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not removed, nor replaced)."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (mine.st_dev, mine.st_ino)


def _make_dir(path: Path) -> Path:
    """Create ``path`` (its parent exists) unless present; it must be a real directory."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    else:
        fsync_dir(path.parent)  # so the new entry survives a crash
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise RegistryError(f"{path} is not a directory; layouts hold no links")
    return path


def render_models_index(names: Iterable[str]) -> bytes:
    """The ``models.json`` of a registry directory: its model names as a JSON array,
    sorted and without duplicates, in packager's canonical JSON.

    Raises:
        UsageError: a name is not a valid model name.
    """
    return dump_json(sorted({check_name(name) for name in names}))
