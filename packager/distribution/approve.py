"""Approvals on the publishing side: a reviewer signs off one exact version, or withdraws it.

``approve`` signs an approval (:mod:`packager.core.approval`) bound to the version's name,
version and signed manifest.json digest, and attaches it to the version in the registry
(:mod:`packager.registry.attachments`). Instances whose trust policy requires approvals for
the model count it at install (:func:`packager.core.verify.evaluate_approvals`).
``revoke_approvals`` attaches a signed revocation of each approval the key made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from packager.core import signature
from packager.core.approval import (
    APPROVAL_KIND,
    MAX_APPROVAL_BYTES,
    PAYLOAD_TYPE,
    REVOCATION_KIND,
    Approval,
    Revocation,
    check_role,
    parse_approval_payload,
    sign_approval,
    sign_revocation,
)
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, parse_manifest
from packager.core.names import parse_target
from packager.core.signature import key_hint
from packager.core.text import Progress
from packager.core.verify import check_binding, served_file
from packager.errors import (
    NotFoundError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
)
from packager.registry.attachments import (
    Attachment,
    attachments_in,
    get_attachment,
    put_attachment,
    read_attachments,
)
from packager.registry.base import Artifact, Registry, RegistryReader

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class Approved:
    """An approval as signed and attached: ``tag`` is where the registry holds it."""

    approval: Approval
    key: str
    tag: str
    location: str


def approve(
    ref: str,
    *,
    role: str,
    registry: Registry,
    private_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    expires_in: timedelta | None = None,
    note: str = "",
    progress: Progress | None = None,
) -> Approved:
    """Sign an approval of ``ref`` (NAME@VERSION) in ``role`` and attach it to the version.

    Raises:
        UsageError: no exact version, a malformed role, a non-positive expiry, or the key
            signed the bundle itself (separation of duties: it cannot approve it).
        NotFoundError: no such version.
        VerificationError: the registry's manifest.json is malformed or of another version.
        RegistryError: the registry cannot be read or written.
    """
    say = progress or (lambda _msg: None)
    name, version = _exact(ref, "approve")
    check_role(role)
    if expires_in is not None and expires_in <= timedelta(0):
        raise UsageError("an approval must expire in the future: give e.g. --expires 90d")
    artifact = registry.resolve(name, version)
    manifest_digest = _check_version(registry, artifact, private_key.public_key())
    issued = now.replace(microsecond=0)
    approval = Approval(
        name,
        version,
        manifest_digest,
        role,
        issued,
        None if expires_in is None else issued + expires_in,
        note,
    )
    data = sign_approval(approval, private_key=private_key)
    attached = put_attachment(registry, artifact, APPROVAL_KIND, data)
    hint = key_hint(private_key.public_key())
    say(f"{name}@{version} approved as {role} by key {hint[:16]} in {registry.location}")
    return Approved(approval, hint, attached.tag, registry.location)


def revoke_approvals(
    ref: str,
    *,
    registry: Registry,
    private_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    role: str | None = None,
    progress: Progress | None = None,
) -> list[Approval]:
    """Attach a signed revocation of every approval of ``ref`` made with ``private_key``
    (in ``role`` only, when given); returns the approvals withdrawn.

    Raises:
        UsageError: no exact version, or the key made no such approval.
        NotFoundError: no such version.
        RegistryError: the registry cannot be read or written.
    """
    say = progress or (lambda _msg: None)
    name, version = _exact(ref, "revoke an approval of")
    artifact = registry.resolve(name, version)
    public_key = private_key.public_key()
    withdrawn = []
    for data in read_attachments(registry, artifact, APPROVAL_KIND, max_size=MAX_APPROVAL_BYTES):
        try:
            payload, _ = signature.verify_envelope(
                data, PAYLOAD_TYPE, public_keys=[public_key], what="approval"
            )
            approval = parse_approval_payload(payload)
        except VerificationError:
            continue
        if role is not None and approval.role != role:
            continue
        revocation = Revocation(
            name, version, approval.manifest_digest, Digest.of(data), now.replace(microsecond=0)
        )
        signed = sign_revocation(revocation, private_key=private_key)
        put_attachment(registry, artifact, REVOCATION_KIND, signed)
        say(f"revoked the {approval.role} approval of {name}@{version}")
        withdrawn.append(approval)
    if not withdrawn:
        which = f"{role} approval" if role is not None else "approval"
        raise UsageError(
            f"{registry.location} holds no {which} of {name}@{version} made with this key"
        )
    return withdrawn


def _exact(ref: str, what: str) -> tuple[str, str]:
    target = parse_target(ref)
    if target.version is None:
        raise UsageError(f"{what} one exact version: {target.name}@VERSION")
    return target.name, target.version


def _check_version(
    registry: Registry, artifact: Artifact, public_key: ec.EllipticCurvePublicKey
) -> Digest:
    """The version's manifest.json digest, after checking that manifest.json is for this
    name and version and that the approving key did not sign the bundle.

    Raises:
        UsageError: the approving key signed the bundle.
        VerificationError: manifest.json is malformed or of another version.
    """
    name = artifact.name
    manifest_desc = served_file(artifact.files, MANIFEST)
    manifest = parse_manifest(registry.read_blob(name, manifest_desc, max_size=MAX_MANIFEST_BYTES))
    check_binding(
        manifest, name=name, version=artifact.version, signed=False, source=registry.location
    )
    sig = registry.read_blob(
        name, served_file(artifact.files, SIGNATURE), max_size=signature.MAX_SIGNATURE_BYTES
    )
    try:
        signature.verify_envelope(
            sig, signature.PAYLOAD_TYPE, public_keys=[public_key], what="model.sig"
        )
    except UntrustedError:
        return manifest_desc.digest
    raise UsageError(
        f"this key signed {artifact.ref} itself, so it cannot approve it (separation of "
        "duties): approve with a reviewer's key"
    )


@dataclass(frozen=True)
class Listed:
    """A document attached to a version, as the registry claims it (UNVERIFIED: for
    display; installers verify). ``role``/``key``/``issued``/``expires`` are read from
    approvals only; ``problem`` says why one could not be read (kind ``*``: why none of
    the version's documents was)."""

    kind: str
    tag: str
    role: str | None = None
    key: str | None = None
    issued: datetime | None = None
    expires: datetime | None = None
    problem: str | None = None


def list_version_attachments(registry: RegistryReader, name: str) -> dict[str, list[Listed]]:
    """Version -> the documents attached to it (unverified), for every version of ``name``.
    A version with more documents attached than packager reads
    (:func:`~packager.registry.attachments.attachments_in`) has one entry of kind ``*``
    whose ``problem`` says so; none of its documents is read.

    Raises:
        UsageError: a malformed name.
        NotFoundError: a version listed is gone.
        RegistryError: the registry cannot be read.
    """
    tags = registry.tags(name)
    listed: dict[str, list[Listed]] = {}
    for version in registry.versions(name):
        artifact = registry.resolve(name, version)
        try:
            found = attachments_in(tags, artifact, location=registry.location)
        except TamperedError as e:
            listed[version] = [Listed("*", "", problem=str(e))]
            continue
        listed[version] = [_describe(registry, name, f) for f in found]
    return listed


def _describe(registry: RegistryReader, name: str, found: Attachment) -> Listed:
    if found.kind != APPROVAL_KIND:
        return Listed(found.kind, found.tag)
    try:
        data = get_attachment(registry, name, found, max_size=MAX_APPROVAL_BYTES)
        doc = parse_approval_payload(signature.unverified_payload(data, PAYLOAD_TYPE))
    except (VerificationError, NotFoundError) as e:
        return Listed(found.kind, found.tag, problem=str(e))
    hint = signature.claimed_key_hint_of(data, PAYLOAD_TYPE)
    return Listed(found.kind, found.tag, doc.role, hint, doc.issued, doc.expires)
