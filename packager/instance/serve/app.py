"""The HTTP side of ``packager serve``: the Open Inference Protocol v2 REST routes, with
the request size and concurrency limits. Inference is plain ASGI; Starlette routes the
rest.

Errors answer with the protocol's body, ``{"error": "..."}``: 400 for a request the model
cannot take, 404 for a model or version not served (or a path not served, a trailing slash
included: nothing is redirected), 405 for an inference that is not a POST, 408 for a body
not received within the read timeout (a request's head has it too: limits.py), 413 for a
body over the limit, 503 (with ``Retry-After``) when the server is at its concurrency
limit. A request counts against that limit only once its body is read: clients that send
theirs slowly, or never, hold no place.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from packager._version import __version__
from packager.errors import NotFoundError, PackagerError, UsageError
from packager.instance.serve import batch, protocol
from packager.instance.serve.batch import Answer, Batch
from packager.instance.serve.limits import pop_late
from packager.instance.serve.protocol import InferRequest
from packager.instance.serve.served import Loaded, Served

JSON = "application/json"
EXTENSIONS = ["binary_tensor_data"]
# What a request refused at the concurrency limit is answered (503, Retry-After: 1).
AT_LIMIT = protocol.error("the server is at its concurrency limit; retry")
# The inference routes, answered without Starlette; {name} and {version} as it reads them.
_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
# What _INFER made of the paths seen last (None: not an inference), as a regex match costs
# more than a look-up; bounded in number and length, since clients choose the paths.
_ROUTES: dict[str, tuple[str, str | None] | None] = {}
_MAX_ROUTES = 1024
_MAX_ROUTE_LENGTH = 256
_CONTENT_TYPE = (b"content-type", b"application/json")
# A body with binary tensor data: its JSON header's length goes in a header of its own.
_BINARY_TYPE = (b"content-type", b"application/octet-stream")
_HEADER_LENGTH = b"inference-header-content-length"
# A request whose model answered the last one in less CPU time than this runs on the event
# loop: a hop to a thread and back costs more than such a model (tens of microseconds). Slower
# models run on the inference threads, where onnxruntime releases the GIL and the event
# loop goes on reading and answering other requests.
INLINE_SECONDS = 0.002
# ... and only when its body is smaller than this: a large body costs more to parse and run
# than the last request did, and would hold up every other client on the loop.
INLINE_BYTES = 64 << 10
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What one server takes on.

    ``max_request_bytes``: a larger body is refused (413) before it is read whole.
    ``read_seconds``: a body not read whole by then is refused (408); so is a request's
    head (request line and headers) not read whole by then after the connection opened or
    the response before ended (limits.py).
    ``max_concurrent``: inference requests in the server at once (their bodies read),
    queued for the ``threads`` inference threads; one more is refused (503,
    ``Retry-After: 1``).
    ``poll_seconds``: how often ``current`` is looked at (SIGHUP: at once).
    ``max_batch_size``: inference requests for one model version read in the same turn of
    the event loop, or in the next poll of the sockets, run as one batch of at most this
    many rows (batch.py); 1: each alone.
    ``max_reading_bytes``: the bodies being read, in all; a request whose body would take
    them past it is refused (503, ``Retry-After: 1``). Clients that send their bodies
    slowly take no place from the others, but the memory their bodies take so far is
    bounded by this, not by how many connections they open.
    """

    max_request_bytes: int = 16 << 20
    max_concurrent: int = 64
    threads: int = 4
    poll_seconds: float = 0.5
    read_seconds: float = 30.0
    max_batch_size: int = 1
    max_reading_bytes: int = 256 << 20


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
        # The bytes of the bodies being read (at most limits.max_reading_bytes).
        self.reading_bytes = 0
        # Requests reading their bodies, by deadline (the order they came in), and those
        # cancelled for passing it.
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        # The batch each model version gathers (in this turn of the event loop and the next
        # poll of the sockets), by the identity of its Loaded entry (which the batch's
        # first request holds meanwhile) and the shapes of its requests.
        self.batches: dict[tuple[int, tuple[Any, ...]], Batch] = {}
        self.limiter = anyio.CapacityLimiter(limits.threads)


