"""Reading a bundle directory on disk: its files, its manifest, its signature checked."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from packager._io.hashing import FileHasher, digest_file
from packager.core.bundlefiles import MANIFEST, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE
from packager.core.shards import Hashed, claimed_shard_size
from packager.errors import PackagerError, TamperedError, UsageError, disk_or

# What only reading the manifest needs (its model, the provenance's file names) is
# imported by the functions that read it: `packager verify` starts hashing without it.
if TYPE_CHECKING:
    from packager.core.digests import Digest
    from packager.core.manifest import Manifest
    from packager.core.policy import Trusted, VerifyMode
    from packager.core.verify import Statement


def read_bundle_files(bundle: Path) -> dict[str, Path]:
    """Every file of a bundle directory but model.sig, by relative path.

    Raises:
        UsageError: not a directory.
        TamperedError: a symlink, subdirectory or other non-regular entry.
    """
    if not bundle.is_dir():
        raise UsageError(f"{bundle} is not a bundle directory")
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(bundle), key=lambda e: e.name):
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            raise TamperedError(
                f"{bundle.name}/{entry.name} is not a regular file; bundles hold regular files only"
            )
        if entry.name != SIGNATURE:
            found[entry.name] = Path(entry.path)
    return found


def verify_bundle(bundle: Path, *, mode: VerifyMode | Callable[[], VerifyMode]) -> Manifest:
    """Verify a bundle directory: signature, manifest, and every file's digest and size
    (see :func:`verify_bundle_signer`)."""
    return verify_bundle_signer(bundle, mode=mode)[0]


def verify_bundle_signer(
    bundle: Path, *, mode: VerifyMode | Callable[[], VerifyMode]
) -> tuple[Manifest, Statement]:
    """Verify a bundle directory: signature, manifest, and every file's digest and size;
    its manifest, and the statement saying who signed it.

    ``mode`` may be a function returning it, called once hashing has started: loading
    keys (and the cryptography modules that read them) then overlaps the hashing. In an
    :class:`~packager.core.policy.Unverified` mode model.sig must still be there, but the
    files are checked against manifest.json only.

    Raises:
        UsageError: not a bundle directory, or (from ``mode``) unreadable keys.
        VerificationError: unsigned, untrusted, tampered, missing or extra files.
    """
    files = read_bundle_files(bundle)
    sig = _read_in_bundle(bundle / SIGNATURE, MAX_SIGNATURE_BYTES)
    if sig is None:
        raise TamperedError(
            f"{bundle.name} has no {SIGNATURE}: it is unsigned; re-package it with --key"
        )
    # Every file is hashed from the start, on every core, while the signature and the
    # manifest are checked (and the modules that check them imported: they cost
    # `packager verify` more than hashing a small bundle does); the digests are compared
    # only once the signature holds. A failed check leaves the block, which stops the
    # hashing rather than waiting for it.
    # A bundle signed by shards has each shard of every file hashed on its own, so that
    # one large file keeps every core busy; the shard size claimed (unverified) only
    # chooses how to hash, the verified statement decides what must match.
    with FileHasher(files.values(), shard_size=claimed_shard_size(sig)) as hashing:
        from packager.core import verify
        from packager.core.manifest import parse_manifest
        from packager.core.policy import Trusted

        if MANIFEST not in files:
            raise TamperedError(f"{bundle.name} has no {MANIFEST}")
        manifest_bytes = _read_in_bundle(files[MANIFEST], MAX_MANIFEST_BYTES) or b""
        chosen = mode() if callable(mode) else mode
        if isinstance(chosen, Trusted):
            # The name only chooses the keys; check_manifest then binds it to the signature.
            name = parse_manifest(manifest_bytes).name
            statement = verify.verify_signature(sig, chosen, name=name)
        else:
            statement = verify.unverified_statement(manifest_bytes, chosen)
        manifest = verify.check_manifest(statement, manifest_bytes)
        try:
            hashed = hashing.all_hashed()
        except OSError as e:
            raise _unreadable(bundle, e) from e
    present = {path: hashed[source] for path, source in files.items()}
    if not statement.signed:
        # manifest.json gives whole-file digests: files hashed by shards are hashed again.
        try:
            present.update(
                {
                    path: _hashed_whole(files[path])
                    for path, found in present.items()
                    if found.whole is None
                }
            )
        except OSError as e:
            raise _unreadable(bundle, e) from e
    verify.check_files(statement, manifest, present)
    return manifest, statement


def read_signed_manifest(
    bundle: Path, mode: Trusted, *, name: str, version: str, delegated: bool = False
) -> tuple[str | None, Manifest, Digest] | None:
    """An installed bundle's model.sig verified against ``mode``'s policy as it is now (keys
    revoked included) and its manifest.json checked against it, for ``name``@``version``;
    returns the signing key's hint, the manifest and its digest. Both read size-capped, no
    other file read. None when the directory holds no model.sig (a version installed
    unverified from an unsigned bundle).

    ``delegated``: a root is pinned, whose delegations (in the registry) may trust keys the
    policy alone does not. The signature, verified at install, is then only checked not to
    have been made with a key or under a CA the policy revokes, and manifest.json read as
    installed, for ``name``@``version``.

    Raises:
        VerificationError: an untrusted or revoked signature, a manifest.json other than
            the signed one, or of another model or version; model.sig or manifest.json
            unreadable (a directory in its place, ...).
        LocalDiskError: this account may not read them.
    """
    from packager.core import signature, verify
    from packager.core.manifest import MAX_MANIFEST_BYTES
    from packager.core.policy import Unverified
    from packager.core.signature import MAX_SIGNATURE_BYTES

    sig = _read_capped(bundle / SIGNATURE, MAX_SIGNATURE_BYTES)
    if sig is None:
        return None
    manifest_bytes = _read_capped(bundle / MANIFEST, MAX_MANIFEST_BYTES) or b""
    if delegated:
        verify.check_no_revoked_signer(sig, mode.policy)
        statement = verify.unverified_statement(manifest_bytes, Unverified("verified at install"))
        signer = signature.claimed_key_hint(sig)
    else:
        statement = verify.verify_signature(sig, mode, name=name)
        signer = statement.signer
    manifest = verify.check_manifest(
        statement, manifest_bytes, name=name, version=version, source="the installed bundle"
    )
    return signer, manifest, verify.signed_digest(statement, MANIFEST)


def _read_capped(path: Path, cap: int) -> bytes | None:
    """At most ``cap`` + 1 bytes of an installed bundle's file (the checks refuse anything
    larger), or None when there is no such file; see :func:`_read_up_to`."""

    def refusal(e: OSError) -> PackagerError:
        message = f"cannot read the installed {path.name} ({path}): {e.strerror or e}"
        return disk_or(TamperedError, message, e)

    return _read_up_to(path, cap, refusal)


def _read_in_bundle(path: Path, cap: int) -> bytes | None:
    """At most ``cap`` + 1 bytes of a bundle directory's file (the checks refuse anything
    larger, without a larger file read into memory first), or None when it is not there."""
    return _read_up_to(path, cap, lambda e: _unreadable(path.parent, e))


def _read_up_to(path: Path, cap: int, refusal: Callable[[OSError], PackagerError]) -> bytes | None:
    """At most ``cap`` + 1 bytes of ``path``, or None when there is no such file.

    Raises:
        LocalDiskError: this account may not read it.
        TamperedError: it cannot be read otherwise (a directory in its place, ...);
            ``refusal`` makes the error raised.
    """
    try:
        with path.open("rb") as f:
            return f.read(cap + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise refusal(e) from e


def _unreadable(bundle: Path, e: OSError) -> PackagerError:
    """A file of a bundle directory that could not be read whole: the disk refusing, or the
    bundle changing while it was verified."""
    where = Path(e.filename).name if e.filename else None
    reason = e.strerror or str(e)
    what = f"{bundle.name}/{where}" if where else bundle.name
    return disk_or(TamperedError, f"cannot verify {what}: {reason}", e)


def _hashed_whole(path: Path) -> Hashed:
    digest, size = digest_file(path)
    return Hashed(size, (digest,))


def read_manifest_unverified(bundle: Path) -> Manifest:
    """The manifest of a bundle directory, validated but NOT signature-checked (for inspect)."""
    from packager.core.manifest import parse_manifest

    try:
        return parse_manifest((bundle / MANIFEST).read_bytes())
    except OSError as e:
        raise UsageError(f"{bundle} is not a bundle directory: {e.strerror}") from e


def read_provenance_unverified(bundle: Path) -> tuple[bytes, bytes]:
    """The SLSA provenance and the CycloneDX BOM of a bundle directory, NOT
    signature-checked (for inspect: ``packager verify`` checks them).

    Raises:
        UsageError: the bundle carries neither (made before they were written) or they
            cannot be read.
    """
    from packager.core.provenance import PROVENANCE_FILE, SBOM_FILE

    try:
        return (bundle / PROVENANCE_FILE).read_bytes(), (bundle / SBOM_FILE).read_bytes()
    except OSError as e:
        raise UsageError(
            f"{bundle} carries no {PROVENANCE_FILE} and {SBOM_FILE}: {e.strerror}; bundles "
            "packaged before provenance was written have none"
        ) from e
