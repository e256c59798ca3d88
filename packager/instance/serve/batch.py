"""Dynamic batching (``packager serve --max-batch-size N``): inference requests for one
model version whose bodies are read in the same turn of the event loop run as one batch,
their rows one after the other, and each request gets its own rows of the outputs back.

On a busy server the model then runs once for many requests: what onnxruntime costs per
run, which for a small model is most of an answer, is paid once. Nothing waits for a batch
to fill: a request waits only for the others read in the same turn, so a request that comes
alone is answered one turn of the event loop later than without batching.

It is for models whose rows are independent, each row's outputs depending on that row
alone, as those of scikit-learn, XGBoost and LightGBM are. A model that looks across the
rows of its input (a normalization over the batch) would answer a request differently in a
batch, so batching is off unless the server is told (as Triton's and MLServer's are). The
floating-point outputs of a model whose arithmetic depends on how many rows it runs (matrix
products) may differ in their last bits from the answer to a request alone.

A request joins a batch when every input of the model has a variable first dimension (its
rows), its inputs' other dimensions are those of the batch's first request, and the rows
stay within the maximum. When the model refuses the batch (a missing value in one request,
onnxruntime failing) or its outputs do not come one row per input row, each request of the
batch is answered alone, as without batching. No HTTP here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from packager.core.manifest import TensorSpec
from packager.errors import PackagerError
from packager.instance.serve import protocol
from packager.instance.serve.protocol import InferRequest
from packager.instance.serve.served import Loaded

# An answer: the response body, or why the request is refused.
Answer = bytes | PackagerError


def key(specs: Sequence[TensorSpec], request: InferRequest) -> tuple[Any, ...] | None:
    """What requests must share to run together, their inputs' shapes past the rows, with
    their rows first; None for a model with an input that has no variable first
    dimension."""
    rows = protocol.rows(specs, request.inputs)
    if rows is None:
        return None
    return (rows, *(request.inputs[spec.name].shape[1:] for spec in specs))


class Batch:
    """Requests of one model version waiting to run together. The first one's task runs
    the batch and hands the others their answers through their futures."""

    __slots__ = ("futures", "requests", "rows", "shapes", "size", "total")

    def __init__(self, request: InferRequest, key: tuple[Any, ...], size: int) -> None:
        """A batch of ``request`` (its :func:`key`, and its body of ``size`` bytes)."""
        self.shapes = key[1:]
        self.requests = [request]
        self.rows: list[int] = [key[0]]
        self.total: int = key[0]
        self.size = size
        self.futures: list[asyncio.Future[Answer]] = []

    def join(
        self, request: InferRequest, key: tuple[Any, ...], size: int, most: int
    ) -> asyncio.Future[Answer] | None:
        """The future of ``request``'s answer (its body ``size`` bytes) once it has joined;
        None when it cannot (other shapes, or more rows than ``most`` in all)."""
        rows = key[0]
        if key[1:] != self.shapes or self.total + rows > most:
            return None
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.requests.append(request)
        self.rows.append(rows)
        self.total += rows
        self.size += size
        self.futures.append(future)
        return future

    def settle(self, answers: Sequence[Answer]) -> Answer:
        """Hand the joined requests their answers; the first request's is returned."""
        for future, answer in zip(self.futures, answers[1:], strict=True):
            if not future.done():  # a request whose task was cancelled waits for nothing
                future.set_result(answer)
        return answers[0]

    def fail(self, error: BaseException) -> None:
        """The batch was not run (cancelled, or the server failed): the joined requests end
        with ``error``."""
        for future in self.futures:
            if not future.done():
                future.set_exception(error)


def run(loaded: Loaded, requests: Sequence[InferRequest], rows: Sequence[int]) -> list[Answer]:
    """The answers to ``requests`` (of ``rows`` rows each), run as one batch where the model
    takes it and each alone where it does not.

    Raises:
        Exception: a fault of the server's (not a refusal of a request's).
    """
    if len(requests) > 1:
        model = loaded.model
        first = requests[0].inputs
        feeds = {name: np.concatenate([r.inputs[name] for r in requests]) for name in first}
        try:
            outputs = model.predict(feeds)
        except PackagerError:
            outputs = None  # one request is refused, or onnxruntime failed: each alone says
        parts = None if outputs is None else split(outputs, rows)
        if parts is not None:
            return [respond(loaded, r, part) for r, part in zip(requests, parts, strict=True)]
    return [_refusal_or(alone, loaded, request) for request in requests]


def split(
    outputs: Mapping[str, np.ndarray], rows: Sequence[int]
) -> list[dict[str, np.ndarray]] | None:
    """Each request's rows of ``outputs``; None when an output does not have one row per
    input row."""
    total = sum(rows)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        return None
    parts = []
    start = 0
    for n in rows:
        parts.append({name: array[start : start + n] for name, array in outputs.items()})
        start += n
    return parts


def alone(loaded: Loaded, request: InferRequest) -> bytes:
    """The response to ``request`` run by itself.

    Raises:
        PackagerError: the model refuses the request, or has no output it asks for.
    """
    return _response(loaded, request, loaded.model.predict(request.inputs))


def respond(loaded: Loaded, request: InferRequest, outputs: Mapping[str, np.ndarray]) -> Answer:
    """The response to ``request`` with its rows of the batch's ``outputs``."""
    return _refusal_or(_response, loaded, request, outputs)


def _response(loaded: Loaded, request: InferRequest, outputs: Mapping[str, np.ndarray]) -> bytes:
    selected = protocol.select(outputs, request.outputs)
    return protocol.response(loaded.name, loaded.version, request.id, selected)


def _refusal_or(answer: Callable[..., bytes], *args: Any) -> Answer:
    """``answer(*args)``, or the refusal it raised."""
    try:
        return answer(*args)
    except PackagerError as e:
        return e
