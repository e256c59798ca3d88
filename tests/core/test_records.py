"""Flat records as JSON: camelCase keys, digests as strings, tuples as lists, and back."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from packager.core.digests import Digest
from packager.core.manifest import Validation
from packager.core.records import JsonRecord, as_json, from_json


@dataclass(frozen=True)
class _Copied(JsonRecord):
    model_name: str
    source_digest: Digest
    tags: tuple[str, ...]


def test_keys_are_camel_case_and_values_plain_json() -> None:
    digest = Digest.of(b"x")
    doc = _Copied("iris", digest, ("1.0.0", "2.0.0")).to_json()
    assert doc == {"modelName": "iris", "sourceDigest": str(digest), "tags": ["1.0.0", "2.0.0"]}


def test_a_record_reads_back_what_it_wrote_leaving_out_none() -> None:
    validation = Validation("testvectors.npz", 3, 0.001, 1e-4, 0.0, label_outputs=("label",))
    doc = as_json(validation, omit_none=True)
    assert doc == {
        "testvectors": "testvectors.npz",
        "rows": 3,
        "rtol": 0.001,
        "atol": 1e-4,
        "maxAbsDiff": 0.0,
        "labelOutputs": ["label"],
    }
    assert from_json(Validation, doc) == validation


def test_a_required_field_must_be_there() -> None:
    with pytest.raises(KeyError, match="maxAbsDiff"):
        from_json(Validation, {"testvectors": "t", "rows": 1, "rtol": 0.1, "atol": 0.1})
