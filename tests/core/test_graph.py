"""The one walk over an ONNX graph's subgraphs, and the tensors it finds."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from packager.core.graph import stored_tensors, walk_graphs


def body(name: str, *nodes: onnx.NodeProto, weight: str | None = None) -> onnx.GraphProto:
    initializers = [numpy_helper.from_array(np.zeros(1, np.float32), weight)] if weight else []
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])
    return helper.make_graph(list(nodes), name, [], [out], initializer=initializers)


def if_node(then: onnx.GraphProto, orelse: onnx.GraphProto) -> onnx.NodeProto:
    return helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=orelse)


def test_every_subgraph_once_each_before_its_own() -> None:
    inner = body("inner", weight="w_inner")
    then = body("then", if_node(inner, body("inner_else")))
    scan = helper.make_node("Custom", [], [], domain="x", bodies=[body("b1"), body("b2")])
    main = body("main", if_node(then, body("else")), scan, weight="w_main")
    names = [g.name for g in walk_graphs(main)]
    # Attributes are in name order: else_branch comes before then_branch.
    assert names == ["main", "else", "then", "inner_else", "inner", "b1", "b2"]


def test_stored_tensors_reach_subgraphs_attributes_and_functions() -> None:
    constant = helper.make_node(
        "Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32), "c_value")
    )
    nested = body("nested", constant, weight="w_nested")
    function = helper.make_function(
        "local", "f", [], ["y"], [if_node(nested, body("other"))], [helper.make_opsetid("", 19)]
    )
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "sv"),
        numpy_helper.from_array(np.zeros(1, np.int64), "si"),
        [4],
    )
    graph = body("main", if_node(body("then", weight="w_then"), body("else")), weight="w_main")
    graph.sparse_initializer.append(sparse)
    model = helper.make_model(graph, functions=[function])
    names = sorted(t.name for t in stored_tensors(model))
    assert names == ["c_value", "si", "sv", "w_main", "w_nested", "w_then"]


def test_deep_nesting_does_not_recurse() -> None:
    depth = 25  # protobuf refuses much deeper messages, so the stack is made short instead
    graph = body("leaf", weight="deepest")
    for level in range(depth):
        graph = body(f"g{level}", if_node(graph, body(f"e{level}")))
    model = helper.make_model(graph)
    limit = sys.getrecursionlimit()
    # Fewer frames to spare than levels: a recursive walk would fail here.
    sys.setrecursionlimit(len(inspect.stack()) + depth // 2)
    try:
        count = sum(1 for _ in walk_graphs(graph))
        tensors = [t.name for t in stored_tensors(model)]
    finally:
        sys.setrecursionlimit(limit)
    assert count == 2 * depth + 1
    assert tensors == ["deepest"]
