"""uvicorn's httptools protocol with bounds on a request's head (request line and headers),
in size and in time.

httptools and uvicorn keep what they have of a header line or the URL by appending to it as
it arrives: a client that never ends one grows the server's memory without bound and costs
CPU quadratic in its length, on the event loop every other client waits for. Here a
connection may send at most ``MAX_HEAD_BYTES`` (and what came with the read that passed
it) before its request's head is complete; past that it is answered 431 and closed.

A client that sends nothing, or a head a byte at a time, would hold its connection and file
descriptor for as long as it likes (slowloris): uvicorn's keep-alive timeout covers only the
wait after a response, and the first byte ends it. Here a connection must deliver each
request's head within the read timeout, counted from its opening or from the end of the
response before; past it, it is answered 408 and closed. A connection that has begun no
request since a response is only closed: one left idle, as uvicorn closes a keep-alive
connection, and one still sending the body of a request answered without reading it (a
413), which would otherwise hold the connection as long as it sends.

An upgrade a request offers (``Upgrade: h2c``, as ``curl --http2`` and Java's HttpClient
send on plain http) is ignored, as RFC 9110 §7.8 lets a server do: the request is answered
in HTTP/1.1, its body included, and the connection goes on (:class:`AfterUpgrade`).

Its request cycles also write each response's head and body at once (see onewrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import TypeVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from packager.instance.serve import protocol
from packager.instance.serve.onewrite import OneWrite

# As common servers allow (nginx's large_client_header_buffers, 4 x 8k ... 64k in all).
MAX_HEAD_BYTES = 64 << 10
# What uvicorn's protocol says of each request a client got wrong (not HTTP) is a warning
# per request: any client could fill the server's log with them. Such a request is
# answered (400) and not logged; the server's own errors are (quiet_client_errors).
CLIENT_ERRORS = logging.getLogger("uvicorn.error.clients")
# What the count is while a request's body is read: no body is long enough to reach 0.
_BODY = -(1 << 62)
# The headers that say how long a request's body is, and how it is sent.
_FRAMING = (b"content-length", b"transfer-encoding")
Late = TypeVar("Late")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts the bytes a connection sends until its request's head is complete, and keeps
    the connection in its server's table of heads awaited (:class:`Heads`) until then.

    The count starts with the connection and again with each request after the first one
    (the bytes of it that came with the end of the one before are not counted: at most one
    read more); while a body is read it is far below 0. One addition and one comparison
    per read. A server's read timeout is the class's (:func:`with_read_timeout`).
    """

    read_seconds = 30.0
    _head = 0
    _writer: OneWrite | None = None
    _heads: Heads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.logger = CLIENT_ERRORS
        super().connection_made(transport)
        self._heads = Heads.of(self.server_state, self.loop, self.read_seconds)
        self._heads.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._heads.waiting.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Looked at once the parser has this read: a read may hold a whole head and the
        # start of its body. So a head is cut off at MAX_HEAD_BYTES and one read.
        self._head += len(data)
        self._feed(data)
        if self._head > MAX_HEAD_BYTES:
            message = f"the request's headers are larger than {MAX_HEAD_BYTES} bytes"
            self._refuse(431, message)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, but for an upgrade: the parser stops at the end of
        the head of a request that offers one, and what follows is read on (the body of
        that request, then the next requests) rather than dropped."""
        self._unset_keepalive_if_required()
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserError:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
                return
            except httptools.HttpParserUpgrade as stop:
                data = data[stop.args[0] :]
                self._ignore_upgrade()

    def _should_upgrade(self) -> bool:
        """No upgrade is taken, a WebSocket one neither: nothing here answers WebSockets.
        uvicorn's protocol then answers the request as any other."""
        return False

    def _ignore_upgrade(self) -> None:
        """The parser took the request whose head it has read for an upgrade: it ended
        the request's message with its head, and would read its body as the next request
        (httptools lets it go on after an upgrade, and reads no body of one).

        A request without a body needs nothing more. One with a body is given it as any
        other: a new parser is fed the request's framing headers first, then what follows
        the head, which it reads as the body, then as the next requests
        (:class:`AfterUpgrade`). A new one: the one before may have stopped reading, after
        a request that closes its connection.
        """
        framing = [b"%s: %s\r\n" % header for header in self.headers if header[0] in _FRAMING]
        if not framing:
            return
        cycle = self.cycle
        cycle.more_body = True  # the end of the message the parser saw is undone
        cycle.message_event.clear()
        self.parser = parser = httptools.HttpRequestParser(AfterUpgrade(self))
        with contextlib.suppress(AttributeError):  # as uvicorn sets its parser (httptools 0.6.3)
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        parser.feed_data(b"".join([b"POST / HTTP/1.1\r\n", *framing, b"\r\n"]))

    def on_message_begin(self) -> None:
        if self._head < 0:
            self._head = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head = _BODY
        self._heads.waiting.pop(self, None)
        super().on_headers_complete()
        # The new request's cycle writes its response's head and body at once (onewrite).
        cycle = self.cycle
        fresh = cycle is not None and cycle.transport is self.transport
        if fresh and self.scope["method"] != "HEAD":
            writer = self._writer
            if writer is None:
                writer = self._writer = OneWrite(self.transport)
            writer.expect(cycle)
            cycle.transport = writer  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # A request in the pipeline has its head in already: it starts now.
        idle = not self.pipeline
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._heads.wait(self)

    def send_400_response(self, msg: str) -> None:
        """What is not HTTP/1.1 (a bad request line, header or Content-Length) is answered
        with the protocol's error body, as every other refusal, and the connection closed."""
        self._refuse(400, "the request is not valid HTTP/1.1")

    def head_timed_out(self) -> None:
        """The head did not come by its deadline. A request begun (or a connection that
        has had none yet) is answered 408; a connection that has sent nothing since its
        last response is closed as uvicorn's keep-alive timeout closes it: a 408 there
        could cross a request the client sends at that moment, and be taken as its
        answer."""
        if self._head < 0:  # still the count of the last body: no request begun since
            self.transport.close()
        else:
            seconds = f"{self.read_seconds:g}"
            self._refuse(408, f"the request's head was not received within {seconds} seconds")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with the protocol's error body, and close the connection."""
        if self.transport.is_closing():
            return
        # Answered only between responses: in the middle of one, an answer would corrupt it.
        if self.cycle is None or self.cycle.response_complete:
            body = protocol.error(message)
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()


