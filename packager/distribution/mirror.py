"""Crossing the air gap: export versions into an archive, and mirror between registries.

Both go through the :class:`~packager.registry.base.Registry` protocol only, so any kind of
registry can be the source, and any that accepts ``publish`` the destination. An archive
destination (a path ending in ``.tar``) is special: it is rebuilt once, atomically, with
what it held before plus what was copied.

Mirroring trusts nothing it has not checked: each version is resolved once, fetched and
verified with :func:`packager.registry.verified.fetch_verified` (signature, manifest, file
set, every digest) into a temporary directory, and exactly those bytes are then written to
the destination. In an unverified mode (``--no-verify``) the signature is not checked, but
every blob still is against its digest and the files against manifest.json.

What happens to a version already in the destination: with the same content (the same
OCI manifest, or the same files) it is skipped; with other content it is a conflict,
reported and left alone while the other versions are still copied; the caller decides what
a conflict means (the CLI exits 4). A verification failure stops the mirror at once:
a source that serves one tampered version is not trusted for the next; versions already
published stay (they were verified), and an archive destination is left untouched.

Channel documents of the models copied go along, byte for byte (they are signed). Export
carries every one. Mirror, when verifying, checks each with the keys (a failure stops it
like a tampered version) and copies it only when the destination holds the bundle it
names and has no document of that channel with a higher sequence; without verifying it
copies a document only where the destination has none under that channel (it cannot tell
which of two is newer). A source that cannot list its tags carries no channels, and says so.

Documents attached to a version (approvals, revocations, benchmark results: the kinds
packager knows, :mod:`packager.registry.attachments`) go along with it, byte for byte:
export carries every one, mirror those the destination's copy lacks, re-attached to the
copy's OCI manifest; documents of other kinds are skipped.
They are not judged here: each installer judges them with its own trust policy.

The root of trust's documents (:mod:`packager.registry.roots`) go along too: export carries
all of them; mirror copies the roots the destination lacks and newer delegations.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packager.core.channel import ARTIFACT_TYPE as CHANNEL_ARTIFACT_TYPE
from packager.core.channel import MAX_CHANNEL_BYTES, TAG_PREFIX, Channel
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, Manifest
from packager.core.names import parse_ref
from packager.core.policy import Trusted, TrustPolicy, Unverified, VerifyMode
from packager.core.records import JsonRecord
from packager.core.root import TRUST_REPOSITORY
from packager.core.text import Progress
from packager.core.verify import check_channel_document
from packager.errors import NotFoundError, RegistryError, UsageError, VerificationError
from packager.registry.archive import ARCHIVE_SUFFIX, ArchiveWriter
from packager.registry.attachments import (
    Attachment,
    attached_documents,
    copy_attachments,
    list_attachments,
    missing_attachments,
    subject_of,
)
from packager.registry.attachments import artifact_type as attachment_type
from packager.registry.base import Artifact, Registry, RegistryReader
from packager.registry.roots import copy_trust_documents, trust_document_type, trust_documents
from packager.registry.verified import Source, fetch_verified, latest_version


@dataclass(frozen=True)
class Mirrored(JsonRecord):
    """One version the mirror looked at, with the OCI manifest digest it has in the source
    and the one it has in the destination (after copying, or as found there)."""

    name: str
    version: str
    source_digest: Digest
    destination_digest: Digest


@dataclass(frozen=True)
class MirroredChannel(JsonRecord):
    """One channel document the mirror looked at: ``outcome`` is "copied", "skipped" or
    "conflict" (left alone), and ``detail`` says why."""

    name: str
    channel: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class MirrorReport(JsonRecord):
    """What a mirror copied, skipped (already there, identical) and left alone (conflicts),
    versions and channel documents."""

    source: str
    destination: str
    verified: bool
    copied: tuple[Mirrored, ...]
    skipped: tuple[Mirrored, ...]
    conflicts: tuple[Mirrored, ...]
    channels: tuple[MirroredChannel, ...] = ()

    @property
    def channel_conflicts(self) -> tuple[MirroredChannel, ...]:
        return tuple(c for c in self.channels if c.outcome == "conflict")

    def check(self) -> None:
        """Raises RegistryError naming the versions, then the channels, left alone in the
        destination because it holds other content, unless there are none."""
        if self.conflicts:
            listed = ", ".join(f"{c.name}@{c.version}" for c in self.conflicts)
            raise RegistryError(
                f"{listed} already in {self.destination} with other content and left alone; "
                "versions are immutable: publish a new version instead"
            )
        if self.channel_conflicts:
            listed = ", ".join(f"{c.name}@{c.channel}" for c in self.channel_conflicts)
            raise RegistryError(
                f"channel {listed} left alone in {self.destination}: "
                f"{self.channel_conflicts[0].detail}"
            )


def export(
    refs: Sequence[str],
    *,
    registry: RegistryReader,
    out: Path,
    progress: Progress | None = None,
    base: str | None = None,
) -> list[Artifact]:
    """Write ``name[@version]`` (the latest when no version is given) of each ref into the
    new archive ``out``, replacing any file there; returns the versions exported.

    ``base`` (``name@version``, with one ref of the same model) makes a delta: the files
    the base version has are left out (see :meth:`ArchiveWriter.add_artifact`).

    The OCI manifests are copied as the registry serves them, so every version keeps its
    manifest digest; every blob is checked against its digest on the way. Every channel
    document of the models exported goes along unchanged. Signatures are not checked
    here: whoever installs from the archive does that.

    Raises:
        UsageError: no refs, a malformed ref, or ``out`` does not end in ``.tar`` or is
            not in an existing directory.
        NotFoundError: a model or version is not in ``registry``.
        TamperedError: a blob differs from its descriptor; more than
            :data:`~packager.registry.attachments.MAX_ATTACHMENTS_PER_KIND` documents of
            one kind (or too many of any kinds) are attached to a version.
        RegistryError: the registry cannot be read, or the archive cannot be written.
    """
    if not refs:
        raise UsageError("name at least one model to export, e.g. iris-classifier@1.0.0")
    _check_archive_path(out)
    say = progress or (lambda _msg: None)
    artifacts: dict[tuple[str, str], Artifact] = {}
    for ref in refs:
        name, version = parse_ref(ref)
        version = version or latest_version(registry, name)
        if (name, version) not in artifacts:
            artifacts[(name, version)] = registry.resolve(name, version)
    delta = None if base is None else _delta_base(base, list(artifacts.values()), registry)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        writer = ArchiveWriter(Path(work))
        for artifact in artifacts.values():
            writer.add_artifact(registry, artifact, files=None, base=delta)
            say(f"exported {artifact.ref} ({artifact.manifest_digest})")
            for found, data in attached_documents(registry, artifact):
                writer.add_document(
                    artifact.name,
                    found.tag,
                    data,
                    artifact_type=attachment_type(found.kind),
                    subject=subject_of(artifact),
                )
                say(f"exported {found.kind} {found.tag} of {artifact.ref}")
        for name in dict.fromkeys(name for name, _ in artifacts):
            for tag in _channel_tags(registry, name):
                writer.add_document(
                    name,
                    tag,
                    _read_document(registry, name, tag),
                    artifact_type=CHANNEL_ARTIFACT_TYPE,
                )
                say(f"exported channel {name}@{tag.removeprefix(TAG_PREFIX)}")
        for tag, data in trust_documents(registry):
            writer.add_document(TRUST_REPOSITORY, tag, data, artifact_type=trust_document_type(tag))
            say(f"exported root of trust document {tag}")
        writer.write(out)
    return list(artifacts.values())


def _delta_base(base: str, artifacts: list[Artifact], registry: RegistryReader) -> Artifact:
    """The base version of a delta export, resolved.

    Raises:
        UsageError: several versions exported, or a base of another model or without version.
        NotFoundError: the base is not in the registry.
    """
    name, version = parse_ref(base)
    if len(artifacts) != 1 or version is None or name != artifacts[0].name:
        raise UsageError(
            "--base NAME@VERSION makes a delta of one version of the same model: "
            "`packager export NAME@NEW --base NAME@OLD -o delta.tar`"
        )
    return registry.resolve(name, version)


def mirror_mode(
    policy: Callable[[], TrustPolicy], *, keys_given: bool, no_verify: bool
) -> VerifyMode:
    """The verify mode ``mirror`` runs in, from its options: ``--no-verify`` checks no
    signature (digests still are); otherwise ``policy()`` decides, the trust policy an
    install would use with the ``--key`` files added (so its revocations still apply).

    Raises:
        UsageError: ``--key`` with ``--no-verify``; as ``policy()`` (no key and no policy).
    """
    if no_verify:
        if keys_given:
            raise UsageError("--key and --no-verify contradict each other: drop one of them")
        return Unverified("--no-verify")
    return Trusted(policy())


def mirror(
    source: RegistryReader,
    destination: Registry,
    refs: Sequence[str] = (),
    *,
    mode: VerifyMode,
    progress: Progress | None = None,
) -> MirrorReport:
    """Copy versions from ``source`` to ``destination``, verifying each one first.

    ``refs`` are ``name`` (every version of it) or ``name@version``; none means every
    version of every model in ``source``. See the module docstring for skips, conflicts,
    failures and channel documents. Each version is resolved once, and exactly the bytes
    verified against that resolution are copied.

    Raises:
        UsageError: a malformed ref.
        NotFoundError: a named model or version is not in ``source``.
        VerificationError: a version or channel document fails verification (bad or
            untrusted signature, tampered or missing files, wrong model); in an unverified
            ``mode``, a blob that differs from its digest, a file set other than the
            manifest's or a manifest of another model or version; more than
            :data:`~packager.registry.attachments.MAX_ATTACHMENTS_PER_KIND` documents of
            one kind (or too many of any kinds) attached to a version in either registry.
        RegistryError: a registry cannot be read or written; the documents of a version
            in both registries together are more than that cap.

    Documents over a cap are refused before anything at all is written: a mirror that
    left a version without some of its documents might drop a revocation.
    """
    say = progress or (lambda _msg: None)
    wanted = _select(source, refs)
    copied: list[Mirrored] = []
    skipped: list[Mirrored] = []
    conflicts: list[Mirrored] = []
    channels: list[MirroredChannel] = []
    # The manifest.json digest each version processed here has in the destination now.
    held: dict[tuple[str, str], Digest | None] = {}
    with (
        tempfile.TemporaryDirectory(prefix=".packager-mirror.") as tmp,
        destination.batch(),
    ):
        work = Path(tmp)
        sink = _Sink(destination)
        # Every version is resolved and its documents listed and checked against the
        # destination before anything is written.
        plans = [_plan(source, destination, sink, name, version) for name, version in wanted]
        for i, (artifact, attached, present) in enumerate(plans):
            name, version = artifact.name, artifact.version
            if present is not None:
                entry = Mirrored(name, version, artifact.manifest_digest, present.manifest_digest)
                held[(name, version)] = present.files[MANIFEST].digest
                if _same_content(artifact, present):
                    skipped.append(entry)
                    say(f"skipped {artifact.ref}: already in {destination.location}")
                    _carry_attachments(source, artifact, attached, destination, present, say)
                else:
                    conflicts.append(entry)
                    say(
                        f"conflict: {artifact.ref} is in {destination.location} with other "
                        f"content ({present.manifest_digest}); left alone"
                    )
                continue
            bundle = work / f"version-{i}"
            bundle.mkdir()
            fetched = fetch_verified(Source(source, mode, say), artifact, bundle)
            copy = sink.add(source, artifact, bundle, fetched.manifest)
            digest = copy.manifest_digest
            shutil.rmtree(bundle)
            _carry_attachments(source, artifact, attached, destination, copy, say)
            held[(name, version)] = fetched.manifest_digest
            copied.append(Mirrored(name, version, artifact.manifest_digest, digest))
            say(f"copied {artifact.ref} to {destination.location} ({digest})")
        for name in dict.fromkeys(name for name, _ in wanted):
            for tag in _channel_tags(source, name):
                outcome = _mirror_channel(source, sink, name, tag, mode=mode, held=held)
                channels.append(outcome)
                say(f"channel {name}@{outcome.channel}: {outcome.outcome}, {outcome.detail}")
        for tag in copy_trust_documents(source, destination):
            say(f"copied root of trust document {tag}")
    return MirrorReport(
        source=source.location,
        destination=destination.location,
        verified=isinstance(mode, Trusted),
        copied=tuple(copied),
        skipped=tuple(skipped),
        conflicts=tuple(conflicts),
        channels=tuple(channels),
    )


def _plan(
    source: RegistryReader, destination: RegistryReader, sink: _Sink, name: str, version: str
) -> tuple[Artifact, list[Attachment], Artifact | None]:
    """The version in ``source``, the documents attached to it there and the version in
    the destination (None if absent); refuses a version whose documents the destination
    could not hold beside its own (installs from it would then refuse the version).

    Raises:
        TamperedError: too many documents in either registry.
        RegistryError: too many in both together; a registry cannot be read.
    """
    artifact = source.resolve(name, version)
    attached = list_attachments(source, artifact)
    present = sink.existing(name, version)
    if present is None or _same_content(artifact, present):
        # A new version's copy gets the source's OCI manifest digest when the destination
        # encodes it alike (publish does, for every bundle packager made).
        missing_attachments(destination, present or artifact, attached, source=source.location)
    return artifact, attached, present


def _carry_attachments(
    source: RegistryReader,
    artifact: Artifact,
    attached: list[Attachment],
    destination: Registry,
    copy: Artifact,
    say: Progress,
) -> None:
    """Attach to the copy the signed documents of the source version it lacks (approvals
    and the like are judged by installers, with their own policy)."""
    for found in copy_attachments(source, artifact, destination, copy, listed=attached):
        say(f"copied {found.kind} {found.tag} of {artifact.ref}")


def _channel_tags(registry: RegistryReader, name: str) -> list[str]:
    """The tags of ``name``'s channel documents in ``registry``."""
    return [tag for tag in registry.tags(name) if tag.startswith(TAG_PREFIX)]


