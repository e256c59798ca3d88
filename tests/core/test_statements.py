"""The one reader of signed documents about a model version: approvals, revocations,
benchmark results (in-toto Statements v1) and channel documents (flat) refuse the same
faults the same way, each naming its kind, and the bytes they sign are as documented."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from packager.core import approval, benchrecord, channel
from packager.core.digests import Digest
from packager.core.statements import parse_statement
from packager.errors import TamperedError

T0 = datetime(2026, 11, 1, tzinfo=UTC)
D = Digest.of(b"manifest.json of iris 1.0.0")
Doc = dict[str, Any]

APPROVAL = approval.Approval("iris", "1.0.0", D, "legal", T0, T0 + timedelta(days=9), "ok")
REVOCATION = approval.Revocation("iris", "1.0.0", D, Digest.of(b"an approval"), T0)
RESULT = benchrecord.BenchmarkResult("iris", "1.0.0", D, T0, {"task": "classification"})
CHANNEL = channel.Channel("iris", "stable", "1.0.0", D, T0, T0 + timedelta(days=9), 7)

# kind: (what messages call it, the document, its parser)
STATEMENTS: dict[str, tuple[str, Any, Callable[[bytes], object]]] = {
    "approval": ("approval", APPROVAL, approval.parse_approval_payload),
    "revocation": ("revocation", REVOCATION, approval.parse_revocation_payload),
    "benchmark": ("benchmark result", RESULT, benchrecord.parse_result_payload),
}
ALL = {**STATEMENTS, "channel": ("channel document", CHANNEL, channel.parse_channel_payload)}


def changed(document: Any, change: Callable[[Doc], object]) -> bytes:
    doc = json.loads(document.payload())
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("kind", sorted(ALL))
def test_every_kind_reads_back_what_it_wrote(kind: str) -> None:
    _, document, parse = ALL[kind]
    assert parse(document.payload()) == document


def test_the_statements_are_in_toto_about_one_exact_version() -> None:
    for _, document, _ in STATEMENTS.values():
        doc = json.loads(document.payload())
        assert doc["_type"] == "https://in-toto.io/Statement/v1"
        assert doc["subject"] == [{"name": "iris@1.0.0", "digest": {"sha256": D.hex}}]
        assert (doc["predicate"]["model"], doc["predicate"]["version"]) == ("iris", "1.0.0")
    assert json.loads(RESULT.payload())["predicate"] == {
        "model": "iris",
        "version": "1.0.0",
        "measured": "2026-11-01T00:00:00Z",
        "result": {"task": "classification"},
    }
    assert json.loads(REVOCATION.payload())["predicate"] == {
        "model": "iris",
        "version": "1.0.0",
        "approval": str(Digest.of(b"an approval")),
        "issued": "2026-11-01T00:00:00Z",
    }


SHARED_FAULTS: dict[str, tuple[Callable[[Doc], object], str]] = {
    "another statement type": (
        lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"),
        "not an in-toto Statement v1",
    ),
    "another field": (lambda d: d.update(extra=1), "not an in-toto Statement v1"),
    "another predicate type": (
        lambda d: d.update(predicateType="https://slsa.dev/provenance/v1"),
        "predicateType is 'https://slsa.dev/provenance/v1'",
    ),
    "two subjects": (lambda d: d["subject"].append(d["subject"][0]), "exactly one subject"),
    "no subject": (lambda d: d.update(subject=[]), "exactly one subject"),
    "another digest too": (
        lambda d: d["subject"][0]["digest"].update(sha512="00"),
        "a name and a sha256 digest",
    ),
    "a subject field more": (
        lambda d: d["subject"][0].update(uri="x"),
        "a name and a sha256 digest",
    ),
    "a subject without a name": (
        lambda d: d["subject"][0].pop("name"),
        "a name and a sha256 digest",
    ),
    "a subject named null": (
        lambda d: d["subject"][0].update(name=None),
        "a name and a sha256 digest",
    ),
    "a subject named by a number": (
        lambda d: d["subject"][0].update(name=5),
        "a name and a sha256 digest",
    ),
    "another version's subject": (
        lambda d: d["subject"][0].update(name="iris@1.1.0"),
        "the subject does not name iris@1.0.0",
    ),
    "a predicate field more": (
        lambda d: d["predicate"].update(extra=1),
        "unexpected predicate fields",
    ),
    "no model": (lambda d: d["predicate"].pop("model"), "unexpected predicate fields"),
    "a bad model name": (lambda d: d["predicate"].update(model="Iris\n"), "bad model name"),
    "a bad version": (lambda d: d["predicate"].update(version="1.0"), "bad version"),
    "a malformed digest": (
        lambda d: d["subject"][0]["digest"].update(sha256="abc"),
        "malformed digest",
    ),
}


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
@pytest.mark.parametrize("fault", sorted(SHARED_FAULTS))
def test_every_statement_refuses_the_shared_faults(kind: str, fault: str) -> None:
    what, document, parse = STATEMENTS[kind]
    change, message = SHARED_FAULTS[fault]
    with pytest.raises(TamperedError) as refused:
        parse(changed(document, change))
    assert message in str(refused.value)
    if fault != "a malformed digest":  # Digest's own message
        assert str(refused.value).startswith(f"{what}: ")


CHANNEL_FAULTS: dict[str, tuple[Callable[[Doc], object], str]] = {
    "another type": (
        lambda d: d.update(_type="https://packager.dev/approval/v1"),
        "unexpected fields or type",
    ),
    "a field more": (lambda d: d.update(extra=1), "unexpected fields or type"),
    "a field less": (lambda d: d.pop("sequence"), "unexpected fields or type"),
    "a bad model name": (lambda d: d.update(name="iris\n"), "bad model name"),
    "a bad version": (lambda d: d.update(version=1), "bad version"),
    "a digest that is no string": (lambda d: d.update(manifestDigest=5), "bad manifestDigest"),
    "a bad channel": (lambda d: d.update(channel="Stable"), "bad channel name"),
    "a sequence of 0": (lambda d: d.update(sequence=0), "sequence must be a positive integer"),
    "a boolean sequence": (
        lambda d: d.update(sequence=True),
        "sequence must be a positive integer",
    ),
    "a time that is no string": (lambda d: d.update(issued=5), "issued is not a timestamp"),
    "a malformed time": (lambda d: d.update(expires="tomorrow"), "expires 'tomorrow' is malformed"),
    "expiry before issue": (
        lambda d: d.update(expires="2026-10-01T00:00:00Z"),
        "expires before it was issued",
    ),
}


@pytest.mark.parametrize("fault", sorted(CHANNEL_FAULTS))
def test_a_channel_document_refuses_its_faults_naming_itself(fault: str) -> None:
    change, message = CHANNEL_FAULTS[fault]
    with pytest.raises(TamperedError, match="^channel document: ") as refused:
        channel.parse_channel_payload(changed(CHANNEL, change))
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("document", "parse", "change", "message"),
    [
        (APPROVAL, approval.parse_approval_payload, {"role": "Legal"}, "approval: bad role"),
        (APPROVAL, approval.parse_approval_payload, {"note": "x" * 1001}, "approval: bad note"),
        (
            APPROVAL,
            approval.parse_approval_payload,
            {"expires": "2026-10-01T00:00:00Z"},
            "approval: expires before it was issued",
        ),
        (
            APPROVAL,
            approval.parse_approval_payload,
            {"issued": 5},
            "approval: issued is not a timestamp",
        ),
        (
            REVOCATION,
            approval.parse_revocation_payload,
            {"approval": 5},
            "revocation: bad approval digest",
        ),
        (
            REVOCATION,
            approval.parse_revocation_payload,
            {"issued": "now"},
            "revocation: issued 'now' is malformed",
        ),
        (
            RESULT,
            benchrecord.parse_result_payload,
            {"result": []},
            "benchmark result: result is not a JSON object",
        ),
        (
            RESULT,
            benchrecord.parse_result_payload,
            {"measured": "2026-11-01"},
            "benchmark result: measured '2026-11-01' is malformed",
        ),
    ],
)
def test_each_statement_checks_its_own_fields(
    document: Any, parse: Callable[[bytes], object], change: Doc, message: str
) -> None:
    with pytest.raises(TamperedError) as refused:
        parse(changed(document, lambda d: d["predicate"].update(change)))
    assert str(refused.value) == message


def test_an_approval_without_expiry_is_read() -> None:
    lasting = approval.Approval("iris", "1.0.0", D, "legal", T0)
    assert approval.parse_approval_payload(lasting.payload()) == lasting


@pytest.mark.parametrize(
    "read",
    [
        lambda doc: doc.time("expires"),
        lambda doc: doc.text("expires", problem="bad expires"),
        lambda doc: doc.integer("expires", minimum=0, problem="bad expires"),
        lambda doc: doc.digest("expires", problem="bad expires"),
        lambda doc: doc.mapping("expires", problem="bad expires"),
    ],
)
def test_a_missing_optional_field_is_refused_as_tampering(read: Callable[[Any], object]) -> None:
    lasting = approval.Approval("iris", "1.0.0", D, "legal", T0)
    doc = parse_statement(lasting.payload(), approval.APPROVAL_FORM)
    assert not doc.has("expires")
    with pytest.raises(TamperedError, match="^approval: no expires$"):
        read(doc)
