"""Channel documents: signed pointers from ``name@channel`` to one exact bundle (pure).

A channel document says "channel C of model N is version V, whose signed
manifest.json has digest D", with an issue time, an expiry and a sequence number
that only grows. It is a Sigstore bundle holding a DSSE envelope, the same
format as model.sig, with its own payload type. Verification
(:func:`packager.core.verify.accept_channel`) refuses:

- a signer the caller does not trust for N (arbitrary installation),
- an expired document (indefinite freeze: a registry replaying an old channel),
- a sequence lower than the last one seen, or the same sequence naming another
  bundle (rollback, equivocation),
- a document for another model or channel (wrong software).

The installer then refuses a bundle whose manifest digest differs from D
(mix-and-match).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.digests import Digest
from packager.core.manifest import check_grammar
from packager.core.signature import sign_envelope
from packager.core.statements import Form, document_bytes, parse_statement, timestamp
from packager.errors import UsageError

PAYLOAD_TYPE = "application/vnd.packager.channel.v1+json"
DOCUMENT_TYPE = "https://packager.dev/channel/v1"
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ARTIFACT_TYPE = "application/vnd.packager.channel.v1+json"
MAX_CHANNEL_BYTES = 64 << 10
CHANNEL_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)
TAG_PREFIX = "channel."
_DURATION_RE = re.compile(r"(\d+)([smhdw])", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The longest duration any option takes: a document, approval or root expiring later than
# this is a typo, and now + the duration must stay a date the documents can hold.
MAX_DURATION = timedelta(days=3650)
FORM = Form.document(
    "channel document", DOCUMENT_TYPE, {"channel", "issued", "expires", "sequence"}
)


@dataclass(frozen=True)
class Channel:
    name: str
    channel: str
    version: str
    manifest_digest: Digest
    issued: datetime
    expires: datetime
    sequence: int

    def payload(self) -> bytes:
        """The canonical JSON that is signed."""
        doc = {
            "_type": DOCUMENT_TYPE,
            "name": self.name,
            "channel": self.channel,
            "version": self.version,
            "manifestDigest": str(self.manifest_digest),
            "issued": timestamp(self.issued),
            "expires": timestamp(self.expires),
            "sequence": self.sequence,
        }
        return document_bytes(doc)


def check_channel_name(channel: str) -> str:
    """Raises UsageError unless ``channel`` is a lowercase word like 'stable' or 'canary'."""
    rule = "use a lowercase word (letters, digits, '-', '_'), e.g. stable"
    return check_grammar(CHANNEL_RE, channel, "channel", rule)


def channel_tag(channel: str) -> str:
    """The registry tag holding a channel's document (never a valid SemVer version)."""
    return TAG_PREFIX + check_channel_name(channel)


def parse_duration(
    text: str, *, most: timedelta = MAX_DURATION, allow_zero: bool = False
) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> timedelta, at most ``most``; zero
    (``0`` with or without a unit) only if ``allow_zero``. Raises UsageError otherwise."""
    text = text.strip()
    match = _DURATION_RE.fullmatch(text)
    zero = text == "0" or (match is not None and not match.group(1).strip("0"))
    if zero and allow_zero:
        return timedelta(0)
    if match is None or zero:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m or 2w")
    digits, unit = match.group(1).lstrip("0"), match.group(2)
    # Compared as whole seconds before any timedelta exists (99999999999999999999d overflows
    # it); the count of digits is compared first, so that no huge integer is ever parsed.
    limit = int(most.total_seconds())
    if len(digits) > len(str(limit)) or int(digits) * _UNIT_SECONDS[unit] > limit:
        raise UsageError(f"duration {text!r} is too long: at most {describe_duration(most)}")
    return timedelta(seconds=int(digits) * _UNIT_SECONDS[unit])


def describe_duration(duration: timedelta) -> str:
    """``duration`` in the largest unit that divides it, as :func:`parse_duration` reads it
    (``3650d``, ``24h``)."""
    seconds = int(duration.total_seconds())
    for unit in "dhm":
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def sign_channel(
    channel: Channel,
    *,
    private_key: ec.EllipticCurvePrivateKey,
    certificate_chain: Sequence[bytes] = (),
) -> bytes:
    """The signed channel document's bytes (with the key's certificate chain, DER, leaf
    first, when given)."""
    return sign_envelope(
        PAYLOAD_TYPE,
        channel.payload(),
        private_key=private_key,
        certificate_chain=certificate_chain,
    )


def parse_channel_payload(payload: bytes) -> Channel:
    """Parse a channel payload (already signature-checked, or for display only).

    Raises:
        TamperedError: malformed document.
    """
    doc = parse_statement(payload, FORM)
    channel = doc.text("channel", pattern=CHANNEL_RE, problem="bad channel name")
    # The loader refuses integers past 64 bits, so what passes fits state.db.
    sequence = doc.integer("sequence", minimum=1, problem="sequence must be a positive integer")
    issued, expires = doc.times("issued", "expires")
    return Channel(doc.name, channel, doc.version, doc.manifest_digest, issued, expires, sequence)


@dataclass(frozen=True)
class Seen:
    """The last channel document an instance accepted for one model and channel."""

    sequence: int
    version: str
    manifest_digest: Digest
