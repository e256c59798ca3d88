"""HTTP/1.1 on the standard library's ``http.client``: what the transport sends requests with.

:class:`Pool` keeps idle keep-alive connections per (scheme, host, port, proxy), for
several threads at once; a connection goes back to it only once its response was read to
the end (else it is closed). Each connection has a connect timeout (TCP, proxy tunnel and
TLS handshake) and then a stall timeout on every receive; its ``watch`` hook is called
when it connects and sends, so that the caller can shut its socket at a deadline.

Proxies come from the environment as ``requests`` and ``urllib`` read them:
``http_proxy``, ``https_proxy``, ``all_proxy`` and ``no_proxy`` (lower case first, then
upper case). Plain HTTP goes through an HTTP proxy with absolute request targets; HTTPS
through a ``CONNECT`` tunnel. Credentials in the proxy URL are sent as
``Proxy-Authorization: Basic``. SOCKS and HTTPS proxies are refused
(:class:`UnsupportedProxy`). Nothing reads ``~/.netrc``.

Every request carries ``User-Agent: packager`` and ``Accept-Encoding: identity``: bodies
are checked byte for byte, never decoded. :class:`Response` is what the transport and the
registry clients see; ``http.client``'s own types stay in this module.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

USER_AGENT = "packager"
# Idle connections kept per (scheme, host, port, proxy): more than the threads that fetch
# at once (verified.PARALLEL_FETCHES, transport.PARALLEL_SHARDS).
MAX_IDLE = 10
SEND_CHUNK = 1 << 16
# Characters left as they are in a request target: the reserved ones and '%' (so that an
# escaped URL is not escaped again). Anything else (spaces, controls, non-ASCII) is escaped.
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"
# What a Link header is read up to (it may be many header lines joined).
MAX_LINK_HEADER = 64 << 10
MAX_LINKS = 64
MAX_LINK_PARAMS = 16

DEFAULT_PORTS = {"http": 80, "https": 443}

Watch = Callable[[http.client.HTTPConnection], None]


class Body(Protocol):
    """A sized request body, read front to back."""

    def read(self, size: int = -1, /) -> bytes: ...

    def __len__(self) -> int: ...


class ConnectTimeout(OSError):
    """No connection within the connect timeout (TCP, a proxy's tunnel or the TLS handshake)."""


class ProxyRefused(OSError):
    """The proxy did not open the ``CONNECT`` tunnel."""


class InvalidRequest(OSError):
    """The URL or a header cannot be sent (a control character, a port that is no number)."""


class UnsupportedProxy(Exception):
    """The environment names a proxy this client cannot use (SOCKS, HTTPS, no host)."""


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; repeated ones joined with ``", "``."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            if key in self._items:
                first, earlier = self._items[key]
                self._items[key] = (first, f"{earlier}, {value}")
            else:
                self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Response:
    """One response: status, headers and the body, read with :meth:`read1`.

    Closing it hands its connection back to the pool when the body was read to its end,
    and closes the connection otherwise.
    """

    def __init__(
        self, raw: http.client.HTTPResponse, url: str, release: Callable[[bool], None]
    ) -> None:
        self.status_code = raw.status
        self.headers = Headers(raw.headers.items())
        self.url = url
        self._raw = raw
        self._release: Callable[[bool], None] | None = release

    def read1(self, size: int) -> bytes:
        """What one receive brings, at most ``size`` bytes; b"" at the end of the body.

        Raises:
            http.client.HTTPException, OSError: the connection failed, stalled, or closed
                before the length it declared.
        """
        raw = self._raw
        try:
            data = raw.read1(size)
        except BaseException:
            self.abort()
            raise
        if not data and size and not raw.chunked and raw.length:
            left = raw.length
            self.abort()
            raise http.client.IncompleteRead(b"", left)
        return data

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The ``Link`` header's links by relation type (see :func:`parse_links`)."""
        return parse_links(self.headers.get("Link", ""))

    def close(self) -> None:
        """Done with the response: its connection is reused if the body was read whole."""
        raw = self._raw
        done = raw.isclosed() or (not raw.chunked and raw.length == 0)
        reuse = done and not raw.will_close
        raw.close()
        self._finish(reuse)

    def abort(self) -> None:
        """Done with the response, and its connection closed whatever was read."""
        self._raw.close()
        self._finish(False)

    def _finish(self, reuse: bool) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(reuse)

    def __enter__(self) -> Response:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


# --- Link headers (RFC 8288) ---------------------------------------------------------

_LINK_START_RE = re.compile(r"[\s,]*<([^<>]*)>")
_LINK_PARAM_RE = re.compile(
    r"\s*;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*(\"(?:[^\"\\]|\\.)*\"|[^;,\"\s]*))?"
)
_ESCAPED_RE = re.compile(r"\\(.)")


def parse_links(value: str) -> dict[str, dict[str, str]]:
    """The links of a ``Link`` header value: ``{rel: {"url": …, param: value, …}}``, one
    entry per relation type (``rel="next prev"`` gives two; the first link of a type
    wins), or by URL for a link without ``rel``.

    Bounded for hostile values: the first :data:`MAX_LINK_HEADER` characters, at most
    :data:`MAX_LINKS` links of :data:`MAX_LINK_PARAMS` parameters each; what cannot be
    parsed is skipped up to the next comma.
    """
    value = value[:MAX_LINK_HEADER]
    links: dict[str, dict[str, str]] = {}
    position = 0
    for _ in range(MAX_LINKS):
        match = _LINK_START_RE.match(value, position)
        if match is None:
            comma = value.find(",", position)
            if comma < 0:
                break
            position = comma + 1
            continue
        link, position = _link_params(value, match.end())
        link["url"] = match.group(1).strip()
        relations = link.get("rel", "").lower().split()
        for key in relations or [link["url"]]:
            links.setdefault(key, link)
    return links


def _link_params(value: str, position: int) -> tuple[dict[str, str], int]:
    """The ``; name=value`` parameters from ``position``, and where they end."""
    params: dict[str, str] = {}
    for _ in range(MAX_LINK_PARAMS):
        match = _LINK_PARAM_RE.match(value, position)
        if match is None:
            break
        position = match.end()
        name, raw = match.group(1).lower(), match.group(2) or ""
        if raw.startswith('"'):
            raw = _ESCAPED_RE.sub(r"\1", raw[1:-1])
        params.setdefault(name, raw)
    return params, position


# --- proxies from the environment ----------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy; ``authorization`` is the Proxy-Authorization value, if any."""

    host: str
    port: int
    # Credentials: never in a repr (a traceback's locals, a log of the pool's keys).
    authorization: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"http://{_host_text(self.host)}:{self.port}"


def environ_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"http": …, "https": …, "all": …, "no": …}`` from ``*_proxy`` variables in any
    case, lower case winning, as ``urllib.request.getproxies_environment`` reads them
    (under CGI, ``HTTP_PROXY`` is a request header and is ignored)."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        low = name.lower()
        if value and low.endswith("_proxy"):
            proxies[low[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy"):
            if value:
                proxies[name.lower()[:-6]] = value
            else:
                proxies.pop(name.lower()[:-6], None)
    return proxies


def proxy_for(
    scheme: str, host: str, port: int, environ: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy a request to ``scheme://host:port`` goes through, or None.

    Raises:
        UnsupportedProxy: the proxy named is not an ``http://`` one with a host.
    """
    proxies = environ_proxies(os.environ if environ is None else environ)
    if not proxies or bypasses_proxy(host, port, proxies.get("no", "")):
        return None
    value = proxies.get(scheme) or proxies.get("all")
    return parse_proxy(value) if value else None


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (comma-separated) sends ``host:port`` direct: ``*``; the host
    name, or a domain it is in (``example.com`` and ``.example.com`` both match
    ``a.example.com``); ``name:port``; an IP address or an IP network (CIDR)."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.replace(" ", "").lower().split(","):
        if entry == "*":
            return True
        name, wanted = _split_entry(entry)
        if not name or (wanted is not None and wanted != port):
            continue
        if address is not None:
            if _address_matches(address, name):
                return True
        elif host == name.lstrip(".") or host.endswith("." + name.lstrip(".")):
            return True
    return False


def _split_entry(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry as (name, port or None): ``host``, ``host:port``, ``[v6]:port``,
    ``v6`` or a network ``a.b.c.d/n``."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        name, port = entry, ""
    if not port:
        return name, None
    return (name, int(port)) if port.isascii() and port.isdigit() else ("", None)


def _address_matches(address: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str) -> bool:
    try:
        return address in ipaddress.ip_network(name, strict=False)
    except ValueError:
        return False


def parse_proxy(value: str) -> Proxy:
    """A proxy URL (``http://[user:password@]host[:port]``; the scheme may be left out).

    Raises:
        UnsupportedProxy: another scheme (SOCKS, HTTPS), no host or an invalid port. The
            message never repeats credentials.
    """
    if "://" not in value:
        value = f"http://{value}"
    try:
        parts = urlsplit(value)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise UnsupportedProxy(
            "a proxy variable (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) holds no valid URL"
        ) from None
    shown = f"{scheme}://{_host_text(host or '')}" + (f":{port}" if port else "")
    if scheme.startswith("socks"):
        raise UnsupportedProxy(
            f"the proxy {shown} is a SOCKS proxy, which packager does not support: use an "
            "HTTP proxy, or list the registry's host in NO_PROXY"
        )
    if scheme != "http" or not host:
        raise UnsupportedProxy(
            f"the proxy {shown} is not one packager can use: give an http://HOST:PORT proxy "
            "(HTTPS registries are reached through it with CONNECT)"
        )
    authorization = None
    if parts.username:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return Proxy(host, port or 80, authorization)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- connections -----------------------------------------------------------------------


class _Connection(http.client.HTTPConnection):
    """A connection with a connect timeout, then a stall timeout on each receive, that
    calls ``watch`` when it connects (so that a deadline can shut its socket)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        stall_timeout: float,
        watch: Watch,
        **kwargs: object,
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout, **kwargs)  # type: ignore[arg-type]
        self._stall = stall_timeout
        self._watch = watch
        # While connecting, a duplicate of the TCP socket: during a TLS handshake ``sock``
        # is a socket ssl has taken the descriptor from, and this one is what a deadline
        # can shut (shutting either shuts the connection). None before and after.
        self.shutter: socket.socket | None = None
        self._create_connection = self._tcp

    def _tcp(
        self, address: tuple[str, int], timeout: float, source: tuple[str, int] | None = None
    ) -> socket.socket:
        sock = socket.create_connection(address, timeout, source)
        self.shutter = sock.dup()
        self._watch(self)  # there is something to shut now
        return sock

    def connect(self) -> None:
        self._watch(self)
        try:
            super().connect()
        except TimeoutError as e:
            self.close()
            raise ConnectTimeout(None, "connect timed out") from e
        except OSError as e:
            self.close()
            if e.errno is None and str(e).startswith("Tunnel connection failed:"):
                reason = str(e).partition(":")[2].strip()
                raise ProxyRefused(None, f"the proxy refused the tunnel ({reason})") from e
            raise
        finally:
            shutter, self.shutter = self.shutter, None
            if shutter is not None:
                shutter.close()
        assert self.sock is not None
        self.sock.settimeout(self._stall)
        self._watch(self)


class _TLSConnection(_Connection, http.client.HTTPSConnection):
    """:class:`_Connection` over TLS (``context`` checks the host name; SNI is sent):
    ``connect`` above, then HTTPSConnection's (next in the method resolution order)."""


Key = tuple[str, str, int, Proxy | None]


class Pool:
    """Keep-alive connections per (scheme, host, port, proxy), shared by threads.

    ``tls`` makes the SSL context when the first HTTPS connection needs it; ``watch`` is
    called with a connection before it connects and before it sends.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        stall_timeout: float,
        tls: Callable[[], ssl.SSLContext],
        watch: Watch,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._tls = tls
        self._watch = watch
        self._lock = threading.Lock()
        self._idle: dict[Key, list[http.client.HTTPConnection]] = {}
        self._closed = False

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | Body | None = None,
    ) -> Response:
        """Send one request and return its response once the headers are in.

        Raises:
            UnsupportedProxy: the environment names a proxy that cannot be used.
            http.client.HTTPException, OSError: the request could not be sent, or no
                response came (:class:`ConnectTimeout`, :class:`ProxyRefused`,
                :class:`InvalidRequest`, a socket timeout for a stall...).
        """
        key = _key(url)
        try:
            target, sent = _prepare(url, key, headers, body)
        except UnicodeError as e:  # a lone surrogate in the path: nothing to send
            raise InvalidRequest(None, "the URL or a header cannot be sent") from e
        connection = self._take(key) or self._open(key)
        try:
            self._watch(connection)
            _transmit(connection, method, target, sent, body)
            raw = connection.getresponse()
        except OSError:  # before ValueError: ssl.SSLCertVerificationError is both
            connection.close()
            raise
        except ValueError as e:
            connection.close()
            raise InvalidRequest(None, "the URL or a header cannot be sent") from e
        except BaseException:
            connection.close()
            raise
        return Response(raw, url, lambda reuse: self._release(key, connection, reuse))

    def close(self) -> None:
        """Close the idle connections; those in use close when their responses do."""
        with self._lock:
            self._closed = True
            idle = [c for connections in self._idle.values() for c in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()

    def _take(self, key: Key) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None or not _dropped(connection):
                return connection
            connection.close()

    def _release(self, key: Key, connection: http.client.HTTPConnection, reuse: bool) -> None:
        if reuse and connection.sock is not None:
            with self._lock:
                idle = None if self._closed else self._idle.setdefault(key, [])
                if idle is not None and len(idle) < MAX_IDLE:
                    idle.append(connection)
                    return
        connection.close()

    def _open(self, key: Key) -> http.client.HTTPConnection:
        """A new connection (not connected yet): to the host, or to the proxy; HTTPS
        through a proxy is tunnelled with CONNECT."""
        scheme, host, port, proxy = key
        to_host, to_port = (host, port) if proxy is None else (proxy.host, proxy.port)
        if scheme == "http":
            return _Connection(
                to_host,
                to_port,
                connect_timeout=self._connect_timeout,
                stall_timeout=self._stall_timeout,
                watch=self._watch,
            )
        connection = _TLSConnection(
            to_host,
            to_port,
            connect_timeout=self._connect_timeout,
            stall_timeout=self._stall_timeout,
            watch=self._watch,
            context=self._tls(),
        )
        if proxy is not None:
            tunnel = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
            connection.set_tunnel(host, port, headers=tunnel)
        return connection


def _key(url: str) -> Key:
    """(scheme, host, port, proxy) of an http(s) URL the caller has checked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidRequest(None, "the URL's port is not a number from 1 to 65535") from e
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    port = port or DEFAULT_PORTS[scheme]
    return scheme, host, port, proxy_for(scheme, host, port)


def _prepare(
    url: str, key: Key, headers: Mapping[str, str], body: bytes | Body | None
) -> tuple[str, dict[str, str]]:
    """The request target (absolute through an HTTP proxy) and every header to send."""
    parts = urlsplit(url)
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    scheme, host, port, proxy = key
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
    if scheme == "http" and proxy is not None:
        netloc = _host_text(host) + ("" if port == DEFAULT_PORTS[scheme] else f":{port}")
        target = f"http://{netloc}{target}"
        if proxy.authorization:
            sent["Proxy-Authorization"] = proxy.authorization
    for name, value in headers.items():
        _put(sent, name, value)
    if body is not None:
        _put(sent, "Content-Length", str(len(body)))
    return target, sent


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set header ``name``, replacing it in any case."""
    for same in [k for k in headers if k.lower() == name.lower()]:
        del headers[same]
    headers[name] = value


def _transmit(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | Body | None,
) -> None:
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    if (
        body is None
        and method not in ("GET", "HEAD")
        and "content-length" not in {name.lower() for name in headers}
    ):
        connection.putheader("Content-Length", "0")
    if isinstance(body, bytes):
        connection.endheaders(body)
        return
    connection.endheaders()
    if body is not None:
        while chunk := body.read(SEND_CHUNK):
            connection.send(chunk)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by its server (or has bytes it should not)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
            poll = select.poll()
            poll.register(sock, select.POLLIN)
            return bool(poll.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


__all__ = [
    "ConnectTimeout",
    "Headers",
    "InvalidRequest",
    "Pool",
    "Proxy",
    "ProxyRefused",
    "Response",
    "UnsupportedProxy",
    "bypasses_proxy",
    "environ_proxies",
    "parse_links",
    "parse_proxy",
    "proxy_for",
]
