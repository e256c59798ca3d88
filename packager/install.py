"""Fetch, verify, stage, smoke-test and atomically install a bundle on the instance.

The order follows the design's verification order; nothing from the registry is
trusted before the signature over it is checked, and nothing is written outside
the staging directory until every check has passed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packager.core import signature
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
from packager.core.semver import semver_key
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
from packager.store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

Progress = Callable[[str], None]
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class InstallResult:
    name: str
    version: str
    directory: Path
    manifest_sha256: str
    previous: str | None
    smoke_test: Comparison


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
    allow_downgrade: bool = False,
    insecure_skip_verify: bool = False,
    progress: Progress | None = None,
) -> InstallResult:
    """Install ``name[@version]`` from ``registry`` after verifying it against ``trust``.

    ``trust`` may be None only together with ``insecure_skip_verify``: then the
    signature is not checked (digests still are) and the audit log says so.
    Every refusal is written to the audit log before it is raised.

    Raises:
        UsageError: bad reference, or no trust policy without insecure_skip_verify.
        VerificationError: bad or untrusted signature, tampered or missing files, wrong
            model, a version below the rollback floor or the policy's minimum.
        RegistryError: the registry cannot be read.
        IncompatibleModelError: the runtime cannot run the model or the smoke test failed.
    """
    name, version = parse_ref(ref)
    if trust is None and not insecure_skip_verify:
        raise UsageError(
            "no trusted keys: run `packager trust add-key NAME cosign.pub` "
            "(or pass --key cosign.pub); refusing to install unverified models"
        )
    say = progress or (lambda _msg: None)
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
) -> InstallResult:
    from packager.runtime import Model, check_compatible

    floor = store.floor(name)
    if floor is not None and semver_key(version) < semver_key(floor) and not allow_downgrade:
        raise RollbackError(
            f"refusing to install {name}@{version}: {floor} was installed before "
            f"(rollback floor); use `packager rollback {name}` for an installed version, "
            "or --allow-downgrade if you really mean it"
        )
    with store.staging(name) as staged:
        fetched = fetch_verified(
            name, version, registry=registry, keys=keys, dest=staged, say=say, revoked=revoked
        )
        manifest = fetched.manifest

        # 5. Can this instance run it, and does it still give the recorded answers?
        check_compatible(manifest)
        comparison = Model(staged, manifest).smoke_test()
        say(
            f"smoke test passed: {comparison.rows} test vectors, "
            f"max abs diff {comparison.max_abs_diff:.3g}"
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
        )
    store.audit(
        action="install",
        outcome="ok" if keys is not None else "insecure",
        now=now,
        name=name,
        version=version,
        detail=f"from {registry.location}; manifest {fetched.manifest_digest}; "
        f"key {fetched.key_hint}; previous {previous or '-'}",
    )
    return InstallResult(
        name, version, directory, fetched.manifest_digest.hex, previous, comparison
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
) -> Fetched:
    """Fetch ``name@version`` into the empty directory ``dest``, verifying as it goes.

    Nothing is trusted before the signature over it is checked: the signature first
    (size-capped), then manifest.json against its signed digest, then the file set,
    then every file streamed with its signed size as a cap and its digest checked.

    ``keys`` None skips the signature check (--insecure-skip-verify); ``revoked``
    maps hints of revoked keys to their names, to refuse them by name.

    Raises:
        VerificationError: bad signature, tampered or missing files, wrong model.
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
        registry.fetch_blob(name, desc, dest / entry.path)
        say(f"fetched {entry.path} ({entry.size} bytes, sha256 ok)")
    (dest / MANIFEST).write_bytes(manifest_bytes)
    if sig:
        (dest / SIGNATURE).write_bytes(sig)
    return Fetched(manifest, manifest_digest, statement.key_hint, dest)


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
    """Make the previously active installed version current again; returns it.

    Raises:
        NotFoundError: there is no other installed version to go back to.
    """
    with store.lock(name):
        target = store.previous_version(name)
        if target is None:
            raise NotFoundError(f"{name} has no previous installed version to roll back to")
        current = store.current_version(name)
        store.activate(name, target, now=now)
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
