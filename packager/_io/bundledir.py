"""Reading a bundle directory on disk: its files, its manifest, its signature checked."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packager._io.hashing import FileHasher
from packager.core.manifest import MANIFEST, SIGNATURE, Manifest, parse_manifest
from packager.errors import TamperedError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey


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


def verify_bundle(
    bundle: Path,
    *,
    keys: Sequence[EllipticCurvePublicKey] | Callable[[], Sequence[EllipticCurvePublicKey]],
) -> Manifest:
    """Verify a bundle directory: signature, manifest, and every file's digest.

    ``keys`` may be a function returning them, called once hashing has started: loading
    keys (and the cryptography modules that read them) then overlaps the hashing.

    Raises:
        UsageError: not a bundle directory, no keys, or (from ``keys``) unreadable keys.
        VerificationError: unsigned, untrusted, tampered, missing or extra files.
    """
    files = read_bundle_files(bundle)
    try:
        sig = (bundle / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise TamperedError(
            f"{bundle.name} has no {SIGNATURE}: it is unsigned; re-package it with --key"
        ) from None
    # Every file is hashed from the start, on every core, while the signature and the
    # manifest are checked (and the modules that check them imported: they cost
    # `packager verify` more than hashing a small bundle does); the digests are compared
    # only once the signature holds. A failed check leaves the block, which stops the
    # hashing rather than waiting for it.
    with FileHasher(files.values()) as hashing:
        from packager.core import signature
        from packager.core.verify import check_files, verify_manifest

        statement = signature.verify(sig, public_keys=keys() if callable(keys) else keys)
        if MANIFEST not in files:
            raise TamperedError(f"{bundle.name} has no {MANIFEST}")
        manifest = verify_manifest(statement, files[MANIFEST].read_bytes())
        hashed = hashing.results()
    check_files(statement, {path: hashed[source][0] for path, source in files.items()})
    for entry in manifest.files:
        if hashed[files[entry.path]][1] != entry.size:
            raise TamperedError(f"{entry.path}: size differs from manifest.json")
    return manifest


def read_manifest_unverified(bundle: Path) -> Manifest:
    """The manifest of a bundle directory, validated but NOT signature-checked (for inspect)."""
    try:
        return parse_manifest((bundle / MANIFEST).read_bytes())
    except OSError as e:
        raise UsageError(f"{bundle} is not a bundle directory: {e.strerror}") from e
