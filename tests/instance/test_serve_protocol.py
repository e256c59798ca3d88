"""Open Inference Protocol documents without a server: tritonclient's own encoders make the
requests (its binary BYTES layout is the judge), and hostile bodies end as UsageError only."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.http import InferInput

from packager.core.jsonio import loads_checked_by_caller
from packager.core.manifest import TensorSpec
from packager.errors import UsageError
from packager.instance.serve import protocol

SPECS = (
    TensorSpec("color", "string", (None, 1)),
    TensorSpec("size", "float32", (None, 1)),
    TensorSpec("count", "int64", (None, 1)),
)


def triton_request(
    arrays: dict[str, tuple[np.ndarray, str]], *, binary: bool
) -> tuple[bytes, int | None]:
    """The body (and JSON header length) tritonclient sends for these inputs."""
    from tritonclient.http._utils import _get_inference_request

    inputs = []
    for name, (array, datatype) in arrays.items():
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = _get_inference_request(
        inputs=inputs,
        request_id="",
        outputs=None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    return body, header_length


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_become_feeds(binary: bool) -> None:
    colors = np.array([["red"], ["blue"], ["grün"]], dtype=object)
    sizes = np.array([[1.5], [2.0], [-3.25]], dtype=np.float32)
    counts = np.array([[1], [2], [1 << 40]], dtype=np.int64)
    body, header_length = triton_request(
        {"color": (colors, "BYTES"), "size": (sizes, "FP32"), "count": (counts, "INT64")},
        binary=binary,
    )
    request = protocol.parse_request(body, SPECS, header_length=header_length)
    assert request.inputs["color"].tolist() == [["red"], ["blue"], ["grün"]]
    assert request.inputs["size"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["size"], sizes)
    np.testing.assert_array_equal(request.inputs["count"], counts)
    assert request.outputs is None


def test_outputs_answer_in_the_datatypes_tritonclient_reads() -> None:
    from tritonclient.http import InferResult

    outputs = {
        "label": np.array(["setosa", "virginica"]),
        "probabilities": np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32),
        "flag": np.array([True, False]),
    }
    body = protocol.response("iris", "1.2.0", protocol.InferRequest("r9", {}, None), outputs)
    assert isinstance(body, bytes)
    result = InferResult.from_response_body(body)
    assert result.get_response()["model_version"] == "1.2.0"
    assert result.as_numpy("label").tolist() == ["setosa", "virginica"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), outputs["probabilities"])
    assert result.as_numpy("flag").tolist() == [True, False]
    # Asked for as binary data: each after the JSON, as tritonclient reads it.
    request = protocol.InferRequest("r9", {}, None, binary_output=True)
    framed = protocol.response("iris", "1.2.0", request, outputs)
    assert isinstance(framed, protocol.Framed)
    result = InferResult.from_response_body(framed.body, header_length=framed.header_length)
    assert all("data" not in result.get_output(name) for name in outputs)
    assert [v.decode() for v in result.as_numpy("label")] == ["setosa", "virginica"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), outputs["probabilities"])
    assert result.as_numpy("flag").tolist() == [True, False]


def test_answers_keep_every_float32_and_write_missing_outputs_as_null() -> None:
    from tritonclient.http import InferResult

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 3)).astype(np.float32) * np.float32(1e30)
    scores[0, 0] = np.nan
    outputs = {
        "scores": scores,
        "half": np.array([0.1, 65504.0], dtype=np.float16),
        "wide": np.array([2**62, -3], dtype=np.int64),
    }
    body = protocol.response("m", "1.0.0", protocol.InferRequest(None, {}, None), outputs)
    assert isinstance(body, bytes)
    doc = json.loads(body)
    assert doc["outputs"][0]["data"][0] is None
    assert doc["outputs"][2]["data"] == [2**62, -3]
    result = InferResult.from_response_body(body)
    np.testing.assert_array_equal(result.as_numpy("scores")[1:], scores[1:])
    np.testing.assert_array_equal(result.as_numpy("half"), outputs["half"])


def json_body(data: Any, *, datatype: str = "INT64", shape: Any = (2, 1)) -> bytes:
    tensors = [
        {"name": "color", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "size", "shape": [2, 1], "datatype": "FP32", "data": [1, 2.5]},
        {"name": "count", "shape": list(shape), "datatype": datatype, "data": data},
    ]
    return json.dumps({"inputs": tensors}).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([1.5, 2], "values must be too"),  # a float for an integer input
        ([True, 2], "values must be too"),  # a JSON boolean is not a number
        (["1", 2], "values must be too"),
        ([None, 2], "values must be too"),  # no missing value in an integer input
        ([1, 2, 3], "do not fill shape"),
        ([[1], [{"a": 1}]], "values must be too"),
        ([2**63, 1], "out of the range of INT64"),
    ],
)
def test_values_that_are_not_of_the_datatype_are_refused(data: Any, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        protocol.parse_request(json_body(data), SPECS)


@pytest.mark.parametrize(
    "values",
    [
        "[1e39, 2.5]",  # finite, but not in float32
        "[-1e39, 2.5]",
        "[1e999, 2.5]",  # no double: the parser's infinity
        "[null, 1e39]",  # beside a missing value
        "[1e999, null]",
    ],
)
def test_numbers_too_large_for_the_datatype_are_refused(values: str) -> None:
    body = json_body([1, 2]).replace(b"[1, 2.5]", values.encode())
    with pytest.raises(UsageError, match="out of the range of FP32"):
        protocol.parse_request(body, SPECS)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "count", "name": "size"}]}',
        b'{"inputs": [], "id": "a", "id": "b"}',
        b'{"inputs": [{"parameters": {"binary_data_size": 1, "binary_data_size": 2}}]}',
        b'{"inputs": [{"name": "size", "shape": [1, 1], "datatype": "FP32", "data": [NaN]}]}',
        b'{"inputs": [{"name": "size", "shape": [1, 1], "datatype": "FP32", "data": [-Infinity]}]}',
    ],
)
def test_a_key_given_twice_and_non_standard_numbers_are_refused(body: bytes) -> None:
    with pytest.raises(UsageError, match="not acceptable JSON"):
        protocol.parse_request(body, SPECS)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [], "id": "\\ud800"}',
        b'{"inputs": [], "id": "a\\udfffb"}',
        b'{"inputs": [], "\\udc00": 1}',
        b'{"inputs": [{"name": "size", "parameters": {"x": ["\\ud83d"]}}]}',
    ],
)
def test_a_string_that_is_not_valid_unicode_is_refused(body: bytes) -> None:
    # orjson refuses it; the strict parser would take it, and the answer could not echo it.
    with pytest.raises(UsageError, match="not valid Unicode"):
        protocol.parse_request(body, SPECS)


def test_a_surrogate_pair_and_an_escaped_backslash_are_read() -> None:
    doc = loads_checked_by_caller(
        b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}', what="request", error=UsageError
    )
    assert doc == {"a": "\U0001f600", "b": "\\ud800"}


@pytest.mark.parametrize("number", [b"18446744073709551616", b"-9223372036854775809"])
@pytest.mark.parametrize("where", ["data", "shape"])
@pytest.mark.parametrize("strict", [False, True])
def test_an_integer_past_64_bits_is_refused_by_either_parser(
    number: bytes, where: str, strict: bool
) -> None:
    # orjson reads it as a float, the strict parser as an int: either is refused.
    if where == "data":
        body = json_body([1, 2]).replace(b"[1, 2]", b"[" + number + b", 2]")
    else:
        body = json_body([1, 2]).replace(b"[2, 1]", b"[" + number + b", 1]", 1)
    if strict:  # a colon in a string: the fast parse cannot be proven, the strict one is taken
        body = body.replace(b"{", b'{"id": "a:b", ', 1)
    with pytest.raises(UsageError):
        protocol.parse_request(body, SPECS)


def test_an_integer_of_more_digits_than_python_reads_is_refused() -> None:
    body = json_body([1, 2]).replace(b"[1, 2]", b"[" + b"9" * 5000 + b", 2]")
    with pytest.raises(UsageError, match="not valid JSON"):
        protocol.parse_request(body, SPECS)


def test_nested_and_flat_data_and_null_as_nan() -> None:
    nested = protocol.parse_request(json_body([[1], [2]]), SPECS)
    flat = protocol.parse_request(json_body([1, 2]), SPECS)
    assert nested.inputs["count"].tolist() == flat.inputs["count"].tolist() == [[1], [2]]
    # Nested data must nest as its shape says: rows of other lengths, lists mixed with
    # values, or deeper than the shape are refused.
    for ragged in ([[1], [2, 3]], [1, [2]], [[1], 2], [[[1]], [[2]]], [[1, 2]]):
        with pytest.raises(UsageError, match="must nest as shape"):
            protocol.parse_request(json_body(ragged, shape=(2, 1)), SPECS)
    doc = json.loads(json_body([1, 2]))
    doc["inputs"][1]["data"] = [None, 2.5]
    size = protocol.parse_request(json.dumps(doc).encode(), SPECS).inputs["size"]
    assert np.isnan(size[0, 0]) and size[1, 0] == 2.5


def test_binary_data_must_fill_its_tensor() -> None:
    body, header_length = triton_request(
        {
            "color": (np.array([["a"]], dtype=object), "BYTES"),
            "size": (np.array([[1.0]], dtype=np.float32), "FP32"),
            "count": (np.array([[1]], dtype=np.int64), "INT64"),
        },
        binary=True,
    )
    assert header_length is not None
    with pytest.raises(UsageError, match="fewer sent|cut short|do not fill"):
        protocol.parse_request(body[:-1], SPECS, header_length=header_length)
    with pytest.raises(UsageError, match="follow the last input"):
        protocol.parse_request(body + b"x", SPECS, header_length=header_length)
    with pytest.raises(UsageError, match="out of range"):
        protocol.parse_request(body, SPECS, header_length=len(body) + 1)


def test_a_shape_of_more_dimensions_than_numpy_makes_is_refused() -> None:
    any_rank = (TensorSpec("x", "float32", None),)
    for shape, reason in (([1] * 65, "more dimensions"), ([2] * 65, "do not fill")):
        doc = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": [1.0]}]}
        with pytest.raises(UsageError, match=reason):
            protocol.parse_request(json.dumps(doc).encode(), any_rank)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "inputs",
                            "name",
                            "shape",
                            "datatype",
                            "data",
                            "parameters",
                            "binary_data_size",
                            "outputs",
                            "id",
                            "color",
                            "size",
                        ]
                    ),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=30,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
    header_length=st.none() | st.integers(-5, 400),
)
def test_hostile_bodies_end_as_usage_errors(body: bytes, header_length: int | None) -> None:
    with contextlib.suppress(UsageError):
        protocol.parse_request(body, SPECS, header_length=header_length)


def render(value: Any) -> str:
    """JSON text of ``value``, where a tuple of (key, value) pairs is an object that may
    repeat a key (which no JSON encoder writes)."""
    if isinstance(value, tuple):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


KEYS = st.sampled_from(["inputs", "name", "data", "parameters", "a:b", "{", "id"])
TEXTS = st.recursive(
    st.none()
    | st.booleans()
    # Outside this range orjson reads an integer as a float; the caller refuses both.
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["x", "a:b", "{", "}", "ü", "\ud800", "\udfff", "\U0001f600", "\\ud800"]),
    lambda children: (
        st.lists(children, max_size=4) | st.lists(st.tuples(KEYS, children), max_size=4).map(tuple)
    ),
    max_leaves=25,
).map(render)


def parsed(text: str, fast: Any) -> tuple[str, Any]:
    try:
        doc = loads_checked_by_caller(text.encode(), what="request", error=UsageError, fast=fast)
    except UsageError as e:
        return "refused", str(e)
    return "parsed", doc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS)
def test_the_fast_parse_is_taken_only_when_it_is_the_strict_one(text: str) -> None:
    """With orjson first, every text is parsed or refused exactly as by the strict parser
    alone: a key given twice, at any depth, is refused."""
    import orjson

    assert parsed(text, orjson.loads) == parsed(text, None)


@pytest.mark.parametrize("binary", [True, False])
def test_the_fast_parse_is_taken_for_the_requests_clients_send(binary: bool) -> None:
    import orjson

    made: list[Any] = []

    def fast(data: bytes) -> Any:
        made.append(orjson.loads(data))
        return made[-1]

    array = np.array([[1.5], [2.0]], dtype=np.float32)
    body, header_length = triton_request({"size": (array, "FP32")}, binary=binary)
    header = body[:header_length] if header_length is not None else body
    doc = loads_checked_by_caller(header, what="request", error=UsageError, fast=fast)
    assert doc is made[-1]
    # A colon in a string: the count cannot prove it, the strict parser reads it.
    doc = loads_checked_by_caller(b'{"id": "a:b"}', what="request", error=UsageError, fast=fast)
    assert doc == {"id": "a:b"} and doc is not made[-1]


def test_binary_data_in_a_shape_numpy_cannot_make_is_refused() -> None:
    any_rank = (TensorSpec("x", "float32", None),)
    doc = {
        "inputs": [
            {
                "name": "x",
                "shape": [1] * 65,
                "datatype": "FP32",
                "parameters": {"binary_data_size": 4},
            }
        ]
    }
    header = json.dumps(doc).encode()
    with pytest.raises(UsageError, match="more dimensions"):
        protocol.parse_request(header + b"\0\0\x80?", any_rank, header_length=len(header))


def test_an_input_of_a_dtype_numpy_has_no_array_for_is_refused_by_name() -> None:
    specs = (TensorSpec("x", "bfloat16", (None, 2)),)
    assert protocol.tensor_metadata(specs[0])["datatype"] == "BF16"
    for datatype in ("BF16", "FP32"):
        doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": [1, 2]}]}
        with pytest.raises(UsageError, match="'x' is BF16, which this server cannot take"):
            protocol.parse_request(json.dumps(doc).encode(), specs)


def rows_body(**shapes: list[int]) -> bytes:
    """A request giving each of SPECS' inputs the shape named, filled with values."""
    datatypes = {"color": ("BYTES", "a"), "size": ("FP32", 1.5), "count": ("INT64", 3)}
    tensors = []
    for name, (datatype, value) in datatypes.items():
        shape = shapes.get(name, [2, 1])
        data = [value] * int(np.prod(shape))
        tensors.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return json.dumps({"inputs": tensors}).encode()


