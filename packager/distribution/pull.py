"""Fetch and verify a bundle into a directory without installing it."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from packager.core.channel import Seen
from packager.core.digests import Digest
from packager.core.names import parse_target
from packager.core.policy import Trusted
from packager.core.text import Progress
from packager.core.verify import check_trusted
from packager.errors import UsageError
from packager.registry.base import RegistryReader
from packager.registry.verified import Source, fetch_verified, latest_version, read_channel


def pull(
    target: str,
    *,
    registry: RegistryReader,
    mode: Trusted,
    out_dir: Path,
    now: datetime,
    progress: Progress | None = None,
    last_seen: Seen | None = None,
) -> Path:
    """Fetch and verify ``name[@version|@channel]`` into ``out_dir/<name>-<version>``
    without installing it (no version: the latest).

    Through a channel, the version its verified document names, and only the bundle
    whose manifest.json has the digest the document names: a version tag moved after the
    document was read is refused, as install refuses it. ``last_seen`` is the channel
    document the caller accepted last (an instance's), so an older one replayed is
    refused as a rollback.

    The bundle is assembled in a temporary directory beside the destination and renamed
    into place only once verified.

    Raises:
        UsageError: bad reference, or the destination exists.
        VerificationError, RegistryError: as for :func:`fetch_verified`, and for a
            channel as :func:`~packager.registry.verified.read_channel`; TamperedError:
            the version's tag names another bundle than the channel document.
        NotFoundError: no such version or channel.
    """
    parsed = parse_target(target)
    source = Source(registry, mode, progress)
    if parsed.channel is None:
        return _pull_version(source, parsed.name, parsed.version, out_dir)
    doc, _ = read_channel(
        registry, parsed.name, parsed.channel, mode=mode, now=now, last_seen=last_seen
    )
    return _pull_version(
        source, parsed.name, doc.version, out_dir, expected_manifest=doc.manifest_digest
    )


def _pull_version(
    source: Source,
    name: str,
    version: str | None,
    out_dir: Path,
    expected_manifest: Digest | None = None,
) -> Path:
    """``name@version`` (None: the latest) into ``out_dir``; see :func:`pull`."""
    check_trusted(source.mode, name)
    registry = source.registry
    if version is None:
        version = latest_version(registry, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}-{version}"
    if final.exists():
        raise UsageError(f"{final} already exists; remove it or pull into another directory")
    artifact = registry.resolve(name, version)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        fetch_verified(source, artifact, work, expected_manifest=expected_manifest)
        work.chmod(0o755)
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
