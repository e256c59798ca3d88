"""Fetch and verify a bundle into a directory without installing it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from packager.core.names import parse_ref
from packager.core.policy import Trusted
from packager.core.verify import check_trusted
from packager.errors import UsageError
from packager.registry.base import RegistryReader
from packager.registry.verified import fetch_verified, latest_version

Progress = Callable[[str], None]


def pull(
    ref: str,
    *,
    registry: RegistryReader,
    mode: Trusted,
    out_dir: Path,
    progress: Progress | None = None,
) -> Path:
    """Fetch and verify ``name[@version]`` into ``out_dir/<name>-<version>`` without installing.

    The bundle is assembled in a temporary directory beside the destination and
    renamed into place only once verified.

    Raises:
        UsageError: bad reference, or the destination exists.
        VerificationError, RegistryError: as for :func:`fetch_verified`.
    """
    name, version = parse_ref(ref)
    check_trusted(mode, name)
    if version is None:
        version = latest_version(registry, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}-{version}"
    if final.exists():
        raise UsageError(f"{final} already exists; remove it or pull into another directory")
    artifact = registry.resolve(name, version)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        fetch_verified(registry, artifact, mode=mode, dest=work, say=progress)
        work.chmod(0o755)
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