def test_an_input_or_an_output_given_twice_is_refused_by_name() -> None:
    """Each names one tensor: a second of the same name would be merged with the first
    (its data, or for an output whether it is sent as binary data), silently."""
    body = json.loads(rows_body())
    inputs = body["inputs"]
    with pytest.raises(UsageError, match="^input 'size' is given twice$"):
        protocol.parse_request(json.dumps({"inputs": [*inputs, inputs[1]]}).encode(), SPECS)
    outputs = [
        {"name": "label"},
        {"name": "probabilities"},
        {"name": "label", "parameters": {"binary_data": True}},
    ]
    doc = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    with pytest.raises(UsageError, match="^output 'label' is given twice$"):
        protocol.parse_request(doc, SPECS)
    doc = json.dumps({"inputs": inputs, "outputs": outputs[:2]}).encode()
    assert protocol.parse_request(doc, SPECS).outputs == ("label", "probabilities")


@pytest.mark.parametrize(
    ("shapes", "reason"),
    [
        ({"size": [3, 1]}, "'color' has 2, 'size' has 3, 'count' has 2"),
        ({"color": [0, 1], "size": [1, 1], "count": [1, 1]}, "'color' has 0, 'size' has 1"),
    ],
)
def test_inputs_of_different_rows_are_refused(shapes: dict[str, list[int]], reason: str) -> None:
    with pytest.raises(UsageError, match="first dimensions \\(rows\\) differ") as refused:
        protocol.parse_request(rows_body(**shapes), SPECS)
    assert reason in str(refused.value)
    same = protocol.parse_request(rows_body(color=[3, 1], size=[3, 1], count=[3, 1]), SPECS)
    assert [a.shape for a in same.inputs.values()] == [(3, 1)] * 3


def test_only_variable_first_dimensions_of_a_known_rank_must_agree() -> None:
    specs = (
        TensorSpec("rows", "float32", ("batch", 2)),
        TensorSpec("table", "float32", (3,)),
        TensorSpec("anything", "float32", None),
    )
    tensors = [
        {"name": "rows", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
        {"name": "table", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "anything", "shape": [], "datatype": "FP32", "data": [1]},
    ]
    request = protocol.parse_request(json.dumps({"inputs": tensors}).encode(), specs)
    assert [a.shape for a in request.inputs.values()] == [(1, 2), (3,), ()]
    symbols = (TensorSpec("a", "float32", ("n", 1)), TensorSpec("b", "float32", (None, 1)))
    tensors = [
        {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]},
        {"name": "b", "shape": [1, 1], "datatype": "FP32", "data": [1]},
    ]
    with pytest.raises(UsageError, match="'a' has 2, 'b' has 1"):
        protocol.parse_request(json.dumps({"inputs": tensors}).encode(), symbols)
