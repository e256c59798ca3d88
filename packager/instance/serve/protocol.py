"""The Open Inference Protocol v2 (KServe, Triton, MLServer) as data: requests in, feeds
out; outputs in, response documents out. No HTTP here, and only numpy is imported.

A request names each model input once, with its shape, its datatype (the model's own: no
implicit casts) and its values, either as JSON ``data`` (flat or nested, row-major) or,
with the binary tensor data extension, as ``parameters.binary_data_size`` bytes after the
JSON header (``Inference-Header-Content-Length`` bytes long). BYTES tensors carry the
model's text inputs: JSON strings, or 4-byte little-endian lengths and UTF-8 bytes.

Answers are encoded by orjson (the ``serve`` extra), which writes numpy arrays without
making Python objects of their values. An output the request asks for as binary data
(``parameters.binary_data`` on the output, or ``binary_data_output`` on the request, which
an output's own setting overrides) follows the JSON answer as its bytes, as the extension
says: little-endian, row-major, 4-byte lengths before the UTF-8 bytes of each BYTES
element; its JSON has ``parameters.binary_data_size`` instead of ``data``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import orjson

from packager.core.jsonio import loads_checked_by_caller
from packager.core.manifest import Manifest, TensorSpec
from packager.errors import UsageError

# The protocol's datatype names, and the numpy dtype names manifests use for them.
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "string",
}
_NAMES = {dtype: datatype for datatype, dtype in DATATYPES.items()}
# A manifest may name a dtype the protocol has a name for but numpy no array type: it is
# shown by that name, and an input of it is refused.
_NAMES_ONLY = {"bfloat16": "BF16"}
# By numpy dtype: ``dtype.name`` is slow enough to show in an answer's cost.
_BY_DTYPE = {np.dtype(dtype): name for name, dtype in DATATYPES.items() if dtype != "string"}
# The Python types JSON values may have for each kind of tensor (ints are valid floats).
_JSON_TYPES: dict[str, frozenset[type]] = {
    "f": frozenset((float, int)),
    "i": frozenset((int,)),
    "u": frozenset((int,)),
    "b": frozenset((bool,)),
}
_FLOAT_OR_NULL = frozenset((float, int, type(None)))
_NO_TYPES: frozenset[type] = frozenset()
_TEXT: frozenset[type] = frozenset((str, type(None)))
_LARGEST = {np.dtype(t): float(np.finfo(t).max) for t in ("float16", "float32", "float64")}
_LENGTH = np.dtype("<u4")
# A dimension of a tensor shape: below 2**63, as onnxruntime's shapes are.
_MAX_DIM = 1 << 63
PLATFORM = "onnxruntime_onnx"


class InferRequest(NamedTuple):
    """A parsed inference request; ``outputs`` None asks for every output. ``binary``: the
    outputs asked for as binary data (True) or JSON (False) by name; the others are binary
    when ``binary_output`` is True. ``rows``: the first dimension its inputs share; None
    for a model with an input that has no variable first dimension (or no known rank), or
    none."""

    id: str | None
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    binary_output: bool = False
    binary: Mapping[str, bool] = MappingProxyType({})
    rows: int | None = None


class Framed(NamedTuple):
    """A response body with binary tensor data: its JSON object is the first
    ``header_length`` bytes (the ``Inference-Header-Content-Length`` header)."""

    body: bytes
    header_length: int


def datatype(dtype: str | np.dtype[Any]) -> str:
    """The protocol's name for a manifest dtype name or a numpy dtype."""
    if isinstance(dtype, np.dtype):
        found = _BY_DTYPE.get(dtype)
        if found is not None:
            return found
        return "BYTES" if dtype.kind in "UOS" else dtype.name.upper()
    return _NAMES.get(dtype) or _NAMES_ONLY.get(dtype, dtype.upper())


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """One input or output as model metadata shows it: variable dimensions are -1."""
    shape = [-1] if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": shape}


