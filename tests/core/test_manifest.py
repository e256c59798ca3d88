from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from packager.core.digests import Digest
from packager.core.manifest import (
    MANIFEST,
    FileEntry,
    Manifest,
    ModelInfo,
    ProvenanceRecord,
    RuntimeRequirement,
    Source,
    TensorSpec,
    TrainingData,
    Validation,
    check_name,
    check_version,
    dump_json,
    parse_manifest,
    schema,
    validate_document,
)
from packager.core.text import printable
from packager.errors import TamperedError, UsageError
from packager.registry.artifact import build_config

SCHEMAS = Path(__file__).parents[2] / "manifests"
EXAMPLE = SCHEMAS / "manifest.example.json"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return doc


def test_example_manifest_is_valid_and_canonical() -> None:
    manifest = parse_manifest(EXAMPLE.read_bytes())
    assert manifest.ref == "iris-classifier@1.0.0"
    assert [f.path for f in manifest.files] == ["model.onnx", "testvectors.npz"]
    assert manifest.to_bytes() == EXAMPLE.read_bytes()


def test_config_blob_matches_its_schema() -> None:
    manifest = parse_manifest(EXAMPLE.read_bytes())
    config = json.loads(build_config(manifest, [Digest.of(b"x")]))
    schema = json.loads((SCHEMAS / "model-config.v1.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert not list(Draft202012Validator(schema).iter_errors(config))
    assert config["descriptor"]["licenses"] == ["Apache-2.0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(name="iris\n"), "name"),
        (lambda d: d.update(version="1.0.0\n"), "version"),
        (lambda d: d.update(version="1.0"), "version"),
        (lambda d: d.update(extra=1), "Additional properties"),
        (lambda d: d["files"][0].update(path="../model.onnx"), "files"),
        (lambda d: d["files"][0].update(path="/etc/passwd"), "files"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d["files"].append({**d["files"][0], "path": "model.sig"}), "model.sig"),
        (lambda d: d["model"].update(path="other.onnx"), "model.path"),
        (lambda d: d["validation"].update(testvectors="model.onnx"), "testvectors"),
        (lambda d: d["files"][0].update(sha256="00"), "sha256"),
        (lambda d: d["files"][0].update(size=-1), "size"),
    ],
)
def test_invalid_manifests_are_refused(change: Any, message: str) -> None:
    doc = example()
    change(doc)
    with pytest.raises(TamperedError, match=message):
        parse_manifest(dump_json(doc))


def test_not_json_and_too_large() -> None:
    with pytest.raises(TamperedError, match="not valid JSON"):
        parse_manifest(b"\xff{")
    with pytest.raises(TamperedError, match="larger than"):
        parse_manifest(b" " * (1 << 20) + b"{}")


@pytest.mark.parametrize("name", ["Iris", "-x", "a" * 129, "iris\n", "ïris", ""])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


@pytest.mark.parametrize(
    "version", ["1", "1.0", "01.0.0", "1.0.0\n", "v1.0.0", "1.0.0-", "\uff11.0.0"]
)
def test_bad_versions(version: str) -> None:
    with pytest.raises(UsageError):
        check_version(version)


def test_good_versions() -> None:
    for version in ("0.0.0", "1.2.3-rc.1", "1.2.3+build.5", "10.20.30-alpha.beta-1+x"):
        assert check_version(version) == version


# --- the symmetric model: from_dict and to_dict own the JSON keys -------------------------


def assert_round_trips(data: bytes) -> Manifest:
    """manifest.json bytes read into the model and written back are the same bytes, and
    the model and the document each survive the trip the other way."""
    doc = json.loads(data)
    manifest = Manifest.from_dict(doc)
    assert manifest.to_dict() == doc
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert parse_manifest(data) == manifest
    assert manifest.to_bytes() == data
    return manifest


def test_example_round_trips_with_every_field_typed() -> None:
    manifest = assert_round_trips(EXAMPLE.read_bytes())
    assert manifest.model.source.converter_version == "1.20.0"
    assert manifest.model.inputs == (TensorSpec("input", "float32", (None, 4)),)
    assert manifest.runtime.onnxruntime == "1.20"
    assert manifest.validation.label_outputs == ("label",)
    assert manifest.validation.input_cast is None
    assert manifest.provenance is not None
    assert manifest.provenance.training_data == (
        TrainingData(
            "iris.csv", Digest("6f608b71a7317216319b4d27b4d9bc84e6abd734eda7872b71a458569e2656c0")
        ),
    )
    assert manifest.labels is None and manifest.metrics is None and manifest.authors is None


def test_bundles_round_trip(bundles: dict[str, Path]) -> None:
    for bundle in bundles.values():
        assert_round_trips((bundle / MANIFEST).read_bytes())


def test_from_dict_validates() -> None:
    doc = example()
    del doc["validation"]["rows"]
    with pytest.raises(TamperedError, match="rows"):
        Manifest.from_dict(doc)


def test_absent_and_empty_optional_fields_stay_apart() -> None:
    doc = example()
    doc.update(labels={}, metrics={}, provenance={}, authors=[], description="")
    doc["validation"].pop("maxRelDiff")
    manifest = Manifest.from_dict(doc)
    assert (manifest.labels, manifest.metrics, manifest.authors) == ({}, {}, ())
    assert manifest.provenance == ProvenanceRecord()
    assert manifest.validation.max_rel_diff is None
    assert manifest.to_dict() == doc


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_NAME = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
_VERSION = st.builds(
    "{}.{}.{}{}".format,
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["", "-rc.1", "+build.5", "-alpha-1+x"]),
)
_HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_NUMBER = st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**6)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_WORD, inner, max_size=3),
    max_leaves=8,
)
_DTYPES = ["float32", "float64", "float16", "int64", "bool", "string", "uint8"]
_TENSOR = st.builds(
    TensorSpec,
    _WORD,
    st.sampled_from(_DTYPES),
    st.none() | st.tuples(st.none() | st.integers(0, 64) | _WORD, st.integers(1, 64)),
)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    extra = draw(st.lists(_WORD.map(lambda w: f"extra/{w}.bin"), max_size=3, unique=True))
    files = [
        FileEntry("model.onnx", Digest(draw(_HEX)), draw(st.integers(0, 2**40)), "model"),
        FileEntry("tv.npz", Digest(draw(_HEX)), draw(st.integers(0, 2**40)), "testvectors"),
        *(
            FileEntry(p, Digest(draw(_HEX)), 1, draw(st.sampled_from(["weights", "doc"])))
            for p in extra
        ),
    ]
    provenance = st.builds(
        ProvenanceRecord,
        _optional(st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
        _optional(
            st.lists(st.builds(TrainingData, _WORD, _HEX.map(Digest)), max_size=2).map(tuple)
        ),
        _optional(st.dictionaries(_WORD, st.text(max_size=8), max_size=3)),
        _optional(st.text(max_size=12)),
    )
    return Manifest(
        name=draw(_NAME),
        version=draw(_VERSION),
        created=draw(st.sampled_from(["2026-01-01T00:00:00Z", "2026-11-27T12:00:00.5+01:00"])),
        model=ModelInfo(
            path="model.onnx",
            ir_version=draw(st.integers(1, 12)),
            opsets=draw(
                st.dictionaries(
                    st.sampled_from(["ai.onnx", "ai.onnx.ml", "x"]), st.integers(1, 30), min_size=1
                )
            ),
            inputs=tuple(draw(st.lists(_TENSOR, min_size=1, max_size=3))),
            outputs=tuple(draw(st.lists(_TENSOR, min_size=1, max_size=3))),
            source=draw(st.builds(Source, _WORD, _WORD, st.text(max_size=20), _WORD, _WORD)),
            accepts_missing=draw(_optional(st.booleans())),
        ),
        runtime=RuntimeRequirement(draw(st.sampled_from(["1.18", "1.20.1"]))),
        files=tuple(draw(st.permutations(files))),
        validation=Validation(
            testvectors="tv.npz",
            rows=draw(st.integers(1, 10**6)),
            rtol=draw(_NUMBER),
            atol=draw(_NUMBER),
            max_abs_diff=draw(_NUMBER),
            max_rel_diff=draw(_optional(_NUMBER)),
            label_agreement=draw(_optional(st.floats(0, 1))),
            task=draw(_optional(st.sampled_from(["classification", "regression", "unknown"]))),
            reference=draw(_optional(st.sampled_from(["original", "onnxruntime"]))),
            label_outputs=draw(_optional(st.lists(_WORD, max_size=2).map(tuple))),
            input_cast=draw(_optional(st.sampled_from(["float64->float32", "int64->int32"]))),
        ),
        description=draw(_optional(st.text(max_size=20))),
        license=draw(_optional(st.sampled_from(["MIT", "Apache-2.0", "GPL-2.0 OR MIT"]))),
        authors=draw(_optional(st.lists(st.text(max_size=8), max_size=2).map(tuple))),
        labels=draw(_optional(st.dictionaries(_WORD, st.text(max_size=8), max_size=3))),
        metrics=draw(_optional(st.dictionaries(_WORD, _JSON, max_size=3))),
        provenance=draw(_optional(provenance)),
    )


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_every_manifest_round_trips(manifest: Manifest) -> None:
    doc = manifest.to_dict()
    assert Manifest.from_dict(doc) == manifest
    assert Manifest.from_dict(doc).to_dict() == doc
    assert parse_manifest(manifest.to_bytes()) == manifest


# --- the schema check agrees with the reference implementation ---------------------------
# packager checks manifest.json against its schema with jsonschema-rs; the Python
# `jsonschema` package (Draft 2020-12) is the judge of what the schema accepts.

_KEYS = sorted(
    {"schemaVersion", "path", "size", "sha256", "role", "shape", "rows", "x", "a\nb", "ai.onnx"}
)
_EDGE_STRINGS = [
    "",
    "\n",
    "a\n",
    "\ud800",
    "1.0.0",
    "1.0.0\n",
    "01.0.0",
    "1.0.0-rc.1+b.5",
    "model.onnx",
    "testvectors.npz",
    "../model.onnx",
    "/model.onnx",
    "a//b",
    "./a",
    "a/.",
    "a/..",
    "..a",
    "a" * 255,
    "a" * 256,
    "x" * 129,
    "0" * 64,
    "0" * 63,
    "A" * 64,
    "0" * 64 + "\n",
    "0" * 40,
    "0" * 41,
    "1.20",
    "1.20.1.4",
    "float32",
    "weights",
    "model",
    "testvectors",
    "regression",
    "original",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.5+01:00\n",
    "2026-1-01T00:00:00Z",
    "float64->float32",
    "ai.onnx",
    "\u0661.0.0",
    "ïris",
    "Apache-2.0 OR MIT",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([10**30, -(10**30), 2**63, 2**64, 1.0, 0.0, -0.0, 0.5, -0.5, 1.5, 1e308]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(_EDGE_STRINGS),
    st.text(max_size=6),
    st.text(alphabet="az09AZ._-/+\n ", max_size=12),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner),
    max_leaves=4,
)


def _places(doc: Any, at: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Where every value of ``doc`` is, the document itself included (``()``)."""
    places = [at]
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        places += _places(value, (*at, key))
    return places


def _at(doc: Any, place: tuple[str | int, ...]) -> Any:
    for key in place:
        doc = doc[key]
    return doc


def _edits(value: Any) -> list[Any]:
    """Changes near ``value`` that a schema keyword may or may not catch."""
    if isinstance(value, str):
        return [value + "\n", "/" + value, value + "/..", value[:-1], value.upper(), value * 2]
    if isinstance(value, bool):
        return [not value, int(value)]
    if isinstance(value, int | float):
        return [-value, value - 1, value + 0.5, float(value), str(value)]
    if isinstance(value, list):
        return [[], value[:-1], [*value, *value[:1]], value[::-1]]
    if isinstance(value, dict):
        return [{}, {**value, "x": 1}]
    return [0, "", False, []]


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid manifest document after one to three random changes: a key dropped or added,
    a value replaced by one of another type or an edge of a keyword (length, pattern, range,
    enum), or edited (a newline appended, a segment added, a character dropped...)."""
    doc: Any = draw(manifests()).to_dict()
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(_places(doc)))
        target = _at(doc, place)
        how = draw(st.sampled_from(["drop", "add", "replace", "edit"]))
        if how == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(_KEYS))] = draw(_VALUES)
        elif not place:
            doc = draw(_VALUES) if how == "replace" else doc
        elif how == "drop":
            del _at(doc, place[:-1])[place[-1]]
        elif how == "edit":
            _at(doc, place[:-1])[place[-1]] = draw(st.sampled_from(_edits(target)))
        else:
            _at(doc, place[:-1])[place[-1]] = draw(_VALUES)
    return doc