def _read_document(registry: RegistryReader, name: str, tag: str) -> bytes:
    return registry.get_document(
        name, tag, artifact_type=CHANNEL_ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES
    )


def _mirror_channel(
    source: RegistryReader,
    sink: _Sink,
    name: str,
    tag: str,
    *,
    mode: VerifyMode,
    held: dict[tuple[str, str], Digest | None],
) -> MirroredChannel:
    """Copy one channel document unless the destination should keep its own; unverified,
    only where the destination has none."""
    channel = tag.removeprefix(TAG_PREFIX)
    data = _read_document(source, name, tag)
    present = sink.document(name, tag)
    if present == data:
        return MirroredChannel(name, channel, "skipped", "already there")
    if isinstance(mode, Unverified):
        if present is not None:
            return MirroredChannel(
                name,
                channel,
                "conflict",
                "the destination has another document; without "
                "--key the newer one cannot be told: left alone",
            )
        sink.add_document(name, tag, data)
        return MirroredChannel(name, channel, "copied", f"not verified ({mode.reason})")
    doc, _ = check_channel_document(data, mode.policy, name=name, channel=channel)
    what = f"sequence {doc.sequence} ({doc.version})"
    if present is not None:
        try:
            kept: Channel | None = check_channel_document(
                present, mode.policy, name=name, channel=channel
            )[0]
        except VerificationError:
            kept = None  # not a document these keys vouch for: replaced
        if kept is not None and kept.sequence == doc.sequence:
            return MirroredChannel(
                name, channel, "conflict", f"the destination has another {what}: left alone"
            )
        if kept is not None and kept.sequence > doc.sequence:
            return MirroredChannel(
                name, channel, "skipped", f"the destination has the newer sequence {kept.sequence}"
            )
    key = (name, doc.version)
    if key not in held:
        existing = sink.existing(name, doc.version)
        held[key] = None if existing is None else existing.files[MANIFEST].digest
    if held[key] != doc.manifest_digest:
        return MirroredChannel(
            name, channel, "skipped", f"{what} names a bundle the destination does not hold"
        )
    sink.add_document(name, tag, data)
    return MirroredChannel(name, channel, "copied", what)


