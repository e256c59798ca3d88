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

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.digests import Digest
from packager.core.jsonio import loads
from packager.core.manifest import NAME_RE, is_version
from packager.core.signature import sign_envelope
from packager.errors import TamperedError, UsageError

PAYLOAD_TYPE = "application/vnd.packager.channel.v1+json"
DOCUMENT_TYPE = "https://packager.dev/channel/v1"
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ARTIFACT_TYPE = "application/vnd.packager.channel.v1+json"
MAX_CHANNEL_BYTES = 64 << 10
CHANNEL_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)
TAG_PREFIX = "channel."
_DURATION_RE = re.compile(r"(\d+)([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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
            "issued": _timestamp(self.issued),
            "expires": _timestamp(self.expires),
            "sequence": self.sequence,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def check_channel_name(channel: str) -> str:
    """Raises UsageError unless ``channel`` is a lowercase word like 'stable' or 'canary'."""
    if not CHANNEL_RE.fullmatch(channel):
        raise UsageError(
            f"invalid channel {channel!r}: use a lowercase word (letters, digits, '-', '_'), "
            "e.g. stable"
        )
    return channel


def channel_tag(channel: str) -> str:
    """The registry tag holding a channel's document (never a valid SemVer version)."""
    return TAG_PREFIX + check_channel_name(channel)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> timedelta; raises UsageError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


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


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise TamperedError(f"channel document: {field} is not a timestamp")
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError as e:
        raise TamperedError(f"channel document: {field} {value[:40]!r} is malformed") from e
    return moment.replace(tzinfo=UTC)


def parse_channel_payload(payload: bytes) -> Channel:
    """Parse a channel payload (already signature-checked, or for display only).

    Raises:
        TamperedError: malformed document.
    """
    doc = loads(payload, what="channel document")
    fields = {
        "_type",
        "name",
        "channel",
        "version",
        "manifestDigest",
        "issued",
        "expires",
        "sequence",
    }
    if not isinstance(doc, dict) or set(doc) != fields or doc["_type"] != DOCUMENT_TYPE:
        raise TamperedError("channel document has unexpected fields or type")
    name, channel, version, sequence = doc["name"], doc["channel"], doc["version"], doc["sequence"]
    if not (isinstance(name, str) and NAME_RE.fullmatch(name)):
        raise TamperedError("channel document: bad model name")
    if not (isinstance(channel, str) and CHANNEL_RE.fullmatch(channel)):
        raise TamperedError("channel document: bad channel name")
    if not (isinstance(version, str) and is_version(version)):
        raise TamperedError("channel document: bad version")
    # The loader refuses integers past 64 bits, so what passes fits state.db.
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise TamperedError("channel document: sequence must be a positive integer")
    if not isinstance(doc["manifestDigest"], str):
        raise TamperedError("channel document: bad manifestDigest")
    issued = _parse_time(doc["issued"], "issued")
    expires = _parse_time(doc["expires"], "expires")
    if expires <= issued:
        raise TamperedError("channel document expires before it was issued")
    return Channel(
        name, channel, version, Digest.parse(doc["manifestDigest"]), issued, expires, sequence
    )


@dataclass(frozen=True)
class Seen:
    """The last channel document an instance accepted for one model and channel."""

    sequence: int
    version: str
    manifest_digest: Digest
