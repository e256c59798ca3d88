"""Checks of an ONNX graph's bytes against its signed manifest, before anything loads it (pure).

onnxruntime follows a tensor's external-data ``location`` wherever it points:
``../../etc/shadow``, an absolute path, a file another model installed. So
before a session is created, every external-data entry must name a plain file
in the model's own directory that the manifest lists with role ``weights``
(and so is signed, size-checked and installed as a regular file), and the
declared offset and length must fit inside that file's signed size.

The graph must also declare the IR version and opsets the manifest states:
the compatibility check reads the manifest, so the two must agree.

Only ``onnx`` protobuf parsing is used; nothing is read from disk here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from packager.core.compat import domain_key
from packager.core.manifest import Manifest
from packager.errors import TamperedError

WEIGHTS_ROLE = "weights"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_KNOWN_KEYS = frozenset({"location", "offset", "length", "checksum"})


def check_graph(model_bytes: bytes, manifest: Manifest) -> None:
    """Check the model file's bytes against the manifest before the model is loaded.

    Raises:
        TamperedError: the bytes are not an ONNX model; the IR version or
            opsets differ from the manifest's; or a tensor's external data
            names a path that is not a plain file name listed in the manifest
            with role "weights", or reaches past that file's signed size.
    """
    import onnx  # deferred: parsing needs protobuf, `packager --help` does not

    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as e:  # protobuf's DecodeError and friends
        raise TamperedError(f"{manifest.model.path} is not a readable ONNX model: {e}") from e
    if int(model.ir_version) != manifest.model.ir_version:
        raise TamperedError(
            f"{manifest.model.path} has IR version {model.ir_version}, "
            f"manifest.json says {manifest.model.ir_version}"
        )
    graph_opsets: dict[str, int] = {}
    for opset in model.opset_import:
        key = domain_key(opset.domain)
        graph_opsets[key] = max(graph_opsets.get(key, 0), int(opset.version))
    declared = {domain_key(d): v for d, v in manifest.model.opsets.items()}
    if graph_opsets != declared:
        raise TamperedError(
            f"{manifest.model.path} imports opsets {dict(sorted(graph_opsets.items()))}, "
            f"manifest.json says {dict(sorted(declared.items()))}"
        )
    weights = {f.path: f.size for f in manifest.files if f.role == WEIGHTS_ROLE}
    model_dir = posixpath.dirname(manifest.model.path)
    for tensor in stored_tensors(model):
        if is_external(tensor):
            _check_entry(tensor, weights, model_dir, manifest.model.path)


def _check_entry(tensor: Any, weights: dict[str, int], model_dir: str, model_path: str) -> None:
    name = tensor.name or "(unnamed)"
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _KNOWN_KEYS or entry.key in entries:
            raise TamperedError(
                f"tensor {name!r} in {model_path} has an unexpected external-data key "
                f"{entry.key[:40]!r}"
            )
        entries[entry.key] = entry.value
    location = entries.get("location", "")
    if not _PLAIN_NAME.fullmatch(location) or location in (".", ".."):
        raise TamperedError(
            f"tensor {name!r} in {model_path} keeps its data at {location[:80]!r}: external "
            "data must be a plain file name next to the model"
        )
    path = posixpath.join(model_dir, location) if model_dir else location
    size = weights.get(path)
    if size is None:
        raise TamperedError(
            f"tensor {name!r} in {model_path} keeps its data in {path!r}, which manifest.json "
            "does not list as weights"
        )
    offset = _non_negative(entries.get("offset", "0"), name, "offset")
    length = _non_negative(entries["length"], name, "length") if "length" in entries else None
    end = offset + (length or 0)
    if offset > size or end > size:
        raise TamperedError(
            f"tensor {name!r} in {model_path} reads bytes {offset}..{end} of {path}, "
            f"which has {size} bytes"
        )


# More digits than a 64-bit size holds; thousands would make int() raise.
_MAX_SIZE_DIGITS = 19


def _non_negative(value: str, tensor: str, key: str) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > _MAX_SIZE_DIGITS:
        raise TamperedError(f"tensor {tensor!r}: external-data {key} {value[:40]!r} is not a size")
    return int(value)


def is_external(tensor: Any) -> bool:
    """Whether a TensorProto keeps (or claims to keep) its data in another file."""
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def walk_graphs(graph: Any) -> Iterator[Any]:
    """An onnx.GraphProto and every subgraph nested in its node attributes (If, Loop,
    Scan bodies), depth first, each graph before its subgraphs.

    The one walk over subgraphs: checks and converters all use it, so none can miss a
    level. It keeps its own stack: nesting depth costs memory, not recursion.
    """
    stack = [graph]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(_subgraphs(current.node))))


def stored_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto an onnx.ModelProto stores: initializers, sparse ones and node
    attributes, in the main graph, every subgraph and every local function."""
    for graph in walk_graphs(model.graph):
        yield from _graph_tensors(graph)
    for function in model.functions:
        yield from _node_tensors(function.node)
        for sub in _subgraphs(function.node):
            for graph in walk_graphs(sub):
                yield from _graph_tensors(graph)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Tensors one graph stores itself (its subgraphs excluded)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from _tensor_parts(sparse)
    yield from _node_tensors(graph.node)


def _subgraphs(nodes: Iterable[Any]) -> Iterator[Any]:
    """The graphs held directly in the attributes of ``nodes`` (not their subgraphs)."""
    import onnx

    kinds = onnx.AttributeProto
    return _attribute_values(nodes, {kinds.GRAPH, kinds.GRAPHS})


def _node_tensors(nodes: Iterable[Any]) -> Iterator[Any]:
    """Tensors held in the attributes of ``nodes`` themselves (subgraphs excluded)."""
    import onnx

    kinds = onnx.AttributeProto
    tensor_kinds = {kinds.TENSOR, kinds.TENSORS, kinds.SPARSE_TENSOR, kinds.SPARSE_TENSORS}
    for tensor in _attribute_values(nodes, tensor_kinds):
        yield from _tensor_parts(tensor)


def _attribute_values(nodes: Iterable[Any], kinds: Collection[int]) -> Iterator[Any]:
    """The values of the attributes of ``nodes`` whose type is one of ``kinds``; a
    repeated attribute (GRAPHS, TENSORS ...) gives each of its values."""
    from onnx.helper import get_attribute_value

    for node in nodes:
        for attr in node.attribute:
            if attr.type in kinds:
                value = get_attribute_value(attr)
                yield from value if isinstance(value, list) else (value,)


def _tensor_parts(tensor: Any) -> Iterator[Any]:
    """A TensorProto itself; the values and indices TensorProtos of a SparseTensorProto."""
    import onnx

    if isinstance(tensor, onnx.SparseTensorProto):
        yield tensor.values
        yield tensor.indices
    else:
        yield tensor
