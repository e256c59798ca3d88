"""``packager serve``: installed models behind the Open Inference Protocol v2 REST API.

The HTTP stack (uvicorn, Starlette, orjson) is the ``serve`` extra; nothing on the way to
``packager --help`` or any other command imports it (docs/adr/0008-serve-on-uvicorn.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import UsageError
from packager.instance import servers
from packager.instance.serve.served import Served
from packager.instance.store import Store

SERVE_EXTRA = "pip install 'onnx-packager[serve]'"


@dataclass(frozen=True)
class Listen:
    """Where to listen: a TCP address (port 0: any free port) or a Unix socket."""

    host: str = "127.0.0.1"
    port: int = 8080
    unix_socket: Path | None = None


@dataclass(frozen=True)
class ServeOptions:
    names: tuple[str, ...] = ()
    listen: Listen = field(default_factory=Listen)
    max_request_bytes: int = 16 << 20
    max_concurrent: int = 64
    threads: int = 4
    poll_seconds: float = 0.5
    shutdown_seconds: float = 30.0
    read_seconds: float = 30.0
    max_batch_size: int = 1
    max_reading_bytes: int = 256 << 20


def bind(listen: Listen) -> socket.socket:
    """A listening socket for ``listen``.

    Raises:
        UsageError: the address cannot be bound, or the Unix socket path is taken by a
            file that is not a socket.
    """
    try:
        if listen.unix_socket is not None:
            return _bind_unix(listen.unix_socket)
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
    except OSError as e:
        where = listen.unix_socket or f"{listen.host}:{listen.port}"
        raise UsageError(f"cannot listen on {where}: {e.strerror or e}") from e
    sock.listen(2048)
    return sock


def _bind_unix(path: Path) -> socket.socket:
    """A Unix socket listening at ``path``; a socket file that no server answers on (one
    left by a server that was killed) is taken over, nothing else.

    Raises:
        UsageError: ``path`` is taken: by a live server, or by a file that is not a socket.
        OSError: the socket cannot be bound.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"cannot listen on {path}: it exists and is not a socket")
        if _answers(path):
            raise UsageError(f"cannot listen on {path}: another server listens there")
        path.unlink()  # left by a server that stopped
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(2048)
    return sock


def _socket_file(sock: socket.socket) -> tuple[str, int, int] | None:
    """The path of a Unix socket's file, and its device and inode; None for TCP."""
    if sock.family != socket.AF_UNIX:
        return None
    path = sock.getsockname()
    try:
        found = os.lstat(path)
    except OSError:  # gone already: nothing to remove at the end
        return None
    return path, found.st_dev, found.st_ino


def _remove_socket_file(own: tuple[str, int, int] | None) -> None:
    """Remove the socket file the server made, unless another has taken its place."""
    if own is None:
        return
    path, device, inode = own
    with contextlib.suppress(OSError):
        found = os.lstat(path)
        if (found.st_dev, found.st_ino) == (device, inode):
            os.unlink(path)


def _answers(path: Path) -> bool:
    """Whether a server listens on the Unix socket ``path`` (then it is not taken over):
    only a refused connection says that none does.

    Raises:
        UsageError: it cannot be told (the socket is not ours to connect to, or no answer).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
        except OSError as e:
            raise UsageError(
                f"cannot listen on {path}: cannot tell whether a server listens there "
                f"({e.strerror or e})"
            ) from e
    return True


def address(sock: socket.socket) -> str:
    """The URL (or socket path) clients reach ``sock`` at."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"http://{host}:{name[1]}"


def load(store: Store, options: ServeOptions, warn: Callable[[str], None]) -> Served:
    """Load the models to serve (see :class:`Served`); fails before anything listens.

    Raises:
        UsageError: the ``serve`` extra is not installed.
        NotInstalledError: a model is not installed (exit 2).
        PackagerError: a model cannot be loaded.
    """
    _require_extra()
    # One onnxruntime thread per request: requests in parallel use the cores instead.
    return Served(store, options.names, threads=1, warn=warn)


def run(
    served: Served,
    sock: socket.socket,
    options: ServeOptions,
    warn: Callable[[str], None],
    *,
    ready: Callable[[str], None] = lambda _address: None,
) -> None:
    """Answer on ``sock`` until SIGTERM or SIGINT; requests in flight then finish (at most
    ``options.shutdown_seconds``). ``ready`` gets the address once the server is recorded
    for `packager status` (the record is removed when it stops)."""
    import uvicorn

    from packager.instance.serve.app import Limits, build_app
    from packager.instance.serve.limits import quiet_client_errors, with_read_timeout

    limits = Limits(
        max_request_bytes=options.max_request_bytes,
        max_concurrent=options.max_concurrent,
        threads=options.threads,
        poll_seconds=options.poll_seconds,
        read_seconds=options.read_seconds,
        max_batch_size=options.max_batch_size,
        max_reading_bytes=options.max_reading_bytes,
    )
    listening = address(sock)

    def note() -> None:
        _note(served, listening, warn)

    config = uvicorn.Config(
        # "serving ... on ADDRESS" once the server takes SIGTERM and SIGHUP as it should:
        # a signal sent by whoever waited for that line is not lost, nor fatal.
        build_app(served, limits, warn=warn, on_switch=note, on_ready=lambda: ready(listening)),
        # httptools (as uvicorn's "auto" picks), with bounds on each request's headers: in
        # size, and in time (the read timeout, as for a body).
        http=with_read_timeout(limits.read_seconds),
        log_level="warning",
        access_log=False,
        server_header=False,
        # Nothing here reads the client's address: X-Forwarded-* are not looked at.
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(options.shutdown_seconds),
        lifespan="on",
    )
    quiet_client_errors()
    # uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler it
    # found installed: this one makes a graceful stop exit 0.
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: None)
    note()
    own = _socket_file(sock)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        servers.forget(served.home, os.getpid())
        _remove_socket_file(own)


def _note(served: Served, listening: str, warn: Callable[[str], None]) -> None:
    """Record where this server listens and what it serves, for `packager status`."""
    models = tuple(servers.ServedModel(m.name, m.version) for m in served.loaded())
    try:
        pid = os.getpid()
        record = servers.Server(pid, listening, models, servers.started(pid))
        servers.record(served.home, record)
    except OSError as e:
        warn(f"cannot record this server for `packager status`: {e.strerror or e}")


def _require_extra() -> None:
    try:
        import orjson  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(f"`packager serve` needs the serve extra: {SERVE_EXTRA}") from e


__all__: Sequence[str] = ("Listen", "ServeOptions", "address", "bind", "load", "run")
