"""The HTTP side of ``packager serve``: the Open Inference Protocol v2 REST routes on
Starlette, with the request size and concurrency limits.

Errors answer with the protocol's body, ``{"error": "..."}``: 400 for a request the model
cannot take, 404 for a model or version not served, 413 for a body over the limit, 503
(with ``Retry-After``) when the server is at its concurrency limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from packager._version import __version__
from packager.errors import NotFoundError, PackagerError, UsageError
from packager.instance.serve import protocol
from packager.instance.serve.served import Loaded, Served
from packager.runtime import Model

JSON = "application/json"
EXTENSIONS = ["binary_tensor_data"]
RETRY = {"Retry-After": "1"}
# A request whose model answered the last one faster than this runs on the event loop: a
# hop to a thread and back costs more than such a model (tens of microseconds). Slower
# models run on the inference threads, where onnxruntime releases the GIL and the event
# loop goes on reading and answering other requests.
INLINE_SECONDS = 0.002


@dataclass(frozen=True)
class Limits:
    """What one server takes on.

    ``max_request_bytes``: a larger body is refused (413) before it is read whole.
    ``max_concurrent``: inference requests in the server at once, queued for the
    ``threads`` inference threads; one more is refused (503, ``Retry-After: 1``).
    ``poll_seconds``: how often ``current`` is looked at (SIGHUP: at once).
    """

    max_request_bytes: int = 16 << 20
    max_concurrent: int = 64
    threads: int = 4
    poll_seconds: float = 0.5


class _State:
    """What the routes share: the models, the limits and the count of requests in flight."""

    def __init__(
        self,
        served: Served,
        limits: Limits,
        warn: Callable[[str], None],
        on_switch: Callable[[], None],
    ) -> None:
        self.served = served
        self.limits = limits
        self.warn = warn
        self.on_switch = on_switch
        self.active = 0
        self.limiter = anyio.CapacityLimiter(limits.threads)
        # How long each model's last request took to parse, run and encode: see INLINE_SECONDS.
        self.last_seconds: weakref.WeakKeyDictionary[Model, float] = weakref.WeakKeyDictionary()


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(protocol.dump(doc), status, headers, media_type=JSON)


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(protocol.error(message), status, headers, media_type=JSON)


def _failure(e: PackagerError) -> Response:
    if isinstance(e, NotFoundError):
        return _error(str(e), 404)
    if isinstance(e, UsageError):
        return _error(str(e), 400)
    return _error(str(e), 500)


def build_app(
    served: Served,
    limits: Limits,
    *,
    warn: Callable[[str], None],
    on_switch: Callable[[], None] = lambda: None,
) -> Starlette:
    """The ASGI application serving ``served`` within ``limits``; ``warn`` gets one line per
    model version that starts or fails to answer; ``on_switch`` is called (on a thread)
    after versions switched."""
    state = _State(served, limits, warn, on_switch)

    async def live(_request: Request) -> Response:
        return _json({"live": True})

    async def ready(_request: Request) -> Response:
        return _json({"ready": True})

    async def server_metadata(_request: Request) -> Response:
        return _json({"name": "packager", "version": __version__, "extensions": EXTENSIONS})

    async def model_ready(request: Request) -> Response:
        try:
            loaded = await _loaded(state, request)
        except PackagerError as e:
            return _failure(e)
        return _json({"name": loaded.name, "ready": True})

    async def model_metadata(request: Request) -> Response:
        try:
            loaded = await _loaded(state, request)
        except PackagerError as e:
            return _failure(e)
        versions = [loaded.version] if "version" in request.path_params else None
        doc = protocol.model_metadata(
            loaded.model.manifest, versions or state.served.versions(loaded.name)
        )
        return _json(doc)

    async def infer(request: Request) -> Response:
        if state.active >= limits.max_concurrent:
            return _error("the server is at its concurrency limit; retry", 503, RETRY)
        state.active += 1
        try:
            return await _infer(state, request)
        finally:
            state.active -= 1

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [  # the infer routes first: they are matched on every request that counts
        Route(f"{model}/infer", infer, methods=["POST"]),
        Route(f"{versioned}/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(model, model_metadata),
        Route(versioned, model_metadata),
        Route(f"{model}/ready", model_ready),
        Route(f"{versioned}/ready", model_ready),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_follow_current, state)
            yield
            tasks.cancel_scope.cancel()

    return Starlette(routes=routes, lifespan=lifespan)


async def _loaded(state: _State, request: Request) -> Loaded:
    name = request.path_params["name"]
    version = request.path_params.get("version")
    loaded = state.served.current(name)
    if version is None or version == loaded.version:
        return loaded
    return await anyio.to_thread.run_sync(state.served.get, name, version)


async def _infer(state: _State, request: Request) -> Response:
    limit = state.limits.max_request_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return _error(f"the request is larger than {limit} bytes", 413)
    body = await _body(request, limit)
    if body is None:
        return _error(f"the request is larger than {limit} bytes", 413)
    header = request.headers.get("inference-header-content-length")
    try:
        header_length = None if header is None else int(header)
    except ValueError:
        return _error("Inference-Header-Content-Length must be an integer", 400)
    try:
        loaded = await _loaded(state, request)
        if state.last_seconds.get(loaded.model, 0.0) < INLINE_SECONDS:
            start = time.perf_counter()
            outputs = _predict(loaded, body, header_length)
            state.last_seconds[loaded.model] = time.perf_counter() - start
        else:
            outputs = await anyio.to_thread.run_sync(
                _timed_predict, state, loaded, body, header_length, limiter=state.limiter
            )
    except PackagerError as e:
        return _failure(e)
    return Response(outputs, media_type=JSON)


def _timed_predict(state: _State, loaded: Loaded, body: bytes, header_length: int | None) -> bytes:
    start = time.perf_counter()
    try:
        return _predict(loaded, body, header_length)
    finally:
        state.last_seconds[loaded.model] = time.perf_counter() - start


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _predict(loaded: Loaded, body: bytes, header_length: int | None) -> bytes:
    model = loaded.model
    request = protocol.parse_request(body, model.inputs, header_length=header_length)
    outputs = model.predict(request.inputs)
    return protocol.response(
        loaded.name, loaded.version, request.id, protocol.select(outputs, request.outputs)
    )


async def _follow_current(state: _State) -> None:
    """Look at every model's ``current`` each poll interval, or at once on SIGHUP."""
    loop = asyncio.get_running_loop()
    hup = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, hup.set)
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hup.wait(), state.limits.poll_seconds)
            hup.clear()
            switched = await anyio.to_thread.run_sync(state.served.refresh)
            for loaded in switched:
                state.warn(f"serving {loaded.name}@{loaded.version}")
            if switched:
                await anyio.to_thread.run_sync(state.on_switch)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
