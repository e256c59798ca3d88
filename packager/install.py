"""Fetch, verify, stage, smoke-test and atomically install a bundle on the instance.

The order follows the design's verification order; nothing from the registry is
trusted before the signature over it is checked, and nothing is written outside
the staging directory until every check has passed.

``name@channel`` is resolved through the channel's signed document first (see
:mod:`packager.core.channel`): signer allowed for the model by the trust policy, not
expired, sequence not lower than the last one accepted; the bundle it names must then be
signed with exactly the manifest digest the document names (mix-and-match). What was
accepted is recorded in state.db in the same transaction as the install.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from packager.core import signature
from packager.core.channel import (
    ARTIFACT_TYPE as CHANNEL_ARTIFACT_TYPE,
)
from packager.core.channel import (
    CHANNEL_RE,
    MAX_CHANNEL_BYTES,
    Channel,
    Seen,
    channel_tag,
    verify_channel,
)
from packager.core.compare import Comparison
from packager.core.digests import Digest
from packager.core.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    Manifest,
    check_name,
    check_version,
    parse_manifest,
)
from packager.core.policy import TrustPolicy
from packager.core.semver import is_semver, semver_key
from packager.core.signature import SignedStatement
from packager.core.verify import signed_digest, verify_manifest
from packager.errors import (
    NotFoundError,
    PackagerError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
)
from packager.registry.base import Artifact, Descriptor, Registry
from packager.store import ChannelRecord, Following, Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

Progress = Callable[[str], None]
UNVERIFIED = "unverified"
# Files fetched at once: enough to keep the cores and the network busy with a bundle of
# many files, few enough to be a polite client of a shared registry.
PARALLEL_FETCHES = 4


@dataclass(frozen=True)
class InstallResult:
    """What an install did. ``smoke_test`` is None when nothing was installed: the channel
    named the version already current. ``channel`` is the document installed through.
    ``smoke_seconds`` and ``smoke_peak_rss`` (bytes) are the smoke test's wall time and the
    peak memory of the child process it ran in (see :mod:`packager.smoke`)."""

    name: str
    version: str
    directory: Path
    manifest_sha256: str
    previous: str | None
    smoke_test: Comparison | None
    channel: Channel | None = None
    smoke_seconds: float | None = None
    smoke_peak_rss: int | None = None


@dataclass(frozen=True)
class Target:
    """What an install asks for: a version, a channel, or neither (the latest release)."""

    name: str
    version: str | None = None
    channel: str | None = None


def parse_target(ref: str) -> Target:
    """``name``, ``name@version``, or ``name@channel`` (what follows @ is not SemVer).

    Raises:
        UsageError: the name is malformed, or what follows @ is neither a version nor a
            channel name.
    """
    name, sep, rest = ref.partition("@")
    check_name(name)
    if not sep:
        return Target(name)
    if is_semver(rest):
        return Target(name, version=rest)
    if CHANNEL_RE.fullmatch(rest):
        return Target(name, channel=rest)
    raise UsageError(
        f"{rest!r} in {ref!r} is neither a version (Semantic Versioning, e.g. 1.2.0) nor a "
        "channel (a lowercase word, e.g. stable)"
    )


def follow_reference(ref: str | None) -> str | None:
    """The registry reference recorded for a followed channel: None for the default
    registry, a URL as given, or a path made absolute (``update`` may run elsewhere).

    Raises:
        UsageError: a URL carrying credentials (they are never stored).
    """
    if ref is None:
        return None
    if "://" in ref:
        parts = urlsplit(ref)
        if parts.username is not None or parts.password is not None:
            raise UsageError(
                "put no credentials in the registry reference: use --username and "
                "--password-stdin, or PACKAGER_REGISTRY_USERNAME/PASSWORD"
            )
        return ref
    return str(Path(ref).expanduser().absolute())


def read_channel(
    registry: Registry,
    name: str,
    channel: str,
    *,
    keys: Sequence[EllipticCurvePublicKey],
    now: datetime,
    last_seen: Seen | None,
) -> tuple[Channel, str]:
    """Fetch ``name@channel``'s document (capped) and verify it; returns it and the hint of
    the key that signed it.

    Raises:
        NotFoundError: the registry has no such channel.
        VerificationError: as :func:`packager.core.channel.verify_channel` (untrusted
            signer, expired, rollback, equivocation, wrong model or channel, malformed).
        RegistryError: the registry cannot be read.
    """
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
            f"promotes a version with `packager promote {name}@VERSION --channel {channel}`"
        ) from e
    return verify_channel(
        data, public_keys=list(keys), name=name, channel=channel, now=now, last_seen=last_seen
    )


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@version`` -> (name, version or None).

    Raises:
        UsageError: the name or version is malformed.
    """
    name, sep, version = ref.partition("@")
    check_name(name)
    if not sep:
        return name, None
    return name, check_version(version)


