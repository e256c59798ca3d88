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

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.digests import Digest
from packager.core.manifest import check_grammar
from packager.core.signature import sign_envelope
from packager.core.statements import Form, parse_statement, statement_payload, timestamp
from packager.errors import UsageError

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
APPROVAL_FORM = Form.statement("approval", PREDICATE_TYPE, {"role", "issued", "note"}, {"expires"})
REVOCATION_FORM = Form.statement("revocation", REVOCATION_PREDICATE_TYPE, {"approval", "issued"})


def check_role(role: str) -> str:
    """Raises UsageError unless ``role`` is a lowercase word like 'security-review'."""
    rule = "use a lowercase word (letters, digits, '-'), e.g. security-review"
    return check_grammar(ROLE_RE, role, "role", rule)


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
            "role": self.role,
            "issued": timestamp(self.issued),
            "note": self.note,
        }
        if self.expires is not None:
            predicate["expires"] = timestamp(self.expires)
        return statement_payload(
            self.name, self.version, self.manifest_digest, PREDICATE_TYPE, predicate
        )


@dataclass(frozen=True)
class Revocation:
    """The withdrawal of the approval whose document has digest ``approval``."""

    name: str
    version: str
    manifest_digest: Digest
    approval: Digest
    issued: datetime

    def payload(self) -> bytes:
        predicate = {"approval": str(self.approval), "issued": timestamp(self.issued)}
        return statement_payload(
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
    doc = parse_statement(payload, APPROVAL_FORM)
    role = doc.text("role", pattern=ROLE_RE, problem="bad role")
    note = doc.text("note", max_chars=MAX_NOTE_CHARS, problem="bad note")
    if doc.has("expires"):
        issued, expires = doc.times("issued", "expires")
    else:
        issued, expires = doc.time("issued"), None
    return Approval(doc.name, doc.version, doc.manifest_digest, role, issued, expires, note)


def parse_revocation_payload(payload: bytes) -> Revocation:
    """Parse a revocation statement.

    Raises:
        TamperedError: malformed, or another predicate type.
    """
    doc = parse_statement(payload, REVOCATION_FORM)
    approval = doc.digest("approval", problem="bad approval digest")
    return Revocation(doc.name, doc.version, doc.manifest_digest, approval, doc.time("issued"))