def model_metadata(
    manifest: Manifest, outputs: Sequence[TensorSpec], versions: Sequence[str]
) -> dict[str, Any]:
    """The model metadata response: name, versions, platform, inputs and ``outputs`` (as
    inference answers them)."""
    return {
        "name": manifest.name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": [tensor_metadata(s) for s in manifest.model.inputs],
        "outputs": [tensor_metadata(s) for s in outputs],
    }


def parse_request(
    body: bytes, specs: Sequence[TensorSpec], *, header_length: int | None = None
) -> InferRequest:
    """Parse an inference request against the model's inputs.

    Raises:
        UsageError: malformed JSON or tensors; an input missing, unknown or given twice;
            an output given twice; a datatype other than the model's; a shape the model
            does not take; values that do not fill the shape or are not of the datatype.
    """
    if header_length is not None and not 0 <= header_length <= len(body):
        raise UsageError(f"Inference-Header-Content-Length {header_length} is out of range")
    header = body if header_length is None else body[:header_length]
    # Its size is bounded by the server; every number it holds that is used is checked
    # where it is used (shapes here, values by the tensor's dtype).
    doc = loads_checked_by_caller(
        header, what="inference request", error=UsageError, fast=orjson.loads
    )
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise UsageError("an inference request is a JSON object with an 'inputs' list")
    binary = _NO_BYTES if header_length is None else memoryview(body)[header_length:]
    plan, batched = _plan(specs)
    feeds: dict[str, np.ndarray] = {}
    for tensor in doc["inputs"]:
        name, array, used = _input(tensor, plan, binary)
        if name in feeds:
            raise UsageError(f"input {name!r} is given twice")
        feeds[name] = array
        if used:
            binary = binary[used:]
    if len(binary):
        raise UsageError(f"{len(binary)} bytes of binary data follow the last input")
    if len(feeds) != len(plan):
        missing = [name for name in plan if name not in feeds]
        raise UsageError(f"the model's inputs {', '.join(map(repr, missing))} are missing")
    if len(feeds) > 1:
        _same_rows(feeds, plan)
    rows = int(next(iter(feeds.values())).shape[0]) if batched else None
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise UsageError("'id' must be a string")
    parameters = doc.get("parameters")
    binary_output = parameters is not None and _flag(
        "the request", parameters, "binary_data_output"
    )
    outputs = doc.get("outputs")
    if outputs is None:
        return InferRequest(request_id, feeds, None, binary_output, rows=rows)
    return InferRequest(request_id, feeds, *_requested(outputs, binary_output), rows=rows)


_NO_BYTES = memoryview(b"")


@dataclass(frozen=True)
class _Input:
    """What a request's tensor is checked against, worked out once per model input:
    ``fixed`` the (position, size) of each fixed dimension, ``rank`` None for any rank;
    ``dtype`` None for text; ``json_types`` the types its JSON values may have;
    ``largest`` the largest value of a float dtype (None for others); ``taken`` False for
    a dtype this server has no array type for (bfloat16: numpy has none); ``batched`` True
    for a known rank of at least 1 with a variable first dimension (the rows, which every
    such input of a request must have as many of)."""

    spec: TensorSpec
    datatype: str
    rank: int | None
    fixed: tuple[tuple[int, int], ...]
    dtype: np.dtype[Any] | None
    json_types: frozenset[type]
    largest: float | None
    taken: bool = True
    batched: bool = False


# The plans of the models' inputs, by the identity of their specs (kept in the entry, so
# that the identity is not reused while it is there).
_PLANS: dict[int, tuple[Sequence[TensorSpec], tuple[dict[str, _Input], bool]]] = {}