def _judged_first_error(doc: Any) -> str | None:
    """Where the reference implementation finds the first problem (by path), or None.

    An unpaired surrogate in a key on that path is named as U+FFFD, as packager checks it."""
    errors = sorted(Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if not errors:
        return None
    return re.sub("[\ud800-\udfff]", "\ufffd", "/".join(map(str, errors[0].path))) or "(top level)"


@settings(max_examples=600, deadline=None)
@given(mutated_documents())
def test_the_schema_check_agrees_with_jsonschema(doc: Any) -> None:
    judged = _judged_first_error(doc)
    try:
        validate_document(doc)
        refused = None
    except TamperedError as e:
        refused = str(e)
    if judged is None:
        # Valid by the schema: only the rules after it (unique paths, ...) may refuse.
        assert refused is None or " is invalid at " not in refused
    else:
        assert refused is not None
        assert refused.startswith(f"manifest.json is invalid at {printable(judged)}: ")
        assert refused.isprintable()


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda d: d.__setitem__("files", tuple(d["files"])), "a tuple is not a JSON value"),
        (lambda d: d["model"].__setitem__(1, "x"), "an object key is not a string"),
        (lambda d: d.__setitem__("description", {"a", "b"}), "a set is not a JSON value"),
    ],
)
def test_a_document_holding_what_json_cannot_is_refused(change: Any, refusal: str) -> None:
    """Built in Python, a document may hold values no JSON text parses to; Python
    jsonschema refuses a tuple for an array, and no such value reaches the schema check."""
    doc = example()
    change(doc)
    with pytest.raises(TamperedError, match=refusal):
        Manifest.from_dict(doc)


