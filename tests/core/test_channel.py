from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import generate_private_key
from packager.core.channel import (
    Channel,
    Seen,
    channel_tag,
    check_channel_name,
    parse_duration,
    sign_channel,
)
from packager.core.digests import Digest
from packager.core.policy import Trusted, adhoc_policy
from packager.core.verify import accept_channel
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
    WrongModelError,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
KEY = generate_private_key()
OTHER = generate_private_key()
D1 = Digest.of(b"manifest 1")
D2 = Digest.of(b"manifest 2")


def doc(version: str = "1.0.0", digest: Digest = D1, sequence: int = 1, **kw: object) -> Channel:
    fields: dict[str, object] = {
        "name": "iris",
        "channel": "stable",
        "version": version,
        "manifest_digest": digest,
        "issued": T0,
        "expires": T0 + timedelta(days=30),
        "sequence": sequence,
    }
    fields.update(kw)
    return Channel(**fields)  # type: ignore[arg-type]


def check(
    data: bytes,
    *,
    now: datetime = T0 + timedelta(days=1),
    last: Seen | None = None,
    keys: list[ec.EllipticCurvePublicKey] | None = None,
    name: str = "iris",
    channel: str = "stable",
) -> Channel:
    result, _ = accept_channel(
        data,
        Trusted(adhoc_policy(keys or [KEY.public_key()])),
        name=name,
        channel=channel,
        now=now,
        last_seen=last,
    )
    return result


def test_round_trip_and_determinism() -> None:
    data = sign_channel(doc(), private_key=KEY)
    assert data == sign_channel(doc(), private_key=KEY)
    assert check(data) == doc()


def test_freeze_is_refused() -> None:
    data = sign_channel(doc(), private_key=KEY)
    with pytest.raises(ExpiredError):
        check(data, now=T0 + timedelta(days=30))


def test_rollback_and_equivocation() -> None:
    newer = Seen(5, "2.0.0", D2)
    with pytest.raises(RollbackError):
        check(sign_channel(doc(sequence=4), private_key=KEY), last=newer)
    with pytest.raises(TamperedError, match="two different"):
        check(sign_channel(doc(sequence=5), private_key=KEY), last=newer)
    same = sign_channel(doc("2.0.0", D2, sequence=5), private_key=KEY)
    assert check(same, last=newer).version == "2.0.0"
    assert check(sign_channel(doc(sequence=6), private_key=KEY), last=newer).sequence == 6


def test_wrong_signer_model_or_channel() -> None:
    with pytest.raises(UntrustedError):
        check(sign_channel(doc(), private_key=OTHER))
    with pytest.raises(WrongModelError):
        check(sign_channel(doc(), private_key=KEY), name="spam")
    with pytest.raises(WrongModelError):
        check(sign_channel(doc(), private_key=KEY), channel="canary")


def test_model_sig_is_not_a_channel_document() -> None:
    from packager.core.signature import sign

    sig = sign(subject_name="iris", resources={"a": D1}, private_key=KEY)
    with pytest.raises(TamperedError, match="payloadType"):
        check(sig)


def test_durations_and_tags() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("0d", "30", "d", "1y", "-1d"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    assert channel_tag("stable") == "channel.stable"
    for bad in ("Stable", "1.0.0", "", "a" * 65):
        with pytest.raises(UsageError):
            channel_tag(bad)


def test_a_malformed_channel_name_is_refused_with_the_rule() -> None:
    assert check_channel_name("canary_2") == "canary_2"
    rule = r"invalid channel 'Stable': use a lowercase word \(letters, digits, '-', '_'\)"
    with pytest.raises(UsageError, match=rule):
        check_channel_name("Stable")


# A channel document signed before its payload was written by the shared writer, and
# the key that signed it: documents already published must keep verifying.
STORED_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE1tHEQlxunbS4IvVGnh6YOv2c4kH4
Snmyr0pm0B44PpdtaMj8hASeyMWTlVc7nc8vML6LkECvszuJJqMd7pAYYg==
-----END PUBLIC KEY-----
"""
STORED_DOCUMENT = (
    b'{"dsseEnvelope":{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vcGFja2FnZXIuZGV2L2NoYW5uZWwvdjEiLCJj'
    b"aGFubmVsIjoic3RhYmxlIiwiZXhwaXJlcyI6IjIwMjYtMTItMDFUMDA6MDA6MDBaIiwiaXNzdWVkIjoiMjAyNi0x"
    b"MS0wMVQwMDowMDowMFoiLCJtYW5pZmVzdERpZ2VzdCI6InNoYTI1NjpmODlmMmM5MzQzNWY0MmFiNjkyODA0ODNl"
    b"NDlkNzI0NGVhNGRlOTIwYzZmNjE0NDA2MWMwNTdhYjRlMTc2ZWVmIiwibmFtZSI6ImlyaXMiLCJzZXF1ZW5jZSI6"
    b'MSwidmVyc2lvbiI6IjEuMC4wIn0=","payloadType":"application/vnd.packager.channel.v1+json",'
    b'"signatures":[{"keyid":"","sig":"MEUCIQCEdLXvouR3OHHwGR/7UEgMpzQ0nWKrUAHW0AaCtvWE6QIgVyWk'
    b'o6abDFlJPUVzgNz6MuZCJJm7RvXr9CIZ7Itud88="}]},"mediaType":"application/vnd.dev.sigstore.bu'
    b'ndle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"5af53ee6e256f35292635c039fbb'
    b'82a0822ee62f83a3a0a83497948c4340d212"},"tlogEntries":[]}}'
)


def test_a_document_signed_earlier_still_verifies_and_is_written_the_same() -> None:
    key = serialization.load_pem_public_key(STORED_KEY)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert check(STORED_DOCUMENT, keys=[key]) == doc()
    envelope = json.loads(STORED_DOCUMENT)["dsseEnvelope"]
    assert doc().payload() == base64.b64decode(envelope["payload"])
