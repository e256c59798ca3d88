"""Publishing a bundle directory to a registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from packager._io.bundledir import verify_bundle

if TYPE_CHECKING:
    from pathlib import Path

    from packager.core.policy import VerifyMode
    from packager.registry.base import Artifact, RegistryWriter


def publish_bundle(bundle: Path, *, registry: RegistryWriter, mode: VerifyMode) -> Artifact:
    """Check a bundle, then publish it: with a :class:`~packager.core.policy.Trusted` mode
    its signature too; with an :class:`~packager.core.policy.Unverified` one (``publish``
    without ``--key``) model.sig must be there and every file must match manifest.json, so
    that a damaged bundle is never published.

    Raises:
        VerificationError: the bundle is unsigned, tampered or (when trusted) untrusted.
        RegistryError: the registry refused it, e.g. the version exists with other content.
    """
    manifest = verify_bundle(bundle, mode=mode)
    return registry.publish(bundle, manifest)
