"""Every name, version, digest, path, tag, channel and hint is matched as a whole string.

Python's ``re.match(r"^...$")`` and JSON Schema's ``pattern`` (which jsonschema runs with
``re.search``) both let a final newline through: ``$`` also matches before it. So each
field is tried here with "\\n" appended, and the schema's patterns are checked to mean the
same in Python as in ECMA-262, where ``$`` is the end of the string and ``\\d`` is ASCII.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jsonschema import Draft202012Validator

from packager._io.testvectors import read_testvectors
from packager.core.channel import Channel, check_channel_name, parse_channel_payload
from packager.core.digests import Digest
from packager.core.manifest import check_name, check_version, is_safe_path, schema
from packager.core.names import parse_target
from packager.core.semver import is_semver
from packager.core.signature import key_hint, sign, verify
from packager.errors import SmokeTestError, TamperedError, UsageError
from packager.registry.archive import split_archive_ref
from packager.registry.document import check_document_tag
from packager.registry.oci import tag_version, version_tag

SCHEMAS = Path(__file__).parents[2] / "packager" / "manifests"
EXAMPLE = json.loads((SCHEMAS / "manifest.example.json").read_text())
HEX = "ab" * 32


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """The manifest schema's own verdict, without the checks parse_manifest adds."""
    return [e.message for e in Draft202012Validator(schema()).iter_errors(doc)]


def with_newline(doc: dict[str, Any], *path: str | int) -> dict[str, Any]:
    copy: Any = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] += "\n"
    return dict(copy)


def test_the_example_passes_the_schema() -> None:
    assert schema_errors(EXAMPLE) == []


def test_name() -> None:
    with pytest.raises(UsageError):
        check_name("iris\n")
    with pytest.raises(UsageError):
        parse_target("iris\n")
    assert schema_errors(with_newline(EXAMPLE, "name"))


def test_version() -> None:
    with pytest.raises(UsageError):
        check_version("1.0.0\n")
    assert not is_semver("1.0.0\n")
    with pytest.raises(UsageError):
        parse_target("iris@1.0.0\n")
    assert schema_errors(with_newline(EXAMPLE, "version"))
    assert split_archive_ref("iris:1.0.0\n") is None


def test_digest() -> None:
    with pytest.raises(TamperedError):
        Digest.parse(f"sha256:{HEX}\n")
    assert schema_errors(with_newline(EXAMPLE, "files", 0, "sha256"))


def test_path() -> None:
    assert not is_safe_path("model.onnx\n")
    assert schema_errors(with_newline(EXAMPLE, "files", 0, "path"))
    assert schema_errors(with_newline(EXAMPLE, "model", "path"))


def test_test_vector_member(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    array = tmp_path / "a.npy"
    np.save(array, np.zeros(2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(array, "outputs/y.npy\n")
    with pytest.raises(SmokeTestError, match="unexpected member"):
        read_testvectors(path)


def test_tag() -> None:
    with pytest.raises(UsageError):
        check_document_tag("channel.stable\n")
    with pytest.raises(UsageError):
        version_tag("1.0.0\n")
    assert tag_version("1.0.0\n") is None


def channel_payload(**change: str) -> bytes:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    channel = Channel("iris", "stable", "1.0.0", Digest(HEX), t0, t0 + timedelta(days=1), 1)
    doc = json.loads(channel.payload())
    doc.update(change)
    return json.dumps(doc).encode()


def test_channel() -> None:
    with pytest.raises(UsageError):
        check_channel_name("stable\n")
    assert parse_channel_payload(channel_payload()).channel == "stable"
    for field, value in [
        ("channel", "stable\n"),
        ("name", "iris\n"),
        ("version", "1.0.0\n"),
        ("manifestDigest", f"sha256:{HEX}\n"),
    ]:
        with pytest.raises(TamperedError):
            parse_channel_payload(channel_payload(**{field: value}))


def test_hint() -> None:
    """A hint naming a trusted key plus "\\n" names no key: every trusted key is tried."""
    signer = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    sig = json.loads(sign(subject_name="m", resources={"a": Digest(HEX)}, private_key=signer))
    sig["verificationMaterial"]["publicKey"]["hint"] = key_hint(other.public_key()) + "\n"
    keys = [other.public_key(), signer.public_key()]
    verified = verify(json.dumps(sig).encode(), public_keys=keys)
    assert verified.key_hint == key_hint(signer.public_key())


def patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from patterns(value)


def leaves(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        yield from node
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value)


SCHEMA_FILES = ["manifest.v1.schema.json", "model-config.v1.schema.json"]
# Strings of the forms the example manifest leaves out.
EXTRA_SAMPLES = ["float64->float32", "a" * 40, f"sha256:{HEX}", "2026-11-01T00:00:00Z"]


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_schema_pattern_matches_whole_strings_of_ascii_digits(name: str) -> None:
    found = list(patterns(json.loads((SCHEMAS / name).read_text())))
    assert found
    samples = [*leaves(EXAMPLE), *EXTRA_SAMPLES]
    for pattern in found:
        # \d is any Unicode digit in Python and ASCII only in ECMA-262.
        assert "\\d" not in pattern, pattern
        matching = [s for s in samples if re.search(pattern, s)]
        assert matching, f"no sample for {pattern}"
        for sample in matching:
            assert not re.search(pattern, sample + "\n"), (pattern, sample)
