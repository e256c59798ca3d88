"""Approvals: signed sign-offs of one exact bundle by a reviewer in a role (pure).

An approval says "as ``role`` (e.g. security-review, legal), the signer approves the
bundle NAME@VERSION whose signed manifest.json has digest D", with an issue time, an
optional expiry and a note. It is an in-toto Statement v1 (subject: ``NAME@VERSION`` with
the manifest.json sha256; predicate type :data:`PREDICATE_TYPE`) in a DSSE envelope inside
a Sigstore bundle v0.3, the same format as model.sig and channel documents, with its own
payload type. A revocation (:data:`REVOCATION_PREDICATE_TYPE`) withdraws one approval,
named by the sha256 of its document; it counts only when signed by the approval's key.

Which approvals count is decided in :func:`packager.core.verify.evaluate_approvals`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.digests import Digest
from packager.core.jsonio import loads
from packager.core.manifest import NAME_RE, is_version
from packager.core.signature import STATEMENT_TYPE, sign_envelope
from packager.errors import TamperedError, UsageError

PAYLOAD_TYPE = "application/vnd.packager.approval.v1+json"
REVOCATION_PAYLOAD_TYPE = "application/vnd.packager.approval-revocation.v1+json"
PREDICATE_TYPE = "https://packager.dev/approval/v1"
REVOCATION_PREDICATE_TYPE = "https://packager.dev/approval-revocation/v1"
# The attachment kinds (see packager.registry.attachments) the two are stored under.
APPROVAL_KIND = "approval"
REVOCATION_KIND = "revocation"
MAX_APPROVAL_BYTES = 64 << 10
MAX_NOTE_CHARS = 1000
ROLE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}", re.ASCII)


def check_role(role: str) -> str:
    """Raises UsageError unless ``role`` is a lowercase word like 'security-review'."""
    if not ROLE_RE.fullmatch(role):
        raise UsageError(
            f"invalid role {role!r}: use a lowercase word (letters, digits, '-'), "
            "e.g. security-review"
        )
    return role


@dataclass(frozen=True)
class Approval:
    """One reviewer's sign-off, as signed (see the module docstring)."""

    name: str
    version: str
    manifest_digest: Digest
    role: str
    issued: datetime
    expires: datetime | None = None
    note: str = ""

    def payload(self) -> bytes:
        """The canonical in-toto Statement that is signed."""
        predicate: dict[str, Any] = {
            "model": self.name,
            "version": self.version,
            "role": self.role,
            "issued": _timestamp(self.issued),
            "note": self.note,
        }
        if self.expires is not None:
            predicate["expires"] = _timestamp(self.expires)
        return _statement(self.name, self.version, self.manifest_digest, PREDICATE_TYPE, predicate)


@dataclass(frozen=True)
class Revocation:
    """The withdrawal of the approval whose document has digest ``approval``."""

    name: str
    version: str
    manifest_digest: Digest
    approval: Digest
    issued: datetime

    def payload(self) -> bytes:
        predicate = {
            "model": self.name,
            "version": self.version,
            "approval": str(self.approval),
            "issued": _timestamp(self.issued),
        }
        return _statement(
            self.name, self.version, self.manifest_digest, REVOCATION_PREDICATE_TYPE, predicate
        )


def sign_approval(approval: Approval, *, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed approval document's bytes (the key named by its hint: reviewers are
    trusted by key, in roles, not through CAs).

    Raises:
        UsageError: a malformed role or a note over :data:`MAX_NOTE_CHARS`.
    """
    check_role(approval.role)
    if len(approval.note) > MAX_NOTE_CHARS:
        raise UsageError(f"the note is longer than {MAX_NOTE_CHARS} characters")
    return sign_envelope(PAYLOAD_TYPE, approval.payload(), private_key=private_key)


def sign_revocation(revocation: Revocation, *, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed revocation document's bytes."""
    return sign_envelope(REVOCATION_PAYLOAD_TYPE, revocation.payload(), private_key=private_key)


def parse_approval_payload(payload: bytes) -> Approval:
    """Parse an approval statement (signature already checked, or for display only).

    Raises:
        TamperedError: malformed, or another predicate type.
    """
    name, version, digest, predicate = _parse_statement(
        payload, PREDICATE_TYPE, {"model", "version", "role", "issued", "note"}, {"expires"}
    )
    role, note = predicate["role"], predicate["note"]
    if not (isinstance(role, str) and ROLE_RE.fullmatch(role)):
        raise TamperedError("approval: bad role")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise TamperedError("approval: bad note")
    issued = _parse_time(predicate["issued"], "issued")
    expires = None
    if "expires" in predicate:
        expires = _parse_time(predicate["expires"], "expires")
        if expires <= issued:
            raise TamperedError("approval expires before it was issued")
    return Approval(name, version, digest, role, issued, expires, note)


def parse_revocation_payload(payload: bytes) -> Revocation:
    """Parse a revocation statement.

    Raises:
        TamperedError: malformed, or another predicate type.
    """
    name, version, digest, predicate = _parse_statement(
        payload, REVOCATION_PREDICATE_TYPE, {"model", "version", "approval", "issued"}, set()
    )
    if not isinstance(predicate["approval"], str):
        raise TamperedError("revocation: bad approval digest")
    approval = Digest.parse(predicate["approval"])
    return Revocation(name, version, digest, approval, _parse_time(predicate["issued"], "issued"))


def _statement(
    name: str, version: str, digest: Digest, predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{name}@{version}", "digest": {"sha256": digest.hex}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_statement(
    payload: bytes, predicate_type: str, required: set[str], optional: set[str]
) -> tuple[str, str, Digest, Mapping[str, Any]]:
    """(name, version, manifest digest, predicate) of a statement whose subject and
    predicate agree on the name and version."""
    what = "approval" if predicate_type == PREDICATE_TYPE else "revocation"
    doc = loads(payload, what=what)
    if (
        not isinstance(doc, dict)
        or set(doc) != {"_type", "subject", "predicateType", "predicate"}
        or doc["_type"] != STATEMENT_TYPE
    ):
        raise TamperedError(f"{what}: not an in-toto Statement v1")
    if doc["predicateType"] != predicate_type:
        raise TamperedError(
            f"{what}: predicateType is {str(doc['predicateType'])[:80]!r}, not {predicate_type!r}"
        )
    subjects, predicate = doc["subject"], doc["predicate"]
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise TamperedError(f"{what}: the statement must have exactly one subject")
    subject = subjects[0]
    digests = subject.get("digest")
    if (
        set(subject) != {"name", "digest"}
        or not isinstance(digests, dict)
        or set(digests) != {"sha256"}
        or not isinstance(digests["sha256"], str)
    ):
        raise TamperedError(f"{what}: the subject must be a name and a sha256 digest")
    keys = set(predicate) if isinstance(predicate, dict) else set()
    if not isinstance(predicate, dict) or not required <= keys <= required | optional:
        raise TamperedError(f"{what}: unexpected predicate fields")
    name, version = predicate["model"], predicate["version"]
    if not (isinstance(name, str) and NAME_RE.fullmatch(name)):
        raise TamperedError(f"{what}: bad model name")
    if not (isinstance(version, str) and is_version(version)):
        raise TamperedError(f"{what}: bad version")
    if subject["name"] != f"{name}@{version}":
        raise TamperedError(f"{what}: the subject does not name {name}@{version}")
    return name, version, Digest(digests["sha256"]), predicate


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise TamperedError(f"approval: {field} is not a timestamp")
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError as e:
        raise TamperedError(f"approval: {field} {value[:40]!r} is malformed") from e
    return moment.replace(tzinfo=UTC)