def _plan(specs: Sequence[TensorSpec]) -> tuple[dict[str, _Input], bool]:
    """What each input is checked against, by name; and whether every input is batched
    (see :class:`_Input`), so that a request has rows."""
    found = _PLANS.get(id(specs))
    if found is not None and found[0] is specs:
        return found[1]
    plan = {}
    for spec in specs:
        shape = spec.shape
        fixed = (
            ()
            if shape is None
            else tuple((i, d) for i, d in enumerate(shape) if isinstance(d, int))
        )
        rank = None if shape is None else len(shape)
        batched = shape is not None and len(shape) > 0 and not isinstance(shape[0], int)
        if spec.dtype not in _NAMES:
            plan[spec.name] = _Input(
                spec, datatype(spec.dtype), rank, fixed, None, _NO_TYPES, None, taken=False
            )
            continue
        dtype = None if spec.dtype == "string" else np.dtype(spec.dtype)
        types = _TEXT if dtype is None else _JSON_TYPES.get(dtype.kind, _NO_TYPES)
        largest = None if dtype is None else _LARGEST.get(dtype)
        plan[spec.name] = _Input(
            spec, datatype(spec.dtype), rank, fixed, dtype, types, largest, batched=batched
        )
    batched = bool(plan) and all(wanted.batched for wanted in plan.values())
    if len(_PLANS) >= 64:
        _PLANS.clear()
    _PLANS[id(specs)] = (specs, (plan, batched))
    return plan, batched


def _same_rows(feeds: Mapping[str, np.ndarray], plan: Mapping[str, _Input]) -> None:
    """Refuse inputs whose variable first dimensions (their rows) differ: the model would
    fail on them, or answer for rows that are not all there (a row without its colour)."""
    rows = {name: feeds[name].shape[0] for name, wanted in plan.items() if wanted.batched}
    if len(set(rows.values())) > 1:
        sizes = ", ".join(f"{name!r} has {n}" for name, n in rows.items())
        raise UsageError(f"the inputs' first dimensions (rows) differ: {sizes}")


def _requested(
    outputs: Any, binary_output: bool
) -> tuple[tuple[str, ...], bool, Mapping[str, bool]]:
    """The names of the outputs asked for, and how each is to be sent (see InferRequest).

    Raises:
        UsageError: not a list of named objects; an output given twice, as an input
            given twice is (the answer has one tensor of a name: it would follow one of
            the two, silently); a ``binary_data`` that is not a boolean.
    """
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise UsageError("'outputs' must be a list of objects with a 'name'")
    names: dict[str, None] = {}
    binary = {}
    for output in outputs:
        name = output["name"]
        if name in names:
            raise UsageError(f"output {name!r} is given twice")
        names[name] = None
        parameters = output.get("parameters")
        if parameters is not None:
            choice = _flag(f"output {name!r}", parameters, "binary_data", None)
            if choice is not None:
                binary[name] = choice
    return tuple(names), binary_output, binary


def _flag(what: str, parameters: Any, name: str, default: Any = False) -> Any:
    """The boolean parameter ``name`` of the ``parameters`` of ``what`` (``default`` when
    not given).

    Raises:
        UsageError: ``parameters`` is not an object, or the parameter not a boolean.
    """
    if type(parameters) is not dict:
        raise UsageError(f"'parameters' of {what} must be an object")
    value = parameters.get(name, default)
    if value is not default and type(value) is not bool:
        raise UsageError(f"{name} of {what} must be true or false")
    return value


def _input(
    tensor: Any, plan: Mapping[str, _Input], binary: memoryview
) -> tuple[str, np.ndarray, int]:
    """One input tensor as an array of the model's dtype, and the binary bytes it used."""
    name = tensor.get("name") if type(tensor) is dict else None
    if type(name) is not str:
        raise UsageError("each input must be an object with a 'name'")
    wanted = plan.get(name)
    if wanted is None:
        raise UsageError(f"the model has no input {name!r}; it takes {', '.join(plan)}")
    if not wanted.taken:
        raise UsageError(f"input {name!r} is {wanted.datatype}, which this server cannot take")
    shape = _shape(name, tensor.get("shape"), wanted)
    if tensor.get("datatype") != wanted.datatype:
        raise UsageError(f"input {name!r} is {wanted.datatype}, not {tensor.get('datatype')!r}")
    parameters = tensor.get("parameters")
    size = None if parameters is None else _binary_size(name, parameters)
    if size is not None:
        if "data" in tensor:
            raise UsageError(f"input {name!r} has both 'data' and binary_data_size")
        if size > len(binary):
            raise UsageError(f"input {name!r}: {size} bytes of binary data announced, fewer sent")
        return name, _from_binary(name, bytes(binary[:size]), wanted.spec.dtype, shape), size
    data = tensor.get("data", _NO_DATA)
    if data is _NO_DATA:
        raise UsageError(f"input {name!r} has no 'data'")
    return name, _from_json(name, data, wanted, shape), 0