def latest_version(registry: Registry, name: str) -> str:
    """The highest release (pre-releases only when there is no release).

    Raises:
        NotFoundError: the registry has no version of ``name``.
    """
    versions = registry.versions(name)
    if not versions:
        raise NotFoundError(
            f"no version of {name} in {registry.location}; run `packager search` to list models"
        )
    releases = [v for v in versions if "-" not in v.split("+")[0]]
    return max(releases or versions, key=semver_key)


def install(
    ref: str,
    *,
    registry: Registry,
    trust: TrustPolicy | None,
    store: Store,
    now: datetime,
    registry_ref: str | None = None,
    allow_downgrade: bool = False,
    insecure_skip_verify: bool = False,
    progress: Progress | None = None,
) -> InstallResult:
    """Install ``name[@version|@channel]`` from ``registry`` after verifying it against
    ``trust``.

    ``trust`` may be None only together with ``insecure_skip_verify`` and a version:
    then the signature is not checked (digests still are) and the audit log says so.
    Through a channel, the model then follows it: ``registry_ref`` (the reference the
    user gave, None for the default registry) is recorded for ``packager update``.
    Installing by version stops following. Every refusal is written to the audit log
    before it is raised ("channel" entries for installs through a channel).

    Raises:
        UsageError: bad reference; no trust policy without insecure_skip_verify, or at
            all for a channel; credentials in ``registry_ref``.
        VerificationError: bad or untrusted signature, tampered or missing files, wrong
            model, a version below the rollback floor or the policy's minimum; for a
            channel also an untrusted signer, an expired document (ExpiredError), a
            sequence lower than seen (RollbackError), the same sequence naming another
            bundle, or a bundle other than the one the document names (TamperedError).
        NotFoundError: no such version or channel.
        RegistryError: the registry cannot be read.
        IncompatibleModelError: the runtime cannot run the model or the smoke test failed.
    """
    target = parse_target(ref)
    name, version = target.name, target.version
    if trust is None and not insecure_skip_verify:
        raise UsageError(
            "no trusted keys: run `packager trust add-key NAME cosign.pub` "
            "(or pass --key cosign.pub); refusing to install unverified models"
        )
    say = progress or (lambda _msg: None)
    if target.channel is not None:
        if trust is None:
            raise UsageError(
                "a channel is only as trustworthy as its signature: install through a "
                "channel with a trust policy, not --insecure-skip-verify"
            )
        return _install_channel(
            name,
            target.channel,
            registry=registry,
            registry_ref=registry_ref,
            trust=trust,
            store=store,
            now=now,
            allow_downgrade=allow_downgrade,
            say=say,
        )
    try:
        keys = None if trust is None else trust.keys_for(name)
        revoked = {} if trust is None else trust.revoked_hints()
        if version is None:
            version = latest_version(registry, name)
        if trust is not None:
            trust.check_minimum(name, version)
        with store.lock(name):
            return _install_locked(
                name,
                version,
                registry=registry,
                keys=keys,
                revoked=revoked,
                store=store,
                now=now,
                allow_downgrade=allow_downgrade,
                say=say,
            )
    except PackagerError as e:
        store.audit(
            action="install",
            outcome="refused",
            now=now,
            name=name,
            version=version,
            detail=f"{type(e).__name__}: {e}",
        )
        raise