class AfterUpgrade:
    """What a parser reads on a connection after a request that offered an upgrade (with a
    body) is given to its protocol, but for the head the parser is fed first: the framing
    headers of that request, so that it reads what follows as that request's body. The
    protocol has that request's head already; it does not begin another."""

    def __init__(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.protocol = protocol
        self.framing = True
        self.on_body = protocol.on_body
        self.on_message_complete = protocol.on_message_complete

    def on_message_begin(self) -> None:
        if not self.framing:
            self.protocol.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.framing:
            self.protocol.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.framing:
            self.protocol.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.framing:
            self.framing = False
        else:
            self.protocol.on_headers_complete()


def quiet_client_errors() -> None:
    """Log only errors through :data:`CLIENT_ERRORS`. Called once uvicorn has set up its
    logging (uvicorn.Config does), which resets the levels of the loggers under its own."""
    CLIENT_ERRORS.setLevel(logging.ERROR)


def with_read_timeout(seconds: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for a server whose connections have ``seconds`` for each head.

    uvicorn makes the protocol of each connection from the class it is given, with its
    own arguments only: what a server sets is a class attribute.
    """

    class Bounded(BoundedHttpToolsProtocol):
        read_seconds = seconds

    return Bounded


class Heads:
    """The connections of one server awaiting a request's head, by deadline.

    A dict keeps its entries in the order they were set, which is the order of their
    deadlines (each is the clock then plus the one read timeout, and an entry is removed
    before it is set again): a sweep looks at the first ones only, and setting or removing
    one costs a dict operation. One timer per server, armed while a connection waits,
    sweeps a few times per read timeout (at most a second apart): a timer per connection
    or request would cost more than a small model's inference. A timer keeps no event loop
    running: a server that stops leaves it behind, and its graceful shutdown closes the
    connections that wait (uvicorn closes those between responses), which leaves the table.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self.waiting: dict[BoundedHttpToolsProtocol, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, server: ServerState, loop: asyncio.AbstractEventLoop, seconds: float) -> Heads:
        """The table of ``server`` (one uvicorn server runs on one event loop)."""
        heads = _HEADS.get(server)
        if heads is None:
            heads = _HEADS[server] = cls(loop, seconds)
        return heads

    def wait(self, connection: BoundedHttpToolsProtocol) -> None:
        """``connection`` has the read timeout from now to deliver a request's head."""
        self.waiting[connection] = time.monotonic() + self.seconds
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._sweep)

    def _sweep(self) -> None:
        late = pop_late(self.waiting, time.monotonic())
        # Armed again before the late ones are answered: a failure there stops no sweep.
        self.timer = self.loop.call_later(self.tick, self._sweep) if self.waiting else None
        for connection in late:
            connection.head_timed_out()


def pop_late(table: dict[Late, float], now: float) -> list[Late]:
    """Take out of ``table`` (key -> deadline, in the order of its deadlines) the keys whose
    deadline is past ``now``: the first ones only are looked at."""
    late = []
    for key, deadline in table.items():
        if deadline > now:
            break  # the deadlines after it are later
        late.append(key)
    for key in late:
        del table[key]
    return late


# Each server's table, for as long as the server is there.
_HEADS: weakref.WeakKeyDictionary[ServerState, Heads] = weakref.WeakKeyDictionary()
