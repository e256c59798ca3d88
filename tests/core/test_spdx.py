"""SPDX licence expressions and licence rules (pure): validation, normal spelling, and the
allow-list semantics against expression tricks (OR with an unknown LicenseRef, case,
spacing, WITH exceptions, look-alike LicenseRefs, a missing licence)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.core.digests import Digest
from packager.core.manifest import Manifest, ProvenanceRecord, TrainingData
from packager.core.policy import LicenseRule, TrustPolicy, parse_policy, render_policy
from packager.core.spdx import allowed_by, check_allow_entry, check_expression
from packager.core.verify import check_licenses, evaluate_licenses
from packager.errors import TamperedError, UntrustedError, UsageError

EXAMPLE = Path(__file__).parents[2] / "manifests" / "manifest.example.json"
ALLOW = ("MIT", "Apache-2.0")


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("MIT", "MIT"),
        ("mit", "MIT"),
        ("  MIT   OR\tapache-2.0 ", "MIT OR Apache-2.0"),
        ("mit or apache-2.0", "MIT OR Apache-2.0"),
        ("apache-2.0 with llvm-exception", "Apache-2.0 WITH LLVM-exception"),
        ("(MIT OR GPL-3.0-only) AND BSD-3-Clause", "(MIT OR GPL-3.0-only) AND BSD-3-Clause"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("LicenseRef-acme-eula", "LicenseRef-acme-eula"),
    ],
)
def test_expressions_are_validated_and_written_in_spdx_spelling(given: str, normal: str) -> None:
    assert check_expression(given) == normal


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "Foo-1.0",
        "MIT OR",
        "(MIT",
        "MIT WITH MIT",
        "LLVM-exception",
        "licenseref-x",
        "MIT OR " * 200 + "MIT",
    ],
)
def test_invalid_expressions_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid licence expression"):
        check_expression(bad)


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("MIT", True),
        ("mit", True),  # case does not matter for SPDX identifiers
        ("MIT   OR  GPL-3.0-only", True),  # OR: the recipient may choose MIT
        ("MIT OR LicenseRef-evil", True),  # ... even when the other alternative is unknown
        ("MIT AND LicenseRef-evil", False),  # AND: every part must be allowed
        ("LicenseRef-evil OR LicenseRef-worse", False),
        ("(MIT OR GPL-3.0-only) AND Apache-2.0", True),
        ("(MIT OR GPL-3.0-only) AND GPL-3.0-only", False),
        ("Apache-2.0 WITH LLVM-exception", False),  # an exception changes the terms
        ("LicenseRef-MIT", False),  # a look-alike of the author's own is not MIT
        ("GPL-3.0-only", False),
    ],
)
def test_allow_list_semantics(expression: str, allowed: bool) -> None:
    assert allowed_by(expression, ALLOW)[0] is allowed


def test_a_with_exception_is_allowed_only_when_listed_as_such() -> None:
    allow = (check_allow_entry("apache-2.0 with llvm-exception"),)
    assert allow == ("Apache-2.0 WITH LLVM-exception",)
    assert allowed_by("Apache-2.0 WITH LLVM-exception", allow)[0]
    assert not allowed_by("Apache-2.0", allow)[0]


def test_allow_entries_are_single_licences() -> None:
    with pytest.raises(UsageError, match="list each licence on its own"):
        check_allow_entry("MIT OR Apache-2.0")
    with pytest.raises(UsageError, match="invalid licence expression"):
        check_allow_entry("NotALicence")


def test_an_invalid_expression_in_a_bundle_is_tampering() -> None:
    with pytest.raises(TamperedError, match="not an SPDX expression"):
        allowed_by("MIT OR OR", ALLOW)


def manifest(license: str | None, *data: tuple[str, str | None]) -> Manifest:
    base = Manifest.from_dict(json.loads(EXAMPLE.read_text()))
    records = tuple(TrainingData(uri, Digest.of(uri.encode()), lic) for uri, lic in data)
    provenance = ProvenanceRecord(training_data=records or None)
    return replace(base, name="security-scanner", license=license, provenance=provenance)


def trust(*, data: bool = False, models: str = "security-*") -> TrustPolicy:
    return TrustPolicy({}, (), licenses=(LicenseRule(models, ALLOW, data),))


def test_a_bundle_under_an_allowed_licence_passes_and_others_are_named() -> None:
    check_licenses(evaluate_licenses(manifest("MIT OR Apache-2.0"), trust()), "m@1")
    findings = evaluate_licenses(manifest("GPL-3.0-only"), trust())
    with pytest.raises(UntrustedError, match="GPL-3.0-only is not allowed"):
        check_licenses(findings, "m@1")


def test_a_missing_licence_is_refused_where_a_rule_applies_and_ignored_elsewhere() -> None:
    with pytest.raises(UntrustedError, match="the model: no licence recorded"):
        check_licenses(evaluate_licenses(manifest(None), trust()), "m@1")
    assert evaluate_licenses(manifest(None), trust(models="other-*")) == ()


def test_training_data_licences_count_when_the_rule_asks() -> None:
    good = manifest("MIT", ("train.csv", "Apache-2.0"), ("extra.csv", "mit"))
    bad = manifest("MIT", ("train.csv", "Apache-2.0"), ("scraped.csv", "LicenseRef-unknown"))
    unlabelled = manifest("MIT", ("train.csv", None))
    check_licenses(evaluate_licenses(good, trust(data=True)), "m@1")
    check_licenses(evaluate_licenses(bad, trust(data=False)), "m@1")
    with pytest.raises(UntrustedError, match=r"training data scraped.csv: LicenseRef-unknown"):
        check_licenses(evaluate_licenses(bad, trust(data=True)), "m@1")
    with pytest.raises(UntrustedError, match=r"training data train.csv: no licence recorded"):
        check_licenses(evaluate_licenses(unlabelled, trust(data=True)), "m@1")
    with pytest.raises(UntrustedError, match="records no training data"):
        check_licenses(evaluate_licenses(manifest("MIT"), trust(data=True)), "m@1")


def test_licence_rules_in_the_policy_file_round_trip() -> None:
    text = """
[[licenses]]
models = "security-*"
allow = ["mit", "Apache-2.0 WITH LLVM-exception"]
training-data = true
"""
    parsed = parse_policy(text, source="t")
    assert parsed.licenses == (
        LicenseRule("security-*", ("MIT", "Apache-2.0 WITH LLVM-exception"), True),
    )
    assert parse_policy(render_policy(parsed), source="t") == parsed
    with pytest.raises(UsageError, match="list each licence"):
        parse_policy('[[licenses]]\nmodels = "x"\nallow = ["MIT OR BSD-3-Clause"]', source="t")
    with pytest.raises(UsageError, match="needs models"):
        parse_policy('[[licenses]]\nmodels = "x"\nallow = "MIT"', source="t")


TOKENS = ["MIT", "OR", "AND", "WITH", "(", ")", "LicenseRef-x", "Apache-2.0", "LLVM-exception",
          "+", "-", "mit", "or", "with", "\u202e", "\n"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=10), st.text(max_size=20))
def test_any_text_is_judged_or_refused_with_our_errors(tokens: list[str], noise: str) -> None:
    for text in (" ".join(tokens), "".join(tokens), noise):
        with contextlib.suppress(TamperedError):
            allowed_by(text, ALLOW)
        with contextlib.suppress(UsageError):
            check_expression(text)
