"""The verified read path: a bundle or a signed document fetched from any registry kind.

Nothing is trusted before the signature over it is checked: the signature first
(size-capped), then manifest.json against its signed digest, then the file set, then every
file streamed with its signed size as a cap and its digest checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packager.core import signature
from packager.core.channel import ARTIFACT_TYPE as CHANNEL_ARTIFACT_TYPE
from packager.core.channel import MAX_CHANNEL_BYTES, Channel, Seen, channel_tag, verify_channel
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, Manifest, parse_manifest
from packager.core.semver import semver_key
from packager.core.signature import SignedStatement
from packager.core.verify import signed_digest, verify_manifest
from packager.errors import NotFoundError, TamperedError, UntrustedError
from packager.registry.base import Artifact, Descriptor, Registry

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

Progress = Callable[[str], None]


UNVERIFIED = "unverified"


# Files fetched at once: enough to keep the cores and the network busy with a bundle of
# many files, few enough to be a polite client of a shared registry.
PARALLEL_FETCHES = 4


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
