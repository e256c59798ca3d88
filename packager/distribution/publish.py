"""Publishing a bundle directory to a registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from packager._io.bundledir import read_bundle_files, verify_bundle
from packager._io.hashing import digest_files
from packager.core.manifest import MANIFEST, SIGNATURE, Manifest, parse_manifest
from packager.errors import TamperedError
from packager.registry.base import Artifact, Registry

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey


def check_bundle_files(bundle: Path) -> Manifest:
    """Without keys: every file present, regular, and matching manifest.json; model.sig present.

    Raises:
        TamperedError: unsigned bundle, or files missing, extra or changed.
        UsageError: not a bundle directory.
    """
    files = read_bundle_files(bundle)
    if not (bundle / SIGNATURE).is_file():
        raise TamperedError(f"{bundle.name} has no {SIGNATURE}: package it with --key first")
    if MANIFEST not in files:
        raise TamperedError(f"{bundle.name} has no {MANIFEST}")
    manifest = parse_manifest(files[MANIFEST].read_bytes())
    listed = {f.path for f in manifest.files}
    present = set(files) - {MANIFEST}
    if listed != present:
        odd = sorted(listed ^ present)[0]
        raise TamperedError(f"{bundle.name}: {odd} is missing or not listed in manifest.json")
    hashed = digest_files(files[entry.path] for entry in manifest.files)
    for entry, (digest, size) in zip(manifest.files, hashed, strict=True):
        if digest != entry.digest or size != entry.size:
            raise TamperedError(f"{entry.path} differs from manifest.json; re-package the model")
    return manifest


def publish_bundle(
    bundle: Path, *, registry: Registry, keys: Sequence[EllipticCurvePublicKey] = ()
) -> Artifact:
    """Check a bundle (its signature too when ``keys`` are given), then publish it.

    Raises:
        VerificationError: the bundle is unsigned, tampered or (with keys) untrusted.
        RegistryError: the registry refused it, e.g. the version exists with other content.
    """
    manifest = verify_bundle(bundle, keys=keys) if keys else check_bundle_files(bundle)
    return registry.publish(bundle, manifest)
