"""uvicorn's httptools protocol with a bound on a request's head (request line and headers).

httptools and uvicorn keep what they have of a header line or the URL by appending to it as
it arrives: a client that never ends one grows the server's memory without bound and costs
CPU quadratic in its length, on the event loop every other client waits for. Here a
connection may send at most ``MAX_HEAD_BYTES`` (and what came with the read that passed
it) before its request's head is complete; past that it is answered 431 and closed.

Its request cycles also write each response's head and body at once (see onewrite).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from packager.instance.serve import protocol
from packager.instance.serve.onewrite import OneWrite

# As common servers allow (nginx's large_client_header_buffers, 4 x 8k ... 64k in all).
MAX_HEAD_BYTES = 64 << 10
# What the count is while a request's body is read: no body is long enough to reach 0.
_BODY = -(1 << 62)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts the bytes a connection sends until its request's head is complete.

    The count starts with the connection and again with each request after the first one
    (the bytes of it that came with the end of the one before are not counted: at most one
    read more); while a body is read it is far below 0. One addition and one comparison
    per read.
    """

    _head = 0
    _writer: OneWrite | None = None

    def data_received(self, data: bytes) -> None:
        # Looked at once the parser has this read: a read may hold a whole head and the
        # start of its body. So a head is cut off at MAX_HEAD_BYTES and one read.
        self._head += len(data)
        super().data_received(data)
        if self._head > MAX_HEAD_BYTES:
            self._refuse()

    def on_message_begin(self) -> None:
        if self._head < 0:
            self._head = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head = _BODY
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

    def _refuse(self) -> None:
        if self.transport.is_closing():
            return
        # Answered only between responses: in the middle of one, a 431 would corrupt it.
        if self.cycle is None or self.cycle.response_complete:
            body = protocol.error(f"the request's headers are larger than {MAX_HEAD_BYTES} bytes")
            head = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()