def _install_channel(
    name: str,
    channel: str,
    *,
    registry: Registry,
    registry_ref: str | None,
    trust: TrustPolicy,
    store: Store,
    now: datetime,
    allow_downgrade: bool,
    say: Progress,
) -> InstallResult:
    version: str | None = None
    try:
        following = Following(name, channel, follow_reference(registry_ref))
        keys = trust.keys_for(name)
        with store.lock(name):
            seen = store.channel_seen(name, channel)
            doc, hint = read_channel(registry, name, channel, keys=keys, now=now, last_seen=seen)
            version = doc.version
            say(
                f"channel {name}@{channel}: sequence {doc.sequence} names {version} "
                f"(key {hint[:16]}, expires {doc.expires.isoformat()})"
            )
            trust.check_minimum(name, version)
            # `update` runs often: a document seen before is not audited again.
            new = seen is None or doc.sequence > seen.sequence
            record = ChannelRecord(
                following,
                Seen(doc.sequence, doc.version, doc.manifest_digest),
                detail=(
                    f"{channel} sequence {doc.sequence}: {version} ({doc.manifest_digest}), "
                    f"key {hint}, issued {doc.issued.isoformat()}, expires "
                    f"{doc.expires.isoformat()}, from {registry.location}"
                )
                if new
                else None,
            )
            current = store.current_version(name)
            if current == version and store.manifest_digest(name, version) == doc.manifest_digest:
                store.record_channel(record, now=now)
                say(f"{name}@{version} is already current")
                return InstallResult(
                    name,
                    version,
                    store.installed_dir(name, version),
                    doc.manifest_digest.hex,
                    current,
                    None,
                    doc,
                )
            return _install_locked(
                name,
                version,
                registry=registry,
                keys=keys,
                revoked=trust.revoked_hints(),
                store=store,
                now=now,
                allow_downgrade=allow_downgrade,
                say=say,
                channel=(doc, record),
            )
    except PackagerError as e:
        store.audit(
            action="channel",
            outcome="refused",
            now=now,
            name=name,
            version=version,
            detail=f"{channel}: {type(e).__name__}: {e}",
        )
        raise


def _install_locked(
    name: str,
    version: str,
    *,
    registry: Registry,
    keys: Sequence[EllipticCurvePublicKey] | None,
    revoked: Mapping[str, str],
    store: Store,
    now: datetime,
    allow_downgrade: bool,
    say: Progress,
    channel: tuple[Channel, ChannelRecord] | None = None,
) -> InstallResult:
    from packager.smoke import run_smoke_test

    floor = store.floor(name)
    if floor is not None and semver_key(version) < semver_key(floor) and not allow_downgrade:
        raise RollbackError(
            f"refusing to install {name}@{version}: {floor} was installed before "
            f"(rollback floor); use `packager rollback {name}` for an installed version, "
            "or --allow-downgrade if you really mean it"
        )
    doc, record = channel if channel is not None else (None, None)
    with store.staging(name) as staged:
        fetched = fetch_verified(
            name,
            version,
            registry=registry,
            keys=keys,
            dest=staged,
            say=say,
            revoked=revoked,
            expected_manifest=None if doc is None else doc.manifest_digest,
        )
        manifest = fetched.manifest

        # 5. Can this instance run it, and does it still give the recorded answers?
        smoke = run_smoke_test(staged, manifest)
        comparison = smoke.comparison
        say(
            f"smoke test passed: {comparison.rows} test vectors, "
            f"max abs diff {comparison.max_abs_diff:.3g} "
            f"({smoke.seconds:.2f} s, {smoke.peak_rss / 2**20:.0f} MiB in a child process)"
        )

        # 6. Only now move it into place.
        previous = store.current_version(name)
        directory = store.commit(
            staged,
            name=name,
            version=version,
            manifest_sha256=fetched.manifest_digest.hex,
            source=registry.location,
            now=now,
            channel=record,
        )
    via = "" if doc is None else f"; channel {doc.channel} sequence {doc.sequence}"
    store.audit(
        action="install",
        outcome="ok" if keys is not None else "insecure",
        now=now,
        name=name,
        version=version,
        detail=f"from {registry.location}; manifest {fetched.manifest_digest}; "
        f"key {fetched.key_hint}; previous {previous or '-'}{via}",
    )
    return InstallResult(
        name,
        version,
        directory,
        fetched.manifest_digest.hex,
        previous,
        comparison,
        doc,
        smoke_seconds=smoke.seconds,
        smoke_peak_rss=smoke.peak_rss,
    )


