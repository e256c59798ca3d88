"""Dynamic batching (``packager serve --max-batch-size N``): inference requests for one
model version whose bodies are read in the same turn of the event loop, or in the next
poll of the sockets, run as one batch, their rows one after the other, and each request
gets its own rows of the outputs back.

On a busy server the model then runs once for many requests: what onnxruntime costs per
run, a large part of a small model's answer, is paid once. Nothing waits for a batch to
fill: a batch runs two turns after its first request was read, with the requests read by
the same poll of the sockets as that one and by the poll after it. That second poll
matters under load: the clients the last batch answered send their next requests
meanwhile, and a batch that took only one poll's requests would leave them to the next
one (at 16 clients, a third of them a batch, against nearly all).

It is for models whose rows are independent, each row's outputs depending on that row
alone, as those of scikit-learn, XGBoost and LightGBM are. A model that looks across the
rows of its input (a normalization over the batch) would answer a request differently in a
batch, so batching is off unless the server is told (as Triton's and MLServer's are). The
floating-point outputs of a model whose arithmetic depends on how many rows it runs (matrix
products) may differ in their last bits from the answer to a request alone.

The manifest decides which models are batched: every input and every output has a variable
first dimension (the rows; the same one where both are named). Requests join a batch with
the same shapes past their rows, within the maximum of rows; a request whose values the
model refuses (a missing value) is refused before it joins. Should onnxruntime fail on a
batch, or its outputs not have a row per input row after all, each of its requests is run
alone, as without batching. No HTTP here.
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
from packager.runtime import Model

# An answer: the response body (with binary tensor data: Framed), or why the request is
# refused.
Answer = bytes | protocol.Framed | PackagerError
# Whether a model is batched, by the identity of its manifest's specs (kept in the entry,
# so that the identity is not reused while it is there).
_BATCHED: dict[int, tuple[Any, bool]] = {}


def batched(model: Model) -> bool:
    """Whether requests for ``model`` may run in batches: its manifest gives each input and
    each output a variable first dimension, the same one where both are named."""
    specs = model.manifest.model
    found = _BATCHED.get(id(specs))
    if found is not None and found[0] is specs:
        return found[1]
    firsts = [_first(spec) for spec in (*specs.inputs, *specs.outputs)]
    named = {first for first in firsts if isinstance(first, str)}
    answer = bool(specs.inputs) and all(first != () for first in firsts) and len(named) <= 1
    if len(_BATCHED) >= 64:
        _BATCHED.clear()
    _BATCHED[id(specs)] = (specs, answer)
    return answer


def _first(spec: TensorSpec) -> Any:
    """The variable first dimension of ``spec`` (its name, or None); () for none."""
    shape = spec.shape
    if not shape or isinstance(shape[0], int):
        return ()
    return shape[0]


def shapes(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
    """What requests must share to run together: their inputs' shapes past the rows."""
    return tuple(feeds[spec.name].shape[1:] for spec in specs)


class Batch:
    """Requests of one model version waiting to run together. The first one's task runs
    the batch and hands the others their answers through their futures."""

    __slots__ = ("feeds", "futures", "requests", "rows", "size", "total")

    def __init__(
        self, request: InferRequest, feeds: Mapping[str, np.ndarray], rows: int, size: int
    ) -> None:
        """A batch begun by ``request`` (onnxruntime ``feeds`` of ``rows`` rows, from a body
        of ``size`` bytes)."""
        self.requests = [request]
        self.feeds = [feeds]
        self.rows = [rows]
        self.futures: list[asyncio.Future[Answer]] = []
        self.total = rows
        self.size = size

    def join(
        self, request: InferRequest, feeds: Mapping[str, np.ndarray], rows: int, size: int
    ) -> asyncio.Future[Answer]:
        """The future of the answer to ``request`` (as for :meth:`__init__`)."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.requests.append(request)
        self.feeds.append(feeds)
        self.rows.append(rows)
        self.futures.append(future)
        self.total += rows
        self.size += size
        return future

    def settle(self, answers: Sequence[Answer]) -> Answer:
        """Hand the requests that joined their answers; the first request's is returned."""
        for future, answer in zip(self.futures, answers[1:], strict=True):
            if not future.done():  # a request whose task was cancelled waits for nothing
                future.set_result(answer)
        return answers[0]

    def fail(self, error: Exception) -> None:
        """The batch did not run (the first request went away, or the server failed): the
        requests that joined end with ``error``."""
        for future in self.futures:
            if not future.done():
                future.set_exception(error)


class Refused(Exception):
    """No request of a batch was answered: what ran says nothing of what the model costs.
    ``answers`` are the refusals."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__("every request of the batch was refused")
        self.answers = answers


def run(loaded: Loaded, batch: Batch) -> list[Answer]:
    """The answers to the requests of ``batch``: run as one, or each alone should
    onnxruntime fail on them together.

    Raises:
        Refused: every request was refused.
        Exception: a fault of the server's (not a refusal of a request's).
    """
    requests = batch.requests
    if len(requests) > 1:
        first = batch.feeds[0]
        feeds = {name: np.concatenate([f[name] for f in batch.feeds]) for name in first}
        try:
            parts = _split(loaded.model.predict_feeds(feeds), batch.rows)
        except PackagerError:
            parts = None  # onnxruntime failed on them: each alone says why, or answers
        if parts is not None:
            pairs = zip(requests, parts, strict=True)
            return [_refusal_or(_response, loaded, r, part) for r, part in pairs]
    answers = [_refusal_or(alone, loaded, request) for request in requests]
    if all(isinstance(answer, PackagerError) for answer in answers):
        raise Refused(answers)
    return answers


def _split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, Any]] | None:
    """Each request's rows of ``outputs``; None when an output does not have a row per
    input row after all (its manifest says it has)."""
    if any(array.ndim == 0 or len(array) != sum(rows) for array in outputs.values()):
        return None
    parts = []
    start = 0
    for n in rows:
        parts.append({name: array[start : start + n] for name, array in outputs.items()})
        start += n
    return parts


def alone(loaded: Loaded, request: InferRequest) -> bytes | protocol.Framed:
    """The response to ``request`` run by itself.

    Raises:
        PackagerError: the model refuses the request, or has no output it asks for.
    """
    return _response(loaded, request, loaded.model.predict(request.inputs))


def _response(
    loaded: Loaded, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> bytes | protocol.Framed:
    selected = protocol.select(outputs, request.outputs)
    return protocol.response(loaded.name, loaded.version, request, selected)


def _refusal_or(answer: Callable[..., bytes | protocol.Framed], *args: Any) -> Answer:
    """``answer(*args)``, or the refusal it raised."""
    try:
        return answer(*args)
    except PackagerError as e:
        return e