_NO_DATA = object()


def _shape(name: str, shape: Any, wanted: _Input) -> tuple[int, ...]:
    if type(shape) is not list:
        raise _not_a_shape(name)
    for size in shape:
        # type(), not isinstance(): a bool is an int to Python, and not a size to the protocol.
        if type(size) is not int or not 0 <= size < _MAX_DIM:
            raise _not_a_shape(name)
    rank = wanted.rank
    if rank is not None:
        if len(shape) != rank:
            raise _other_shape(name, shape, wanted)
        for i, size in wanted.fixed:
            if shape[i] != size:
                raise _other_shape(name, shape, wanted)
    return tuple(shape)


def _not_a_shape(name: str) -> UsageError:
    return UsageError(f"input {name!r}: 'shape' must be a list of non-negative integers")


def _other_shape(name: str, shape: list[int], wanted: _Input) -> UsageError:
    fixed = dict(wanted.fixed)
    sizes = [fixed.get(i, -1) for i in range(wanted.rank or 0)]
    return UsageError(f"input {name!r} has shape {sizes} (-1: any), not {shape}")


def _binary_size(name: str, parameters: Any) -> int | None:
    if not isinstance(parameters, dict):
        raise UsageError(f"input {name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise UsageError(f"input {name!r}: binary_data_size must be a non-negative integer")
    return size


def _from_json(name: str, data: Any, wanted: _Input, shape: tuple[int, ...]) -> np.ndarray:
    if type(data) is not list:
        raise UsageError(f"input {name!r}: 'data' must be a list")
    # type(), not isinstance(): True is an int to Python, and not a number to the protocol.
    types = set(map(type, data))
    values = data
    if list in types:
        values = _leaves(name, data, shape)
        types = set(map(type, values))
    kind = wanted.dtype
    if kind is None:
        if not types <= _TEXT:
            raise UsageError(f"input {name!r} is BYTES: its values must be strings")
        return _reshape(name, _text_array([v or "" for v in values]), shape)
    dtype = wanted.spec.dtype
    largest = wanted.largest
    missing = False
    if not types <= wanted.json_types:
        if largest is not None and types <= _FLOAT_OR_NULL:
            values = [math.nan if v is None else v for v in values]  # null: a missing value
            missing = True
        else:
            raise UsageError(f"input {name!r} is {datatype(dtype)}: its values must be too")
    # A number too large for the dtype (or for a double: the parser made it infinity) would
    # become infinity; JSON has none. (max() and min() are wrong with NaN in the list: with
    # missing values the array is looked at instead.)
    if (
        largest is not None
        and not missing
        and values
        and (max(values) > largest or min(values) < -largest)
    ):
        raise _out_of_range(name, dtype)
    try:
        if missing:
            with np.errstate(over="raise"):
                array = np.array(values, dtype=kind)
            if np.isinf(array).any():
                raise OverflowError
        else:
            array = np.array(values, dtype=kind)
    except (OverflowError, FloatingPointError) as e:
        raise _out_of_range(name, dtype) from e
    return _reshape(name, array, shape)


def _out_of_range(name: str, dtype: str) -> UsageError:
    return UsageError(f"input {name!r}: a value is out of the range of {datatype(dtype)}")


def _leaves(name: str, data: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """The values of nested ``data``, row-major, which must nest as ``shape`` says: a list
    of shape[0] lists of shape[1] ... values.

    Raises:
        UsageError: the lists do not nest as the shape says.
    """
    level = [data]
    for size in shape:
        if any(type(item) is not list or len(item) != size for item in level):
            break
        level = [value for item in level for value in item]
    else:
        if shape and not any(type(value) is list for value in level):
            return level
    raise UsageError(f"input {name!r}: nested 'data' must nest as shape {list(shape)} says")


def _from_binary(name: str, data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype != "string":
        width = np.dtype(dtype).itemsize
        if len(data) != math.prod(shape) * width:
            raise UsageError(f"input {name!r}: {len(data)} bytes do not fill shape {list(shape)}")
        return _reshape(name, np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")), shape)
    texts: list[str] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise UsageError(f"input {name!r}: a BYTES element is cut short")
        length = int(np.frombuffer(data, _LENGTH, 1, offset)[0])
        offset += 4
        if offset + length > len(data):
            raise UsageError(f"input {name!r}: a BYTES element is cut short")
        try:
            texts.append(data[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UsageError(f"input {name!r}: a BYTES element is not UTF-8 text") from e
        offset += length
    return _reshape(name, _text_array(texts), shape)


def _text_array(texts: list[str]) -> np.ndarray:
    """The strings ``texts`` as an array of them (objects): a string array of numpy's own
    would give every element the room of the longest, and a request of one long text and
    many short ones would take that many times its size in memory."""
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array


def _reshape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError:
        if array.size != math.prod(shape):
            message = f"{array.size} values do not fill shape {list(shape)}"
        else:
            message = f"shape {list(shape)} has more dimensions than this server takes"
        raise UsageError(f"input {name!r}: {message}") from None


def response(
    model: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> bytes | Framed:
    """The response to ``request``: its JSON document, followed by the outputs it asks
    for as binary data (:class:`Framed`) when it asks for some."""
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        doc["id"] = request.id
    tensors = []
    parts: list[bytes] = []
    binary, default = request.binary, request.binary_output
    for name, array in outputs.items():
        dtype = array.dtype
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": _BY_DTYPE.get(dtype) or datatype(dtype),
            "shape": list(array.shape),
        }
        if binary.get(name, default):
            parts.append(to_binary(name, array))
            tensor["parameters"] = {"binary_data_size": len(parts[-1])}
        else:
            tensor["data"] = array if array.ndim == 1 else array.ravel()
        tensors.append(tensor)
    doc["outputs"] = tensors
    header = dump(doc)
    if not parts:
        return header
    return Framed(b"".join((header, *parts)), len(header))


def to_binary(name: str, array: np.ndarray) -> bytes:
    """The values of output ``name`` as the binary tensor data extension sends them:
    little-endian, row-major; BOOL one byte each; BYTES (text) as the 4-byte little-endian
    length and UTF-8 bytes of each element.

    Raises:
        UsageError: an element of an object output is not text.
    """
    if array.dtype.kind not in "UOS":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts: list[bytes] = []
    for value in array.ravel().tolist():
        if type(value) is str:
            value = value.encode("utf-8")
        elif type(value) is not bytes:
            raise UsageError(f"output {name!r} is not text: ask for it as JSON")
        parts += (len(value).to_bytes(4, "little"), value)
    return b"".join(parts)


def select(
    outputs: Mapping[str, np.ndarray], wanted: Sequence[str] | None
) -> Mapping[str, np.ndarray]:
    """The outputs a request asked for (all when ``wanted`` is None: ``outputs`` itself).

    Raises:
        UsageError: the model has no output of a name asked for.
    """
    if wanted is None:
        return outputs
    unknown = [w for w in wanted if w not in outputs]
    if unknown:
        raise UsageError(f"the model has no output {unknown[0]!r}; it has {', '.join(outputs)}")
    return {w: outputs[w] for w in wanted}


def error(message: str) -> bytes:
    """The protocol's error body."""
    return dump({"error": message})


def dump(doc: Any) -> bytes:
    """Compact JSON; a numpy array is a list of its values, a non-finite number is null
    (JSON has no NaN), and a float32 value is written as the shortest decimal that reads
    back as the same float32."""
    return orjson.dumps(doc, default=_tolist, option=orjson.OPT_SERIALIZE_NUMPY)


def _tolist(value: Any) -> Any:
    """What orjson does not write itself: arrays of text (or objects), as lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
