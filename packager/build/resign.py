"""Signing a bundle directory again: a new model.sig over the same files.

After a key rotation, or to sign a large model by shards (or a sharded one by whole
files again), ``packager sign`` replaces model.sig and nothing else. The old signature
is not checked (its key may be gone or distrusted): every file is checked against
manifest.json instead, as ``verify`` checks digests, so that only the bytes the
manifest describes are ever signed. Each file is read once
(:mod:`packager._io.readonce`): the whole-file digest compared with manifest.json and
the shard digests signed come from the same bytes, whatever writes to it meanwhile.

manifest.json records nothing of the signature (neither the signer nor the shard size:
its digests are of whole files), so it stays byte for byte what it was, and what is
bound to its digest (approvals, benchmark results, channel documents) stays valid.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packager._io.bundledir import read_bundle_files
from packager._io.fs import atomic_write
from packager._io.readonce import read_all_once, read_bytes_once
from packager.build.bundle import bundle_dir_name
from packager.core import signature, verify
from packager.core.manifest import MANIFEST, SIGNATURE, Manifest
from packager.core.policy import Unverified
from packager.core.shards import Shard, choose_shard_size
from packager.core.verify import Statement
from packager.errors import TamperedError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

# What the files are checked against before they are signed again: manifest.json alone.
CHECK_AGAINST_MANIFEST = Unverified("signing again: every file is checked against manifest.json")

# What a file is known by between the check and the signing: a write changes one of these.
_Stat = tuple[int, int, int, int]


@dataclass(frozen=True)
class Resigned:
    """A bundle signed again: by the key ``signer`` names (its hint), by shards of
    ``shard_size`` bytes or (None) by whole files."""

    bundle: Path
    manifest: Manifest
    signer: str
    shard_size: int | None


def resign(
    bundle: Path,
    *,
    key: EllipticCurvePrivateKey,
    certificate_chain: Sequence[bytes] = (),
    shard_size: int | None = None,
) -> Resigned:
    """Replace ``bundle``'s model.sig (atomically) with one signed by ``key`` over the
    same files, once each matches manifest.json (size and sha256).

    ``shard_size``: sign by shards of that size; 0: by whole files; None: as ``package``
    chooses (see :func:`packager.core.shards.choose_shard_size`). ``certificate_chain``
    (DER, leaf first, certifying ``key``) goes into model.sig as ``package`` writes it.

    Raises:
        UsageError: not a bundle directory, a bad shard size, or a key the signature
            format does not take.
        TamperedError: no model.sig, manifest.json invalid, or a file missing, extra or
            differing from manifest.json, or changed while it was signed; model.sig is
            then left as it was.
    """
    before = _stats(bundle)
    manifest, statement, size, shards = _read_checked(bundle, shard_size)
    sig = signature.sign(
        subject_name=bundle_dir_name(manifest.name, manifest.version),
        resources=statement.resources,
        private_key=key,
        certificate_chain=certificate_chain,
        shard_size=size,
        shards=shards,
    )
    if _stats(bundle) != before:
        raise TamperedError(
            f"the files of {bundle.name} changed while it was being signed; "
            f"{SIGNATURE} was left as it was: sign it again once nothing writes to it"
        )
    old = bundle / SIGNATURE
    atomic_write(old, sig, mode=stat.S_IMODE(old.stat().st_mode))
    return Resigned(bundle, manifest, signature.key_hint(key.public_key()), size)


def _read_checked(
    bundle: Path, requested: int | None
) -> tuple[Manifest, Statement, int | None, dict[str, tuple[Shard, ...]] | None]:
    """Every file of ``bundle`` read once and checked against manifest.json: its
    manifest, the statement to sign, the shard size and (by shards) each file's shards.

    Raises:
        UsageError: not a bundle directory, or a bad shard size.
        TamperedError: no model.sig, manifest.json invalid, or a file missing, extra or
            differing from manifest.json.
    """
    files = read_bundle_files(bundle)
    if not (bundle / SIGNATURE).is_file():
        raise TamperedError(
            f"{bundle.name} has no {SIGNATURE}: it is unsigned; re-package it with --key"
        )
    if MANIFEST not in files:
        raise TamperedError(f"{bundle.name} has no {MANIFEST}")
    manifest_bytes = files.pop(MANIFEST).read_bytes()
    statement = verify.unverified_statement(manifest_bytes, CHECK_AGAINST_MANIFEST)
    manifest = verify.check_manifest(statement, manifest_bytes)
    sizes = [len(manifest_bytes), *(path.stat().st_size for path in files.values())]
    size = choose_shard_size(sizes, requested)
    read = read_all_once(files, size)
    read[MANIFEST] = read_bytes_once(manifest_bytes, size)
    verify.check_files(statement, manifest, {p: (r.whole, r.size) for p, r in read.items()})
    shards = None if size is None else {path: r.shards for path, r in read.items()}
    return manifest, statement, size, shards


def _stats(bundle: Path) -> dict[str, _Stat]:
    """What tells each file of ``bundle`` (model.sig excepted) from a rewritten one."""
    found = {}
    for path, source in read_bundle_files(bundle).items():
        st = os.stat(source)
        found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found
