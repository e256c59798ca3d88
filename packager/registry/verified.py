"""The verified read path: a bundle or a signed document fetched from any registry kind.

This module only fetches: every decision is :mod:`packager.core.verify`'s, made on the bytes
as they arrive and before the next ones are fetched. Nothing is trusted before the
signature over it is checked: the signature first (size-capped), then manifest.json against
its signed digest, then the file set, then every file streamed with its signed size as a
cap and its digest checked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packager._io.fs import filesystem_type
from packager._io.hashing import digest_file
from packager.core import signature
from packager.core.digests import Digest
from packager.core.fingerprint import Fingerprint, Held
from packager.core.manifest import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, Manifest
from packager.core.policy import Trusted, VerifyMode
from packager.core.semver import semver_key
from packager.core.shards import Shard
from packager.core.text import Progress
from packager.core.verify import (
    Statement,
    accept_channel,
    check_manifest,
    check_manifest_digest,
    check_served,
    fingerprints_hold_on,
    served_file,
    still_the_same_inode,
    unchanged_since_verified,
    unverified_statement,
    verify_signature,
)
from packager.errors import NotFoundError, UsageError
from packager.registry.base import Artifact, Descriptor, RegistryReader

if TYPE_CHECKING:
    from packager.core.channel import Channel, Seen

# How each file of a bundle came to staging (see :func:`_fetch_one`).
FETCHED = "fetched"  # from the registry, checked as it arrived
REHASHED = "rehashed"  # held by the instance, linked or copied, hashed where it landed
UNCHANGED = "unchanged"  # held by the instance, linked unhashed: its inode is the one verified


# Files fetched at once: enough to keep the cores and the network busy with a bundle of
# many files, few enough to be a polite client of a shared registry.
PARALLEL_FETCHES = 4


@dataclass(frozen=True)
class Source:
    """Where versions are read from and how: the ``registry``, the verification ``mode``
    (a trust policy, or unverified for a stated reason), and ``progress``, told a line on
    each step taken (None: nobody is told)."""

    registry: RegistryReader
    mode: VerifyMode
    progress: Progress | None = None

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class OnHand:
    """What this machine already holds that a fetch may take instead of the registry's
    bytes: ``files`` by signed digest (an instance's installed files), and ``previous``,
    the directory of an installed version of the same model, whose files may hold some of
    the shards of the files signed by shards. ``seal``: make each file read-only the moment
    it is verified and take its fingerprint then (an instance's staging, see
    :attr:`Fetched.fingerprints`)."""

    files: Mapping[Digest, Held] = field(default_factory=dict)
    previous: Path | None = None
    seal: bool = False


NOTHING_ON_HAND = OnHand()


def read_channel(
    registry: RegistryReader,
    name: str,
    channel: str,
    *,
    mode: Trusted,
    now: datetime,
    last_seen: Seen | None,
) -> tuple[Channel, str]:
    """Fetch ``name@channel``'s document (capped) and verify it; returns it and the hint of
    the key that signed it.

    Raises:
        NotFoundError: the registry has no such channel.
        VerificationError: as :func:`packager.core.verify.accept_channel` (untrusted
            signer, expired, rollback, equivocation, wrong model or channel, malformed).
        RegistryError: the registry cannot be read.
    """
    # Imported here: installing by version reads no channel.
    from packager.core.channel import ARTIFACT_TYPE as CHANNEL_ARTIFACT_TYPE
    from packager.core.channel import MAX_CHANNEL_BYTES, channel_tag

    try:
        data = registry.get_document(
            name,
            channel_tag(channel),
            artifact_type=CHANNEL_ARTIFACT_TYPE,
            max_size=MAX_CHANNEL_BYTES,
        )
    except NotFoundError as e:
        raise NotFoundError(
            f"{registry.location} has no channel {channel} for {name}; the publisher "
            f"promotes a version with `packager promote {name}@VERSION --channel {channel} "
            f"--key cosign.key --registry {registry.location}`"
        ) from e
    return accept_channel(data, mode, name=name, channel=channel, now=now, last_seen=last_seen)


def latest_version(registry: RegistryReader, name: str) -> str:
    """The highest release (pre-releases only when there is no release).

    Two versions of that same precedence (``1.0.0+build.1`` and ``1.0.0+build.2``) are
    two builds with nothing to say which is newer: refused, never picked by their text.

    Raises:
        NotFoundError: the registry has no version of ``name``.
        UsageError: the highest precedence is held by more than one version.
    """
    versions = registry.versions(name)
    if not versions:
        raise NotFoundError(
            f"no version of {name} in {registry.location}; run "
            f"`packager search --registry {registry.location}` to list models"
        )
    releases = [v for v in versions if "-" not in v.split("+")[0]]
    candidates = releases or versions
    top = max(semver_key(v) for v in candidates)
    highest = sorted(v for v in candidates if semver_key(v) == top)
    if len(highest) > 1:
        raise UsageError(
            f"{registry.location} lists {' and '.join(highest)} of {name}, which differ only "
            f"in build metadata, so neither is the latest; name one: "
            f"`packager install {name}@VERSION`"
        )
    return highest[0]


@dataclass(frozen=True)
class Signed:
    """A version's signature and manifest.json, read (size-capped) and verified (steps 1-3
    of the verification order), its files not read: ``statement`` says who vouched for it
    (a key, or nobody in an unverified mode); ``signature`` is model.sig as served (None
    when an unverified mode found none)."""

    manifest: Manifest
    manifest_digest: Digest
    statement: Statement
    manifest_bytes: bytes
    signature: bytes | None


@dataclass(frozen=True)
class Fetched:
    """A bundle fetched into a directory and verified (steps 1-4 of the verification order):
    ``statement`` says who vouched for it (a key, or nobody in an unverified mode)."""

    manifest: Manifest
    manifest_digest: Digest
    statement: Statement
    directory: Path
    sources: Mapping[str, str]
    """How each file came: :data:`FETCHED`, :data:`REHASHED` or :data:`UNCHANGED`."""
    fingerprints: Mapping[str, Fingerprint] = field(default_factory=dict)
    """With ``OnHand.seal``: each file's fingerprint taken right after its bytes were
    verified and it was made read-only; an install records it only if the file still has
    it when committed."""


def read_signed(
    source: Source, artifact: Artifact, *, expected_manifest: Digest | None = None
) -> Signed:
    """Read the version ``artifact`` describes as far as its signed manifest.json, and no
    further: the signature first (size-capped) and verified, then manifest.json against its
    signed digest (and ``expected_manifest``, the one a channel document names), for the
    model and version asked for, listing exactly the signed files, each described by the
    registry with its signed digest and size. No other file is read.

    In an :class:`~packager.core.policy.Unverified` mode the signature is not checked
    (model.sig, when served, is still read, to be copied along) and the manifest as served
    stands in for it.

    Raises:
        VerificationError: bad, untrusted or revoked signature, a manifest.json other than
            the signed one or ``expected_manifest`` (TamperedError), wrong model.
        RegistryError: the registry cannot be read.
    """
    registry, mode, say = source.registry, source.mode, source.say
    name = artifact.name
    say(f"resolved {artifact.ref} in {registry.location} ({artifact.manifest_digest})")
    manifest_desc = served_file(artifact.files, MANIFEST)
    manifest_bytes: bytes | None = None

    # 1. The signature, size-capped, verified before anything else is read.
    sig: bytes | None
    if isinstance(mode, Trusted):
        sig = _read_signature(registry, artifact)
        statement = verify_signature(sig, mode, name=name)
        say(f"signature verified (key {str(statement.signer)[:16]})")
    else:
        # Not checked, but copied along: a mirror of the bundle stays a signed bundle.
        sig = _read_signature(registry, artifact) if SIGNATURE in artifact.files else None
        manifest_bytes = _read_manifest(registry, name, manifest_desc)
        statement = unverified_statement(manifest_bytes, mode)
        say(f"WARNING: signature NOT verified ({mode.reason}); digests still checked")

    # 2. The manifest: must be the signed one, for the model and version asked for.
    manifest_digest = check_manifest_digest(
        statement, manifest_desc.digest, ref=artifact.ref, expected=expected_manifest
    )
    if manifest_bytes is None:
        manifest_bytes = _read_manifest(registry, name, manifest_desc)
    # 3. check_manifest also checks signed resources == manifest files + manifest.json.
    manifest = check_manifest(statement, manifest_bytes, name=name, version=artifact.version)
    check_served(
        statement, manifest, {path: (d.digest, d.size) for path, d in artifact.files.items()}
    )
    return Signed(manifest, manifest_digest, statement, manifest_bytes, sig)


def fetch_verified(
    source: Source,
    artifact: Artifact,
    dest: Path,
    *,
    expected_manifest: Digest | None = None,
    on_hand: OnHand = NOTHING_ON_HAND,
) -> Fetched:
    """Fetch the version ``artifact`` describes (as ``source.registry`` resolved it, once)
    into the empty directory ``dest``, verifying as it goes: the files written are exactly
    the bytes verified against ``artifact``'s descriptors.

    ``on_hand.files`` maps digests to files this machine already holds (an instance's
    installed files): a file with one of those digests is hard-linked (else copied) from there
    instead of being fetched. It is hashed again where it lands unless its inode is,
    by fingerprint, the one this instance verified and recorded (see
    :func:`~packager.core.verify.unchanged_since_verified`); one that no longer matches is
    fetched after all. Only the files' bytes come from there: the signature and manifest
    are always the registry's.

    Nothing is trusted before the signature over it is checked: the signature and
    manifest.json first (:func:`read_signed`), then every file streamed with its signed
    size as a cap and its digest checked (several files at once: see :func:`_fetch_files`).

    In an :class:`~packager.core.policy.Unverified` mode the signature is not checked
    (model.sig, when served, is still copied along) and the manifest as served stands in
    for it: digests and sizes are still checked. ``expected_manifest`` is the
    manifest.json digest a channel document names: a bundle signed with another one is
    refused before anything else is fetched. The shards of ``on_hand.previous`` are
    reused as :func:`~packager.registry.shard_reuse.reuse_shards` says.

    Raises:
        VerificationError: bad, untrusted or revoked signature, tampered or missing files,
            wrong model, a manifest other than ``expected_manifest`` (TamperedError:
            mix-and-match).
        RegistryError: the registry cannot be read.
    """
    signed = read_signed(source, artifact, expected_manifest=expected_manifest)
    manifest, statement = signed.manifest, signed.statement

    # 4. Every file, capped at its signed size and checked against its signed digest.
    sources, fingerprints = _fetch_files(
        source,
        artifact.name,
        {entry.path: artifact.files[entry.path] for entry in manifest.files},
        dest,
        shards=statement.shards,
        on_hand=on_hand,
    )
    (dest / MANIFEST).write_bytes(signed.manifest_bytes)
    if signed.signature is not None:
        (dest / SIGNATURE).write_bytes(signed.signature)
    order = {entry.path: sources[entry.path] for entry in manifest.files}
    return Fetched(manifest, signed.manifest_digest, statement, dest, order, fingerprints)


def _read_signature(registry: RegistryReader, artifact: Artifact) -> bytes:
    desc = served_file(artifact.files, SIGNATURE)
    return registry.read_blob(artifact.name, desc, max_size=signature.MAX_SIGNATURE_BYTES)


def _read_manifest(registry: RegistryReader, name: str, desc: Descriptor) -> bytes:
    return registry.read_blob(name, desc, max_size=MAX_MANIFEST_BYTES)


def _fetch_files(
    source: Source,
    name: str,
    files: Mapping[str, Descriptor],
    dest: Path,
    *,
    shards: Mapping[str, Sequence[Shard]],
    on_hand: OnHand,
) -> tuple[dict[str, str], dict[str, Fingerprint]]:
    """Fetch ``files`` (path -> descriptor) into ``dest``, several at once: each from
    ``on_hand.files`` when it holds the digest (see :func:`fetch_verified`), else from the
    registry; a file signed by several ``shards`` is fetched and checked shard by shard
    where the registry can, its shards found in ``on_hand.previous`` at the same path
    copied from there.

    Each file is fetched (size-capped, digest-checked) by the registry on a thread of its
    own, PARALLEL_FETCHES at a time, so that the transfers, copies and hashing of several
    files overlap. At the first failure the fetches not started are dropped, the running
    ones are waited for, every file fetched is removed, and the failure of the first file
    (in ``files`` order) that failed is raised. Returns how each file came (see
    :func:`_fetch_one`) and, with ``on_hand.seal``, the fingerprints of the files sealed
    (see :func:`_sealed`).

    Raises:
        TamperedError, RegistryError: as :meth:`RegistryReader.fetch_blob`.
    """
    order = list(files)
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(PARALLEL_FETCHES, len(files))), thread_name_prefix="packager-fetch"
    )
    futures = {
        pool.submit(
            _fetch_one,
            source.registry,
            name,
            desc,
            dest / path,
            on_hand.files.get(desc.digest),
            shards.get(path, ()),
            None if on_hand.previous is None else on_hand.previous / path,
            on_hand.seal,
        ): path
        for path, desc in files.items()
    }
    sources: dict[str, str] = {}
    fingerprints: dict[str, Fingerprint] = {}
    try:
        for future in as_completed(futures):
            if future.exception() is not None:
                # Several may fail at once (a registry gone away): report the first in order.
                pool.shutdown(wait=True, cancel_futures=True)
                failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
                error = min(failed, key=lambda f: order.index(futures[f])).exception()
                assert error is not None
                raise error
            path = futures[future]
            sources[path], sealed = future.result()
            if sealed is not None:
                fingerprints[path] = sealed
            verb, check = _SAID[sources[path]]
            source.say(f"{verb} {path} ({files[path].size} bytes, {check})")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for future, path in futures.items():
            # A failed fetch removed its own file; a cancelled one created none.
            if not future.cancelled() and future.exception() is None:
                (dest / path).unlink(missing_ok=True)
        raise
    finally:
        pool.shutdown(wait=True)
    return sources, fingerprints


# The progress line of each file: its verb and how its bytes were checked.
_SAID = {
    FETCHED: ("fetched", "sha256 ok"),
    REHASHED: ("reused", "sha256 ok"),
    UNCHANGED: ("reused", "unchanged since verified at its install, not hashed again"),
}


def _fetch_one(
    registry: RegistryReader,
    name: str,
    desc: Descriptor,
    dest: Path,
    held: Held | None,
    shards: Sequence[Shard],
    reuse: Path | None,
    seal: bool = False,
) -> tuple[str, Fingerprint | None]:
    """Put the blob ``desc`` into the new file ``dest``: from ``held`` when it still has
    those bytes (:data:`UNCHANGED` or :data:`REHASHED`, see :func:`_reuse`), else from the
    registry (:data:`FETCHED`), by ``shards`` where it was signed so, those that ``reuse``
    holds copied from there. With ``seal``, ``dest`` is then made read-only and its
    fingerprint returned (:func:`_sealed`).

    Raises:
        TamperedError, RegistryError: as :meth:`RegistryReader.fetch_blob`.
    """
    how = None if held is None else _reuse(held, desc, dest)
    if how is None:
        registry.fetch_blob(name, desc, dest, shards, reuse)
        how = FETCHED
    return how, _sealed(dest) if seal else None


_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def _sealed(dest: Path) -> Fingerprint | None:
    """Make the file just verified at ``dest`` read-only (unless it already is: a chmod
    moves the ctime of an installed inode it may be linked to) and return its inode's
    fingerprint, taken from the same descriptor: what an install may record for it, if the
    file still has it when committed. None where it cannot be opened (nothing recorded)."""
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if stat.S_IMODE(info.st_mode) != _READ_ONLY:
            os.fchmod(fd, _READ_ONLY)
            info = os.fstat(fd)
        return Fingerprint.of(info)
    except OSError:
        return None
    finally:
        os.close(fd)


def _reuse(held: Held, desc: Descriptor, dest: Path) -> str | None:
    """Hard-link (else copy) ``held`` to ``dest``: :data:`UNCHANGED` when the inode opened
    (without following a link) still has the fingerprint recorded when it was verified
    and the link is that inode (:func:`_link_opened`); else hash what ``dest`` holds:
    :data:`REHASHED` when it is exactly ``desc``'s bytes. None (``dest`` removed)
    otherwise."""
    try:
        fd = os.open(held.path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        before = Fingerprint.of(os.fstat(fd))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        local = fingerprints_hold_on(filesystem_type(before.dev))
        recorded = held.recorded if local else None
        linked = _link_opened(fd, held.path, dest)
        found = os.lstat(dest)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(f"{dest} is not a regular file")
        if (
            linked
            and unchanged_since_verified(recorded, before, signed_size=desc.size)
            and still_the_same_inode(before, Fingerprint.of(found))
        ):
            return UNCHANGED
        if digest_file(dest) == (desc.digest, desc.size):
            return REHASHED
    except OSError:
        pass
    finally:
        os.close(fd)
    dest.unlink(missing_ok=True)
    return None


def _link_opened(fd: int, path: Path, dest: Path) -> bool:
    """Hard-link the inode open as ``fd`` (found at ``path``) to ``dest``: through
    /proc/self/fd (linkat, the link followed), so that the inode checked is the one linked
    whatever happens to ``path`` meanwhile; where the system cannot, by ``path`` (the caller
    then finds whether ``dest`` is that inode). False: copied (another filesystem, links
    not allowed), to be hashed."""
    with contextlib.suppress(OSError):
        os.link(f"/proc/self/fd/{fd}", dest, follow_symlinks=True)
        return True
    try:
        os.link(path, dest, follow_symlinks=False)
    except OSError:
        shutil.copyfile(path, dest, follow_symlinks=False)
        return False
    return True
