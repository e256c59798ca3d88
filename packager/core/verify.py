"""Checks that bind a verified signature to a manifest and a set of files (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, Manifest, parse_manifest
from packager.core.signature import SignedStatement
from packager.errors import TamperedError, WrongModelError


def signed_digest(statement: SignedStatement, path: str) -> Digest:
    """The digest the signature gives ``path``; TamperedError when it covers no such file."""
    try:
        return statement.resources[path]
    except KeyError:
        raise TamperedError(f"{path} is not covered by the signature") from None


def verify_manifest(
    statement: SignedStatement,
    data: bytes,
    *,
    name: str | None = None,
    version: str | None = None,
) -> Manifest:
    """Check manifest.json bytes against the signature, parse it, and bind the files.

    Raises:
        TamperedError: the bytes are not the signed manifest, the manifest is invalid,
            or signed resources and manifest files differ (missing or extra files).
        WrongModelError: a validly signed manifest of another model or version.
    """
    if Digest.of(data) != signed_digest(statement, MANIFEST):
        raise TamperedError("manifest.json does not match its signed digest")
    manifest = parse_manifest(data)
    if name is not None and manifest.name != name:
        raise WrongModelError(
            f"asked for {name} but the signed bundle is {manifest.ref}; "
            "the registry serves the wrong model"
        )
    if version is not None and manifest.version != version:
        raise WrongModelError(
            f"asked for {name or manifest.name}@{version} but the signed bundle is "
            f"{manifest.ref}; the registry serves the wrong version"
        )
    check_resources(statement, manifest)
    return manifest


def check_resources(statement: SignedStatement, manifest: Manifest) -> None:
    """Signed resources must be exactly the manifest's files plus manifest.json, same digests.

    Raises:
        TamperedError: naming the first file missing, extra or with a different digest.
    """
    listed = {f.path: f.digest for f in manifest.files}
    signed = {p: d for p, d in statement.resources.items() if p != MANIFEST}
    extra = sorted(set(signed) - set(listed))
    missing = sorted(set(listed) - set(signed))
    if extra:
        raise TamperedError(f"the signature covers {extra[0]}, which manifest.json does not list")
    if missing:
        raise TamperedError(f"{missing[0]} is listed in manifest.json but not signed")
    for path, digest in listed.items():
        if signed[path] != digest:
            raise TamperedError(f"{path}: manifest.json and the signature disagree on its digest")


def check_files(statement: SignedStatement, present: Mapping[str, Digest]) -> None:
    """Files found (path -> digest, model.sig excluded) must equal the signed resources.

    Raises:
        TamperedError: a file is missing, extra, or differs from what was signed.
    """
    for path in sorted(set(present) | set(statement.resources)):
        if path not in statement.resources:
            raise TamperedError(f"{path} is not covered by the signature (extra file)")
        if path not in present:
            raise TamperedError(f"{path} is signed but missing")
        if present[path] != statement.resources[path]:
            raise TamperedError(f"{path} was modified after signing (sha256 differs)")