@dataclass(frozen=True)
class Fetched:
    """A bundle fetched into a directory and verified (steps 1-4 of the verification order)."""

    manifest: Manifest
    manifest_digest: Digest
    key_hint: str
    directory: Path


def fetch_verified(
    name: str,
    version: str,
    *,
    registry: Registry,
    keys: Sequence[EllipticCurvePublicKey] | None,
    dest: Path,
    say: Progress | None = None,
    revoked: Mapping[str, str] | None = None,
    expected_manifest: Digest | None = None,
) -> Fetched:
    """Fetch ``name@version`` into the empty directory ``dest``, verifying as it goes.

    Nothing is trusted before the signature over it is checked: the signature first
    (size-capped), then manifest.json against its signed digest, then the file set,
    then every file streamed with its signed size as a cap and its digest checked (several
    files at once: see :func:`_fetch_files`).

    ``keys`` None skips the signature check (--insecure-skip-verify); ``revoked``
    maps hints of revoked keys to their names, to refuse them by name;
    ``expected_manifest`` is the manifest.json digest a channel document names: a
    bundle signed with another one is refused before anything else is fetched.

    Raises:
        VerificationError: bad signature, tampered or missing files, wrong model, a
            manifest other than ``expected_manifest`` (TamperedError: mix-and-match).
        RegistryError: the registry cannot be read.
    """
    say = say or (lambda _msg: None)
    artifact = registry.resolve(name, version)
    say(f"resolved {name}@{version} in {registry.location} ({artifact.manifest_digest})")

    # 1. The signature, size-capped, verified before anything else is read.
    if keys is None:
        sig = b""
        statement = _unverified_statement(registry, artifact)
        say("WARNING: signature NOT verified (--insecure-skip-verify); digests still checked")
    else:
        sig_desc = _descriptor(artifact.files, SIGNATURE)
        sig = registry.read_blob(name, sig_desc, max_size=signature.MAX_SIGNATURE_BYTES)
        claimed = signature.claimed_key_hint(sig)
        if revoked and claimed is not None and claimed in revoked:
            raise UntrustedError(
                f"model.sig was made with the revoked key {revoked[claimed]!r}; "
                "ask the publisher for a version signed with a current key"
            )
        statement = signature.verify(sig, public_keys=keys)
        say(f"signature verified (key {statement.key_hint[:16]})")

    # 2. The manifest: must be the signed one, for the model and version asked for.
    manifest_digest = signed_digest(statement, MANIFEST)
    if expected_manifest is not None and manifest_digest != expected_manifest:
        raise TamperedError(
            f"mix-and-match: the channel names {name}@{version} with manifest.json "
            f"{expected_manifest}, but the bundle the registry serves as {version} is signed "
            f"with {manifest_digest}; do not use it"
        )
    manifest_desc = _descriptor(artifact.files, MANIFEST)
    if manifest_desc.digest != manifest_digest:
        raise TamperedError(
            "the registry serves a manifest.json that is not the signed one; "
            "do not use this artifact"
        )
    manifest_bytes = registry.read_blob(name, manifest_desc, max_size=MAX_MANIFEST_BYTES)
    # 3. verify_manifest also checks signed resources == manifest files + manifest.json.
    manifest = verify_manifest(statement, manifest_bytes, name=name, version=version)
    served = set(artifact.files) - {SIGNATURE}
    signed = set(statement.resources)
    if served != signed:
        odd = sorted(served ^ signed)[0]
        raise TamperedError(
            f"the registry serves a different file set than was signed ({odd}); "
            "do not use this artifact"
        )

    # 4. Every file, capped at its signed size and checked against its signed digest.
    for entry in manifest.files:
        desc = artifact.files[entry.path]
        if desc.digest != entry.digest or desc.size != entry.size:
            raise TamperedError(
                f"the registry serves {entry.path} as {desc.digest} ({desc.size} bytes) "
                f"but the signed manifest says {entry.digest} ({entry.size} bytes)"
            )
    _fetch_files(
        registry,
        name,
        {entry.path: artifact.files[entry.path] for entry in manifest.files},
        dest,
        say,
    )
    (dest / MANIFEST).write_bytes(manifest_bytes)
    if sig:
        (dest / SIGNATURE).write_bytes(sig)
    return Fetched(manifest, manifest_digest, statement.key_hint, dest)


