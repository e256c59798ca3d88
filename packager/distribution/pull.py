"""Fetch and verify a bundle into a directory without installing it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packager.core.names import parse_ref
from packager.errors import UsageError
from packager.registry.base import Registry
from packager.registry.verified import fetch_verified, latest_version

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

Progress = Callable[[str], None]


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