def _json(doc: Any) -> Response:
    return Response(protocol.dump(doc), media_type=JSON)


def _failure(e: PackagerError) -> Response:
    return Response(protocol.error(str(e)), _status(e), media_type=JSON)


def build_app(
    served: Served,
    limits: Limits,
    *,
    warn: Callable[[str], None],
    on_switch: Callable[[], None] = lambda: None,
    on_ready: Callable[[], None] = lambda: None,
) -> ASGIApp:
    """The ASGI application serving ``served`` within ``limits``; ``warn`` gets one line per
    model version that starts or fails to answer; ``on_switch`` is called (on a thread)
    after versions switched; ``on_ready`` once the application has started, its SIGHUP
    handler installed (and the server's SIGTERM one: uvicorn installs it first)."""
    state = _State(served, limits, warn, on_switch)

    async def live(_request: Request) -> Response:
        return _json({"live": True})

    async def ready(_request: Request) -> Response:
        return _json({"ready": True})

    async def server_metadata(_request: Request) -> Response:
        return _json({"name": "packager", "version": __version__, "extensions": EXTENSIONS})

    async def model_ready(request: Request) -> Response:
        return await _with_loaded(
            state, request, lambda loaded: _json({"name": loaded.name, "ready": True})
        )

    async def model_metadata(request: Request) -> Response:
        return await _with_loaded(state, request, lambda loaded: _metadata(state, request, loaded))

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
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
        hup = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, hup.set)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_follow_current, state, hup)
                tasks.start_soon(_expire_reads, state)
                on_ready()
                yield
                tasks.cancel_scope.cancel()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def not_found(_request: Request, _e: Exception) -> Response:
        message = "nothing is served at this path; the API is the Open Inference Protocol v2"
        return Response(protocol.error(message), 404, media_type=JSON)

    async def not_allowed(_request: Request, e: Exception) -> Response:
        headers = e.headers if isinstance(e, HTTPException) else None
        allowed = (headers or {}).get("Allow", "GET")
        message = protocol.error(f"this path takes {allowed}")
        return Response(message, 405, headers=headers, media_type=JSON)

    # Starlette's own answers (an unknown path, a method a route does not take) are text:
    # these make them the protocol's JSON body too.
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed},
    )
    # A path with a slash more or less than a route's is not found, as any other: Starlette
    # would redirect it, to a URL made of the Host the client sent, with no protocol body.
    starlette.router.redirect_slashes = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Inference is plain ASGI: what Starlette would add to it (a Request, routing by
        # every route in turn, middleware, a Response) costs as much as a small model.
        if scope["type"] == "http":
            route = _route(scope["path"])
            if route is not None:
                await _infer(state, *route, scope, receive, send)
                return
        await starlette(scope, receive, send)

    return app


def _route(path: str) -> tuple[str, str | None] | None:
    """(name, version or None) of an inference path; None for any other."""
    try:
        return _ROUTES[path]
    except KeyError:
        pass
    found = _INFER.fullmatch(path)
    route = None if found is None else (found[1], found[2])
    if len(path) <= _MAX_ROUTE_LENGTH:
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        _ROUTES[path] = route
    return route


def _metadata(state: _State, request: Request, loaded: Loaded) -> Response:
    """The model metadata of ``loaded``: every installed version, or the one the path names."""
    versions = [loaded.version] if "version" in request.path_params else None
    answering = loaded.model
    doc = protocol.model_metadata(
        answering.manifest,
        answering.predicted,
        versions or state.served.versions(loaded.name),
    )
    return _json(doc)


async def _with_loaded(
    state: _State, request: Request, answer: Callable[[Loaded], Response]
) -> Response:
    """``answer`` for the version the request names, or the protocol's error."""
    try:
        return answer(await _loaded(state, request))
    except PackagerError as e:  # the model gone, the version not installed or unloadable
        return _failure(e)
    except _AtLimit:
        return _at_limit()


async def _loaded(state: _State, request: Request) -> Loaded:
    """The version a ready or metadata request names. One that is not loaded yet is
    loaded, and that counts against the concurrency limit, as an inference does.

    Raises:
        _AtLimit: the server is at its concurrency limit.
    """
    name, version = request.path_params["name"], request.path_params.get("version")
    loaded = state.served.cached(name, version)
    if loaded is not None:
        return loaded
    if state.active >= state.limits.max_concurrent:
        raise _AtLimit
    state.active += 1
    try:
        return await anyio.to_thread.run_sync(state.served.get, name, version)
    finally:
        state.active -= 1


class _AtLimit(Exception):
    """The server is at its concurrency limit."""


def _at_limit() -> Response:
    return Response(AT_LIMIT, 503, headers={"Retry-After": "1"}, media_type=JSON)


async def _infer(
    state: _State, name: str, version: str | None, scope: Scope, receive: Receive, send: Send
) -> None:
    """``POST /v2/models/NAME[/versions/VERSION]/infer``: its body read within the read
    timeout, then run within the concurrency limit."""
    if scope["method"] != "POST":
        await _send(send, 405, protocol.error("inference takes POST"), ((b"allow", b"POST"),))
        return
    limits = state.limits
    limit = limits.max_request_bytes
    length = header = None
    for key, value in scope["headers"]:
        if key == b"content-length" and length is None:
            length = value
        elif key == b"inference-header-content-length" and header is None:
            header = value
    body = None
    if length is None or not length.isdigit() or int(length) <= limit:
        # The deadline is a line in a table that _expire_reads looks at: a timer per
        # request would cost more than a small model's inference.
        task = asyncio.current_task()
        assert task is not None
        state.reading[task] = time.monotonic() + limits.read_seconds
        try:
            body = await _body(receive, limit, state)
        except _Disconnected:
            return
        except _Busy:
            message = protocol.error("the server is reading too many request bodies; retry")
            await _send(send, 503, message, ((b"retry-after", b"1"), (b"connection", b"close")))
            return
        except asyncio.CancelledError:
            if task not in state.expired:
                raise
            state.expired.discard(task)
            task.uncancel()
            message = protocol.error(
                f"the request body was not received within {limits.read_seconds:g} seconds"
            )
            await _send(send, 408, message, ((b"connection", b"close"),))
            return
        finally:
            state.reading.pop(task, None)
    if body is None:
        await _send(send, 413, protocol.error(f"the request is larger than {limit} bytes"))
    elif state.active >= limits.max_concurrent:
        await _send(send, 503, AT_LIMIT, ((b"retry-after", b"1"),))
    else:
        state.active += 1
        try:
            answer = await _answer(state, name, version, body, header)
        finally:
            state.active -= 1
        await _send(send, *answer)


async def _answer(
    state: _State, name: str, version: str | None, body: bytes, header: bytes | None
) -> tuple[int, bytes | protocol.Framed]:
    """The status and body answering an inference request whose body is read."""
    try:
        header_length = _header_length(header)
        loaded = state.served.cached(name, version)
        if loaded is None:  # a version not loaded yet: on a thread
            loaded = await anyio.to_thread.run_sync(state.served.get, name, version)
        if len(body) >= INLINE_BYTES:  # parsed and run on an inference thread, untimed
            return 200, await anyio.to_thread.run_sync(
                _predict, loaded, body, header_length, limiter=state.limiter
            )
        request = protocol.parse_request(body, loaded.model.inputs, header_length=header_length)
        return _http(await _parsed(state, loaded, request, len(body)))
    except PackagerError as e:
        return _status(e), protocol.error(str(e))
    except _BatchFailed:  # said once, by the batch
        return 500, protocol.error("the server failed to answer this request")
    except Exception as e:  # a fault of the server's: one line, and the protocol's body
        state.warn(f"{name}: an inference request failed: {_fault(e)}")
        return 500, protocol.error("the server failed to answer this request")


def _header_length(header: bytes | None) -> int | None:
    """The ``Inference-Header-Content-Length`` of a request: ASCII digits only, as HTTP
    writes a length. ``int()`` takes more (``1_0``, ``+10``, ``-0``, whitespace within the
    value), and would read a length the client did not write.

    Raises:
        UsageError: it is not such a number, or has more digits than any body's length.
    """
    if header is None:
        return None
    if not header.isdigit():  # bytes: ASCII digits only
        raise UsageError("Inference-Header-Content-Length must be a number of bytes (0-9)")
    digits = header.lstrip(b"0")
    if len(digits) > 18:  # past any body; int() refuses thousands of digits
        raise UsageError("Inference-Header-Content-Length is out of range")
    return int(digits or b"0")


async def _parsed(state: _State, loaded: Loaded, request: InferRequest, size: int) -> Answer:
    """The answer to a parsed request (its body ``size`` bytes): in a batch when the server
    and the model batch, alone otherwise.

    Raises:
        PackagerError: the request is refused.
    """
    model = loaded.model
    rows = request.rows
    most = state.limits.max_batch_size
    if most == 1 or rows is None or not 0 < rows <= most or not batch.batched(model):
        return await _run(state, loaded, 1 if rows is None else rows, size, batch.alone, request)
    feeds = model.feeds(request.inputs)  # a value the model refuses is refused here, alone
    key = (id(loaded), batch.shapes(model.inputs, feeds))
    gathering = state.batches.get(key)
    if gathering is not None and gathering.total + rows <= most:
        try:
            return await gathering.join(request, feeds, rows, size)
        except _LeaderGone:  # the request that was to run the batch went away first
            return await _run(state, loaded, rows, size, batch.alone, request)
    gathering = state.batches[key] = Batch(request, feeds, rows, size)
    return await _lead(state, loaded, key, gathering)


async def _lead(state: _State, loaded: Loaded, key: Any, gathering: Batch) -> Answer:
    """Run ``gathering``, which the caller's request began, once the requests read in the
    same turn of the event loop, and in the next look at the sockets, have joined it; hand
    them their answers, and return the caller's.

    Raises:
        _BatchFailed: a fault of the server's (said once, here).
    """
    try:
        try:
            # The requests read in this turn join; then those the next poll reads: under
            # load, the clients the last batch answered have sent their next requests by
            # then, and they join this batch rather than start the next (at 16 clients,
            # nearly every client's request in one batch, against a third of them).
            # Neither waits for more than a look at what is there.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        finally:
            if state.batches.get(key) is gathering:
                del state.batches[key]
        answers = await _run(state, loaded, gathering.total, gathering.size, batch.run, gathering)
    except batch.Refused as e:
        answers = e.answers
    except Exception as e:
        state.warn(f"{loaded.name}: a batch of inference requests failed: {_fault(e)}")
        gathering.fail(_BatchFailed())
        raise _BatchFailed from e
    except BaseException:  # cancelled: the others run alone
        gathering.fail(_LeaderGone())
        raise
    return gathering.settle(answers)


class _LeaderGone(Exception):
    """The request that began a batch went away before it ran the batch."""


class _BatchFailed(Exception):
    """The batch a request was in failed (it was said once)."""


async def _run(
    state: _State, loaded: Loaded, rows: int, size: int, run: Callable[..., T], *args: Any
) -> T:
    """``run(loaded, *args)`` for ``rows`` rows from ``size`` bytes of bodies, timed
    (:func:`_timed`): on the event loop when the model's last answer cost little per row
    and the bodies are small; on an inference thread otherwise."""
    if size < INLINE_BYTES and loaded.cost.seconds * rows < INLINE_SECONDS:
        return _timed(loaded, rows, run, loaded, *args)
    return await anyio.to_thread.run_sync(
        _timed, loaded, rows, run, loaded, *args, limiter=state.limiter
    )


def _fault(e: Exception) -> str:
    """A fault of the server's in one line: its type and the start of its message."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _http(answer: Answer) -> tuple[int, bytes | protocol.Framed]:
    if isinstance(answer, PackagerError):
        return _status(answer), protocol.error(str(answer))
    return 200, answer


def _status(e: PackagerError) -> int:
    if isinstance(e, NotFoundError):
        return 404
    return 400 if isinstance(e, UsageError) else 500


async def _send(
    send: Send,
    status: int,
    body: bytes | protocol.Framed,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    if type(body) is protocol.Framed:
        kind, body = [_BINARY_TYPE, (_HEADER_LENGTH, b"%d" % body.header_length)], body.body
    else:
        kind = [_CONTENT_TYPE]
    start = [*kind, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _timed(loaded: Loaded, rows: int, run: Callable[..., T], *args: Any) -> T:
    """``run(*args)`` for ``rows`` rows, its cost per row recorded as what the model's last
    answer cost."""
    # The thread's CPU time, not the clock's: a request that waited for a busy machine's
    # cores did not cost more, and must not send the next ones to the threads. The clock
    # bounds it and costs no system call: the CPU time is read again only past the bound.
    # A request refused before inference says nothing of what the model costs, one refused
    # after it (an output it does not have, onnxruntime failing) may: a failure can only
    # raise the cost recorded, never lower it. Nor can an answer of no rows.
    cost = loaded.cost
    cpu, clock = time.thread_time(), time.perf_counter()
    try:
        answer = run(*args)
    except BaseException:
        cost.seconds = max(cost.seconds, (time.thread_time() - cpu) / max(rows, 1))
        raise
    seconds = time.perf_counter() - clock
    if seconds >= INLINE_SECONDS:
        seconds = time.thread_time() - cpu
    cost.seconds = seconds / rows if rows else max(cost.seconds, seconds)
    return answer


class _Disconnected(Exception):
    """The client went away before its request was read whole."""


class _Busy(Exception):
    """The bodies being read would take more than the server reads at once."""


async def _body(receive: Receive, limit: int, state: _State) -> bytes | None:
    """The request body, or None once it grows past ``limit`` (the rest is not read).

    Raises:
        _Disconnected: the client went away first.
        _Busy: with this body, the bodies being read would pass
            ``state.limits.max_reading_bytes``.
    """
    chunks: list[bytes] = []
    size = 0
    most = state.limits.max_reading_bytes
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            if size + len(chunk) > limit:
                return None
            if state.reading_bytes + len(chunk) > most:
                raise _Busy
            size += len(chunk)
            state.reading_bytes += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks) + chunk if chunks else chunk
            chunks.append(chunk)
    finally:
        state.reading_bytes -= size


def _predict(loaded: Loaded, body: bytes, header_length: int | None) -> bytes | protocol.Framed:
    """The response to a request's body, parsed and run alone (a large body, on a thread)."""
    request = protocol.parse_request(body, loaded.model.inputs, header_length=header_length)
    return batch.alone(loaded, request)


async def _expire_reads(state: _State) -> None:
    """Cancel the requests whose bodies are not read by their deadline (408), looking a few
    times per read timeout (at most a second apart)."""
    tick = min(1.0, state.limits.read_seconds / 4)
    while True:
        await asyncio.sleep(tick)
        for task in pop_late(state.reading, time.monotonic()):
            state.expired.add(task)
            task.cancel()


async def _follow_current(state: _State, hup: asyncio.Event) -> None:
    """Look at every model's ``current`` each poll interval, or at once when ``hup`` is set
    (SIGHUP, which also tries again the versions that failed to load). A look that fails
    (the disk, too many open files) is reported once, and the next one tries again: the
    server goes on answering with the versions it has, and on reading the bodies within
    their timeout."""
    failing = False
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hup.wait(), state.limits.poll_seconds)
        again = hup.is_set()
        hup.clear()
        try:
            switched, dropped, error = await anyio.to_thread.run_sync(state.served.refresh, again)
        except Exception as e:  # a fault of the server's: said, and the next poll tries
            switched, dropped, error = [], [], e
        if error is not None and not failing:
            state.warn(f"cannot look at the installed versions: {_fault(error)}")
        elif error is None and failing:
            state.warn("the installed versions can be looked at again")
        failing = error is not None
        for loaded in switched:
            state.warn(f"serving {loaded.name}@{loaded.version}")
        for name in dropped:
            state.warn(f"{name} was uninstalled: no longer served")
        if switched or dropped:
            await anyio.to_thread.run_sync(state.on_switch)
