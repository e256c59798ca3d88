"""The one list of rules a verified version must pass on every path that makes it current
(a full install, the version already current judged again, a rollback): the minimum, the
licence rules and, when they were read, the approvals."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.core.digests import Digest
from packager.core.manifest import Manifest
from packager.core.policy import ApprovalRule, LicenseRule, Trusted, TrustPolicy
from packager.core.verify import Attached, judge
from packager.errors import RollbackError, UntrustedError

EXAMPLE = Path(__file__).parents[2] / "manifests" / "manifest.example.json"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def scanner(version: str = "2.0.0", license: str | None = "MIT") -> Manifest:
    base = Manifest.from_dict(json.loads(EXAMPLE.read_text()))
    return replace(base, name="security-scanner", version=version, license=license)


def test_a_version_below_the_minimum_is_refused_at_once() -> None:
    policy = Trusted(TrustPolicy({}, (), minimum={"security-scanner": "2.1.0"}))
    digest = Digest.of(b"m")
    with pytest.raises(RollbackError, match="below the minimum version 2.1.0"):
        judge(scanner("2.0.0"), digest, None, policy, attached=None, now=NOW)
    judge(scanner("2.1.0"), digest, None, policy, attached=None, now=NOW).check()


def test_every_licence_is_in_the_verdict_and_a_refused_one_fails_the_check() -> None:
    policy = Trusted(TrustPolicy({}, (), licenses=(LicenseRule("security-*", ("MIT",)),)))
    allowed = judge(scanner(), Digest.of(b"m"), None, policy, attached=None, now=NOW)
    assert [f.allowed for f in allowed.licenses] == [True]
    allowed.check()
    refused = judge(
        scanner(license="GPL-3.0-only"), Digest.of(b"m"), None, policy, attached=None, now=NOW
    )
    assert [f.allowed for f in refused.licenses] == [False]
    with pytest.raises(UntrustedError, match="refused by the licence policy"):
        refused.check()


def test_approvals_are_judged_when_read() -> None:
    policy = Trusted(
        TrustPolicy({}, (), approvals=(ApprovalRule("security-*", {"security-review": 1}),))
    )
    unread = judge(scanner(), Digest.of(b"m"), None, policy, attached=None, now=NOW)
    assert unread.approvals is None
    unread.check()
    read = judge(scanner(), Digest.of(b"m"), None, policy, attached=Attached((), ()), now=NOW)
    assert read.approvals is not None and dict(read.approvals.missing) == {"security-review": 1}
    with pytest.raises(UntrustedError, match="1 more security-review"):
        read.check()
