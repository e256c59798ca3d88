"""A response's head and body in one write to the socket.

uvicorn writes a response's status line and headers as soon as the application sends
``http.response.start``, and its body with the next message: two writes, two TCP
segments, and a client woken twice (on loopback the sender's write runs the receiver's
wake-up too). An inference answer is a few hundred bytes, so that second round costs about
as much as the model. :class:`OneWrite` stands between a request's
``RequestResponseCycle`` and the connection's transport: it holds the head of the response
and writes it together with the first piece of the body (``writelines``: one ``writev``,
no copy), as nginx sends a small response in one segment.

Only the head written once the response has started is held: the ``100 Continue`` a
request may get first goes out at once. A ``HEAD`` request's response has no body write
to carry its head, so its cycle is never given a :class:`OneWrite`. A held head still
goes out if the cycle closes the connection instead of writing a body.
"""

from __future__ import annotations

from typing import Any, Protocol


class _Cycle(Protocol):
    response_started: bool


class OneWrite:
    """The transport one connection's request cycles write to (see the module's text).

    :meth:`expect` names the cycle whose response head is to be held; the next write that
    cycle makes once its response started is that head.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._cycle: _Cycle | None = None
        self._head: bytes | None = None

    def expect(self, cycle: _Cycle) -> None:
        self._cycle = cycle

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.transport.writelines((head, data))
        elif self._cycle is not None and self._cycle.response_started:
            self._cycle = None
            self._head = data
        else:
            self.transport.write(data)

    def close(self) -> None:
        head, self._head, self._cycle = self._head, None, None
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else a cycle asks of its transport (is_closing, get_extra_info).
        return getattr(self.transport, name)
