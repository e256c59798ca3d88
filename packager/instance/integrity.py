"""Whether an installed version is still the bytes this instance verified when it installed
it: before `packager rollback` makes it current again.

Its manifest.json must be the one verified at install (its sha256 is in state.db), and each
file the bytes that manifest lists: a file whose inode has the fingerprint recorded when it
was verified (device, inode, size, mtime, ctime: any write moves them) counts without being
read; any other is hashed (see :func:`packager.core.verify.unchanged_since_verified`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from packager._io.fs import filesystem_type
from packager._io.hashing import digest_file
from packager.core.digests import Digest
from packager.core.fingerprint import Fingerprint
from packager.core.manifest import MANIFEST, parse_manifest
from packager.core.verify import fingerprints_hold_on, unchanged_since_verified
from packager.errors import PackagerError, TamperedError
from packager.instance.store import Store


def check_installed(store: Store, name: str, version: str) -> None:
    """``name@version`` as installed is what was verified at its install.

    Raises:
        TamperedError: manifest.json or a file it lists was changed, replaced or removed
            since (the message names it).
        NotInstalledError: the version is not installed.
    """
    directory = store.installed_dir(name, version)
    try:
        data = (directory / MANIFEST).read_bytes()
        manifest = parse_manifest(data)
    except (OSError, PackagerError) as e:
        raise TamperedError(f"its {MANIFEST} cannot be read ({_why(e)})") from e
    recorded = store.installed_manifest(name, version)
    if recorded is not None and Digest.of(data) != recorded:
        raise TamperedError(f"its {MANIFEST} is not the one verified at its install")
    verified = store.verified_fingerprints()
    for entry in manifest.files:
        if not _as_verified(directory / entry.path, entry.digest, entry.size, verified):
            raise TamperedError(f"its {entry.path} is not the file verified at its install")


def _as_verified(
    path: Path,
    digest: Digest,
    size: int,
    verified: dict[tuple[int, int], tuple[Digest, Fingerprint]],
) -> bool:
    """Whether ``path`` holds the ``size`` bytes of ``digest``: by its recorded fingerprint
    where that still holds, else by hashing it."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    found = Fingerprint.of(info)
    record = verified.get((found.dev, found.ino))
    if (
        record is not None
        and record[0] == digest
        and fingerprints_hold_on(filesystem_type(found.dev))
        and unchanged_since_verified(record[1], found, signed_size=size)
    ):
        return True
    try:
        return digest_file(path) == (digest, size)
    except OSError:
        return False


def _why(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error)