def test_unpaired_surrogates_are_judged_as_jsonschema_does() -> None:
    """JSON may escape half of a surrogate pair ("\\ud800"): a string JSON Schema checks by
    pattern is refused (the surrogate shown as U+FFFD), one it checks by length only is
    accepted, and neither is a crash."""
    data = dump_json(example()).replace(b'"iris-classifier"', b'"\\ud800"')
    with pytest.raises(TamperedError, match='^manifest.json is invalid at name: "\ufffd" does not'):
        parse_manifest(data)
    doc = example()
    doc["provenance"]["hyperparameters"] = {"team": 5}
    data = dump_json(doc).replace(b'"team"', b'"t\\udfffam"')
    where = "provenance/hyperparameters/t\ufffdam"
    with pytest.raises(TamperedError, match=f"^manifest.json is invalid at {where}: 5 is not"):
        parse_manifest(data)
    data = dump_json(example()).replace(b'"Iris species', b'"\\udc00Iris species')
    assert parse_manifest(data).description == "\udc00" + example()["description"]


def test_keys_differing_only_by_unpaired_surrogates_are_refused() -> None:
    """Checked as U+FFFD, two such keys would be one: the value the check does not see
    (here the integer, where strings are required) is not let through."""
    doc = example()
    doc["provenance"]["hyperparameters"] = {"a": 5, "b": "x"}
    data = dump_json(doc).replace(b'"a"', b'"\\ud800"').replace(b'"b"', b'"\\udc00"')
    assert not Draft202012Validator(schema()).is_valid(json.loads(data))
    with pytest.raises(TamperedError, match="differ only by unpaired surrogates"):
        parse_manifest(data)