def _fetch_files(
    registry: Registry, name: str, files: Mapping[str, Descriptor], dest: Path, say: Progress
) -> None:
    """Fetch ``files`` (path -> descriptor) into ``dest``, several at once.

    Each file is fetched (size-capped, digest-checked) by the registry on a thread of its
    own, PARALLEL_FETCHES at a time, so that the transfers, copies and hashing of several
    files overlap. At the first failure the fetches not started are dropped, the running
    ones are waited for, every file fetched is removed, and the failure of the first file
    (in ``files`` order) that failed is raised.

    Raises:
        TamperedError, RegistryError: as :meth:`Registry.fetch_blob`.
    """
    order = list(files)
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(PARALLEL_FETCHES, len(files))), thread_name_prefix="packager-fetch"
    )
    futures = {
        pool.submit(registry.fetch_blob, name, desc, dest / path): path
        for path, desc in files.items()
    }
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
            say(f"fetched {path} ({files[path].size} bytes, sha256 ok)")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for future, path in futures.items():
            # A failed fetch removed its own file; a cancelled one created none.
            if not future.cancelled() and future.exception() is None:
                (dest / path).unlink(missing_ok=True)
        raise
    finally:
        pool.shutdown(wait=True)


def _unverified_statement(registry: Registry, artifact: Artifact) -> SignedStatement:
    """What --insecure-skip-verify trusts instead of a signature: the manifest as served."""
    desc = _descriptor(artifact.files, MANIFEST)
    manifest = parse_manifest(registry.read_blob(artifact.name, desc, max_size=MAX_MANIFEST_BYTES))
    resources = {entry.path: entry.digest for entry in manifest.files}
    resources[MANIFEST] = desc.digest
    return SignedStatement(f"{artifact.name}-{artifact.version}", resources, UNVERIFIED)


def _descriptor(files: Mapping[str, Descriptor], path: str) -> Descriptor:
    try:
        return files[path]
    except KeyError:
        raise TamperedError(
            f"the registry artifact has no {path}; it is not a signed bundle"
        ) from None


def rollback(name: str, *, store: Store, now: datetime) -> str:
    """Make the previously active installed version current again; returns it. The model
    stops following its channel, if it followed one.

    Raises:
        NotFoundError: there is no other installed version to go back to.
    """
    with store.lock(name):
        target = store.previous_version(name)
        if target is None:
            raise NotFoundError(f"{name} has no previous installed version to roll back to")
        current = store.current_version(name)
        store.activate(name, target, now=now)
        # Following a channel would undo the rollback at the next `packager update`.
        store.unfollow(name, now=now, reason=f"rolled back to {target}")
    store.audit(
        action="rollback",
        outcome="ok",
        now=now,
        name=name,
        version=target,
        detail=f"from {current}",
    )
    return target


def remove(name: str, version: str, *, store: Store, now: datetime) -> None:
    """Delete an installed, non-current version.

    Raises:
        NotFoundError, UsageError: see :meth:`Store.remove`.
    """
    with store.lock(name):
        store.remove(name, version)
    store.audit(action="remove", outcome="ok", now=now, name=name, version=version)


def pull(
    ref: str,
    *,
    registry: Registry,
    keys: Sequence[EllipticCurvePublicKey],
    out_dir: Path,
    progress: Progress | None = None,
) -> Path:
    """Fetch and verify ``name[@version]`` into ``out_dir/<name>-<version>`` without installing.

    The bundle is assembled in a temporary directory beside the destination and
    renamed into place only once verified.

    Raises:
        UsageError: bad reference or no keys.
        VerificationError, RegistryError: as for :func:`fetch_verified`.
    """
    name, version = parse_ref(ref)
    if not keys:
        raise UsageError("no trusted key: pass --key PATH to the publisher's cosign.pub")
    if version is None:
        version = latest_version(registry, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}-{version}"
    if final.exists():
        raise UsageError(f"{final} already exists; remove it or pull into another directory")
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        fetch_verified(name, version, registry=registry, keys=keys, dest=work, say=progress)
        work.chmod(0o755)
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
