"""Numbers and versions from outside are bounded: refused with packager's errors, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packager.core.channel import Channel, parse_channel_payload
from packager.core.digests import Digest
from packager.core.jsonio import INT_MAX, INT_MIN, Limits, loads
from packager.core.manifest import MAX_VERSION_LENGTH, check_version, parse_manifest
from packager.core.names import parse_target
from packager.core.semver import is_semver, semver_key, sort_versions
from packager.errors import TamperedError, UsageError

EXAMPLE = Path(__file__).parents[2] / "packager" / "manifests" / "manifest.example.json"
# A valid SemVer string whose numbers are past what int() reads (4,300 digits).
HUGE_VERSION = "1" * 5000 + ".0.0"
LONG_VERSION = "1.0.0-" + "a" * (MAX_VERSION_LENGTH - 5)


def test_integers_are_bounded_to_64_bits() -> None:
    assert loads(json.dumps([INT_MIN, INT_MAX]), what="doc") == [INT_MIN, INT_MAX]
    for value in (INT_MAX + 1, INT_MIN - 1, 10**19):
        with pytest.raises(TamperedError, match="does not fit in 64 bits"):
            loads(json.dumps([value]), what="doc")
    # Sample tables check their columns' ranges themselves, with a better message.
    loaded = loads(json.dumps([1 << 70]), what="doc", limits=Limits(max_int_digits=40, int64=False))
    assert loaded == [1 << 70]


def test_versions_are_capped_at_128_characters() -> None:
    at_cap = LONG_VERSION[:-1]
    assert len(at_cap) == MAX_VERSION_LENGTH and check_version(at_cap) == at_cap
    for version in (LONG_VERSION, HUGE_VERSION):
        assert not is_semver(version)
        with pytest.raises(UsageError, match="longer than 128 characters"):
            check_version(version)
        with pytest.raises(UsageError, match="invalid version"):
            semver_key(version)
        with pytest.raises(UsageError, match="invalid version"):
            sort_versions(["1.0.0", version])
        with pytest.raises(UsageError):
            parse_target(f"iris@{version}")


def test_a_manifest_with_a_huge_version_is_tampered() -> None:
    doc = json.loads(EXAMPLE.read_text())
    for version in (LONG_VERSION, HUGE_VERSION):
        doc["version"] = version
        with pytest.raises(TamperedError, match="version"):
            parse_manifest(json.dumps(doc).encode())


def test_a_manifest_size_past_64_bits_is_tampered() -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["files"][0]["size"] = 1 << 64
    with pytest.raises(TamperedError, match="64 bits"):
        parse_manifest(json.dumps(doc).encode())


def payload(**change: object) -> bytes:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    channel = Channel("iris", "stable", "1.0.0", Digest.of(b"m"), t0, t0 + timedelta(days=1), 1)
    doc = json.loads(channel.payload())
    doc.update(change)
    return json.dumps(doc).encode()


def test_channel_sequences_are_from_1_to_2_63_minus_1() -> None:
    assert parse_channel_payload(payload(sequence=INT_MAX)).sequence == INT_MAX
    for sequence in (0, -1, INT_MAX + 1, 1 << 64):
        with pytest.raises(TamperedError):
            parse_channel_payload(payload(sequence=sequence))


@pytest.mark.parametrize("version", [LONG_VERSION, HUGE_VERSION])
def test_a_channel_with_a_huge_version_is_tampered(version: str) -> None:
    with pytest.raises(TamperedError, match="bad version"):
        parse_channel_payload(payload(version=version))


def test_a_runtime_version_of_thousands_of_digits_is_tampered() -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["runtime"]["onnxruntime"] = "9" * 5000 + ".1"
    with pytest.raises(TamperedError, match="runtime"):
        parse_manifest(json.dumps(doc).encode())
