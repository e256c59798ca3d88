"""Fuzzing the parsers that read untrusted bytes: only packager's own errors may escape."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager._io.keys import generate_private_key
from packager.core import signature
from packager.core.digests import Digest
from packager.core.manifest import parse_manifest
from packager.core.policy import parse_policy
from packager.errors import PackagerError
from packager.registry.artifact import parse_oci_manifest
from packager.registry.index import parse_index

KEY = generate_private_key()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


EXAMPLE = Path(__file__).parents[1] / "manifests" / "manifest.example.json"


def valid_manifest() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return doc


def replace_at(doc: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    if isinstance(doc, dict) and doc:
        key = list(doc)[path[0] % len(doc)]
        return {**doc, key: replace_at(doc[key], path[1:], value)}
    if isinstance(doc, list) and doc:
        i = path[0] % len(doc)
        return [*doc[:i], replace_at(doc[i], path[1:], value), *doc[i + 1 :]]
    return value


def only_our_errors(parse: Any, data: Any) -> None:
    """Any exception but a PackagerError fails the test."""
    with contextlib.suppress(PackagerError):
        parse(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_manifest_parser_bytes(data: bytes) -> None:
    only_our_errors(parse_manifest, data)


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), json_values)
def test_manifest_parser_mutations(path: list[int], value: Any) -> None:
    doc = replace_at(valid_manifest(), path, value)
    only_our_errors(parse_manifest, json.dumps(doc).encode())


SIGNED = signature.sign(
    subject_name="m", resources={"a": Digest.of(b"a"), "b": Digest.of(b"b")}, private_key=KEY
)


@FUZZ
@given(st.binary(max_size=2048))
def test_signature_parser_bytes(data: bytes) -> None:
    only_our_errors(lambda d: signature.verify(d, public_keys=[KEY.public_key()]), data)


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), json_values)
def test_signature_parser_mutations(path: list[int], value: Any) -> None:
    doc = replace_at(json.loads(SIGNED), path, value)
    only_our_errors(
        lambda d: signature.verify(d, public_keys=[KEY.public_key()]), json.dumps(doc).encode()
    )


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_oci_manifest_parser(data: bytes) -> None:
    only_our_errors(
        lambda d: parse_oci_manifest(d, name="m", version="1.0.0", digest=Digest.of(d)), data
    )


def _index_lookups(data: bytes) -> None:
    index = parse_index(data, where="index.json", hint="fuzz")
    for ref in index.refs:
        index.descriptor(ref)


@FUZZ
@given(
    st.binary(max_size=2048)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.lists(json_values, max_size=4).map(lambda m: json.dumps({"manifests": m}).encode())
)
def test_oci_index_parser(data: bytes) -> None:
    only_our_errors(_index_lookups, data)


@FUZZ
@given(st.text(max_size=1024))
def test_policy_parser(text: str) -> None:
    only_our_errors(lambda t: parse_policy(t, source="fuzz"), text)


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_channel_parser(data: bytes) -> None:
    from datetime import UTC, datetime

    from packager.core.channel import parse_channel_payload
    from packager.core.policy import Trusted, adhoc_policy
    from packager.core.verify import accept_channel

    only_our_errors(parse_channel_payload, data)
    only_our_errors(
        lambda d: accept_channel(
            d,
            Trusted(adhoc_policy([KEY.public_key()])),
            name="m",
            channel="stable",
            now=datetime.now(UTC),
            last_seen=None,
        ),
        data,
    )


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_root_of_trust_parsers(data: bytes) -> None:
    from datetime import UTC, datetime

    from packager.core.root import (
        DELEGATIONS_PAYLOAD_TYPE,
        ROOT_PAYLOAD_TYPE,
        accept_delegations,
        pin_root,
    )
    from packager.core.signature import sign_envelope

    only_our_errors(pin_root, data)
    for payload_type in (ROOT_PAYLOAD_TYPE, DELEGATIONS_PAYLOAD_TYPE):
        # Signed, so that the parsers behind the signature check see the bytes too.
        signed = sign_envelope(payload_type, data, private_key=KEY)
        only_our_errors(pin_root, signed)
    root = pin_root(_ROOT)
    only_our_errors(
        lambda d: accept_delegations(root, d, now=datetime.now(UTC), floor=None),
        sign_envelope(DELEGATIONS_PAYLOAD_TYPE, data, private_key=KEY),
    )


def _one_key_root() -> bytes:
    from datetime import UTC, datetime

    from packager.core.root import (
        ROOT_PAYLOAD_TYPE,
        Role,
        Root,
        keys_by_hint,
        root_payload,
        sign_document,
    )
    from packager.core.signature import key_hint

    hint = key_hint(KEY.public_key())
    root = Root(1, datetime(2100, 1, 1, tzinfo=UTC), keys_by_hint([KEY.public_key()]),
                Role((hint,), 1), Role((hint,), 1))  # fmt: skip
    return sign_document(ROOT_PAYLOAD_TYPE, root_payload(root), [KEY])


_ROOT = _one_key_root()


@FUZZ
@given(json_values)
def test_root_of_trust_predicates(predicate: Any) -> None:
    """Any predicate inside a well-formed, signed statement: refused with our errors."""
    import hashlib

    from packager.core.root import ROOT_PAYLOAD_TYPE, ROOT_PREDICATE_TYPE, pin_root
    from packager.core.signature import STATEMENT_TYPE, sign_envelope

    canonical = json.dumps(predicate, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": "root.1", "digest": {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}}
        ],
        "predicateType": ROOT_PREDICATE_TYPE,
        "predicate": predicate,
    }
    data = sign_envelope(ROOT_PAYLOAD_TYPE, json.dumps(statement).encode(), private_key=KEY)
    only_our_errors(pin_root, data)