def _check_archive_path(out: Path) -> None:
    if not out.name.endswith(ARCHIVE_SUFFIX):
        raise UsageError(f"{out}: archive names end in {ARCHIVE_SUFFIX}, so --registry knows them")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory; create it first")


def _select(source: RegistryReader, refs: Sequence[str]) -> list[tuple[str, str]]:
    """The (name, version) pairs to copy, in order, each once."""
    wanted: dict[tuple[str, str], None] = {}
    if not refs:
        for name in source.names():
            wanted.update(dict.fromkeys((name, v) for v in source.versions(name)))
    for ref in refs:
        name, version = parse_ref(ref)
        versions = [version] if version is not None else source.versions(name)
        if not versions:
            raise NotFoundError(f"no version of {name} in {source.location}")
        wanted.update(dict.fromkeys((name, v) for v in versions))
    return list(wanted)


def _same_content(a: Artifact, b: Artifact) -> bool:
    # The same files are the same signed bundle, even when another registry encoded the
    # OCI manifest differently (and so gave it another digest).
    return a.manifest_digest == b.manifest_digest or _file_map(a) == _file_map(b)


def _file_map(artifact: Artifact) -> dict[str, tuple[Digest, int]]:
    return {path: (desc.digest, desc.size) for path, desc in artifact.files.items()}


class _Sink:
    """The destination as the mirror sees it: each version is published as soon as it is
    verified (an archive rebuilds itself once, when the mirror's batch ends)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._versions: dict[str, list[str]] = {}

    def existing(self, name: str, version: str) -> Artifact | None:
        """The destination's artifact of ``name``@``version``, or None."""
        if name not in self._versions:
            try:
                self._versions[name] = self._registry.versions(name)
            except NotFoundError:  # a registry may answer "no such repository"
                self._versions[name] = []
        if version not in self._versions[name]:
            return None
        return self._registry.resolve(name, version)

    def add(
        self, source: RegistryReader, artifact: Artifact, bundle: Path, manifest: Manifest
    ) -> Artifact:
        """Store a version fetched into ``bundle``; returns it as the destination holds it."""
        return self._registry.publish(bundle, manifest)

    def document(self, name: str, tag: str) -> bytes | None:
        """The destination's channel document under ``tag``, or None."""
        try:
            return _read_document(self._registry, name, tag)
        except NotFoundError:
            return None

    def add_document(self, name: str, tag: str, data: bytes) -> None:
        """Store a channel document under ``tag``, replacing the destination's."""
        self._registry.put_document(name, tag, data, artifact_type=CHANNEL_ARTIFACT_TYPE)
