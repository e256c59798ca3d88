"""The strict JSON loader refuses what two parsers could read differently, and bounds cost."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packager.core.jsonio import INT_MAX, INT_MIN, Limits, loads, loads_object
from packager.errors import RegistryError, TamperedError

HOSTILE = {
    "duplicate key": b'{"a": 1, "a": 2}',
    "NaN": b"[NaN]",
    "Infinity": b"[-Infinity]",
    "float overflow": b"[1e999]",
    "huge integer": b"[" + b"9" * 5000 + b"]",
    "long integer": b"[" + b"1" * 21 + b"]",
    "integer past 64 bits": b"[9223372036854775808]",
    "negative integer past 64 bits": b"[-9223372036854775809]",
    "deep nesting": b"[" * 33 + b"]" * 33,
    "nesting past the stack": b"[" * 200_000,
    "invalid UTF-8": b'["\xff"]',
    "not JSON": b"{",
    "empty": b"",
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_documents_are_refused_with_a_packager_error(data: bytes) -> None:
    with pytest.raises(TamperedError, match=r"^doc is not"):
        loads(data, what="doc")


def test_limits_bound_size_strings_and_keys() -> None:
    small = Limits(max_bytes=10, max_string=3)
    with pytest.raises(TamperedError, match="larger than 10 bytes"):
        loads(b'"' + b"x" * 20 + b'"', what="doc", limits=small)
    with pytest.raises(TamperedError, match="string of 4"):
        loads(b'["abcd"]', what="doc", limits=small)
    with pytest.raises(TamperedError, match="key of 4"):
        loads(b'{"abcd":1}', what="doc", limits=small)


def test_the_caller_chooses_the_error() -> None:
    with pytest.raises(RegistryError, match="answer is not valid JSON"):
        loads(b"{", what="answer", error=RegistryError)


def test_loads_object_wants_an_object() -> None:
    assert loads_object(b'{"a": [1]}', what="doc") == {"a": [1]}
    with pytest.raises(TamperedError, match="not a JSON object"):
        loads_object(b"[1]", what="doc")


def test_depth_at_the_limit_is_accepted() -> None:
    assert loads(b"[" * 32 + b"]" * 32, what="doc") is not None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_ordinary_json_reads_as_the_standard_library_reads_it(value: object) -> None:
    data = json.dumps(value).encode()
    assert loads(data, what="doc") == json.loads(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_end_in_a_value_or_a_tampered_error(data: bytes) -> None:
    with contextlib.suppress(TamperedError):
        loads(data, what="doc")
