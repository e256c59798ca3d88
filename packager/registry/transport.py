"""HTTP for every remote registry kind: timeouts, retries, TLS, proxies, downloads.

What this layer guarantees to the registry clients above it:

- every request has a connect timeout, a stall timeout (the longest wait for the next
  bytes) and an overall deadline, kept while the request is sent and its headers arrive
  by a watchdog that shuts the connection (see :class:`_Watchdog`), and while its body
  arrives by checking the clock at each receive; a request that fails on a connection
  error, a 5xx or a 429 is retried with exponential backoff (honouring ``Retry-After``
  up to a cap);
- TLS is verified against the operating system's trust store (through ``truststore``,
  in this transport's own SSL context: nothing global is patched), certifi's bundle and
  ``--ca-cert``; plain HTTP is refused, before any connection is opened, except to
  loopback hosts or with ``plain_http``;
- redirects are followed by hand so that each hop is checked the same way; a redirect
  from a host that is not loopback to loopback, or from HTTPS to plain HTTP, is refused;
- an ``Authorization`` header goes out only where :func:`may_send_credentials` allows;
- downloads are capped at the expected size plus one byte, hashed while they arrive,
  resumed with ``Range`` after a dropped connection, verified as a whole, fsynced, and
  removed on failure; a blob signed by shards is fetched one ``Range`` per shard, a few
  at once, each shard checked against its signed digest as it arrives and fetched again
  from its start after a dropped connection (:meth:`Transport.download_shards`);
- every foreign exception becomes a one-line :class:`RegistryError` (exit 4) or, when
  the bytes are not the ones asked for, a :class:`TamperedError` (exit 3). Messages name
  the host and path, never a query string or a credential.

Requests go out on the standard library's ``http.client`` through
:class:`~packager.registry.http11.Pool` (keep-alive connections shared by threads,
proxies from the environment, ``Accept-Encoding: identity``, no ``~/.netrc``); see
docs/adr/0013-http-on-the-standard-library.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypedDict
from urllib.parse import urlencode, urljoin, urlsplit

from packager._io.hashing import CHUNK, BackgroundHasher
from packager.core.digests import Digest
from packager.core.jsonio import loads_object
from packager.core.shards import Shard
from packager.core.text import printable
from packager.errors import RegistryError, TamperedError, UsageError
from packager.registry._verified_read import ShardedBlob, check_blob, new_file
from packager.registry.artifact import TITLE_ANNOTATION
from packager.registry.base import Descriptor
from packager.registry.files import flushing
from packager.registry.http11 import (
    ConnectTimeout,
    InvalidRequest,
    Pool,
    ProxyRefused,
    Response,
    UnsupportedProxy,
)
from packager.registry.options import RegistryOptions

Progress = Callable[[int], None]
"""Called with the number of bytes a transfer advanced by."""


class Reader(Protocol):
    """A sized request body read front to back, once per attempt."""

    def read(self, size: int = -1, /) -> bytes: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


Body = bytes | Callable[[], Reader]


class Sent(TypedDict, total=False):
    """What a request carries besides its method and URL (see :meth:`Transport.request`)."""

    headers: Mapping[str, str] | None
    body: Body | None
    params: Mapping[str, str] | None


"""A request body: bytes, or a factory opening a fresh reader for each attempt."""

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
# What a request or a body read raises when the network fails: http.client's protocol
# errors (IncompleteRead, RemoteDisconnected, BadStatusLine, LineTooLong...) and socket,
# TLS and timeout errors, all OSError (http11's own errors too).
NETWORK_ERRORS = (http.client.HTTPException, OSError)
# Shards of one blob fetched at once.
PARALLEL_SHARDS = 4
# Error bodies are only ever quoted in a message.
MAX_ERROR_BODY = 64 << 10
# A CA bundle added to the trust stores, as requests read it (the first one set).
_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


# Up to 10**18 - 1: more than any size, offset or wait a header may state.
_HEADER_NUMBER_RE = re.compile(r"[0-9]{1,18}", re.ASCII)


def header_number(value: str | None) -> int | None:
    """The non-negative integer a header's value states; None when absent or not one.

    ASCII digits only, at most 18 of them, with HTTP's optional spaces or tabs around:
    ``int()`` alone would also take ``"١٢٣"``, ``"1_000"``, ``"+1"`` or ``" -0 "``, and
    ``str.isdigit()`` passes ``"²"``, which ``int()`` then refuses.
    """
    if value is None:
        return None
    match = _HEADER_NUMBER_RE.fullmatch(value.strip(" \t"))
    return int(match.group()) if match else None


class Authenticator(Protocol):
    """Adds credentials to requests for one registry host and answers its challenges."""

    def authorize(self, url: str, scope: str | None) -> Mapping[str, str]:
        """Headers to send with a request to ``url`` needing ``scope``; empty for any
        host other than the registry's own."""
        ...

    def challenge(self, response: Response, scope: str | None) -> bool:
        """Learn from a 401: True when retrying the request may now succeed.

        Raises:
            RegistryError: the credentials were refused or a token could not be had.
        """
        ...

    def redact(self, text: str) -> str:
        """``text`` with every secret this authenticator knows replaced by ``***``."""
        ...

    def advice(self) -> str:
        """What to do about a 401: which credentials to check, or how to give some."""
        ...

    def may_send(self, url: str, *, origin: str) -> bool:
        """Whether a request to ``url`` (first sent to ``origin``) may carry credentials:
        :func:`may_send_credentials` with what this authenticator knows."""
        ...


def may_send_credentials(
    url: str, *, origin: str, registry: str, realms: Collection[str], plain_http: bool
) -> bool:
    """The one rule for where a registry's credentials (password or token) may go.

    ``url`` must be on the ``host:port`` the request was first sent to (``origin``: never
    to where a redirect points), and that must be the registry's own (``registry``: its
    base URL) or a token realm it named over TLS (``realms``). HTTPS, or plain HTTP only
    to the registry when ``plain_http`` was asked for: never over the automatic plain
    HTTP to a loopback registry, where any local user could be listening.
    """
    target = host_port(url)
    if target != host_port(origin):
        return False
    scheme = urlsplit(url).scheme
    if target == host_port(registry):
        return scheme == "https" or (scheme == "http" and plain_http)
    return scheme == "https" and target in {host_port(realm) for realm in realms}


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: names that never leave this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of ``url``, the port made explicit: what decides where credentials go."""
    parts = urlsplit(url)
    return (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def where(url: str) -> str:
    """``host[:port]/path`` of ``url`` for messages: no query, which may carry upload state."""
    parts = urlsplit(url)
    return f"{parts.netloc.rpartition('@')[2]}{parts.path}"


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr for a transfer of ``total`` bytes, or None when disabled
    (the caller decides: not with --quiet, not when stderr is not a terminal)."""
    if not enabled:
        yield None
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@dataclass(frozen=True)
class BlobRequest:
    """One blob to download: from ``url``, exactly the bytes ``desc`` describes (its size
    and sha256); ``what`` names it in messages; ``auth`` and ``scope`` answer the
    registry's challenges."""

    url: str
    desc: Descriptor
    what: str
    auth: Authenticator | None = None
    scope: str | None = None


class RemoteBlobs(ABC):
    """The blob reads of a store served over HTTP (a static mirror, an OCI registry): each
    kind says where a blob is and how to authenticate; the downloads are the same."""

    _transport: Transport

    @abstractmethod
    def blob_request(self, name: str, desc: Descriptor, what: str) -> BlobRequest:
        """The download of the blob ``desc`` of model ``name``, named ``what`` in messages.

        Raises:
            UsageError: ``name`` is not a model name this store can hold.
        """

    def read_blob_into(self, name: str, desc: Descriptor, sink: IO[bytes]) -> None:
        """:meth:`Transport.download` the blob into ``sink``."""
        blob = self.blob_request(name, desc, f"fetch blob {desc.digest} of {name}")
        self._transport.download(blob, sink)

    def copy_blob_into(self, name: str, desc: Descriptor, out: int) -> tuple[Digest, int]:
        """Streamed, resumed after dropped connections, hashed on a thread of its own, with
        a progress bar named after the blob's title when the options ask for one."""
        title = _title(desc)
        blob = self.blob_request(name, desc, f"fetch {title} ({desc.digest}) of {name}")
        transport = self._transport
        with progress_bar(f"fetching {title}", desc.size, enabled=transport.progress) as bar:
            return transport.download_into(blob, out, bar)

    def fetch_shards_into(self, blob: ShardedBlob, out: int, have: Collection[int]) -> bool:
        """One range per shard, a few at once, each checked against its digest."""
        name, desc = blob.name, blob.desc
        request = self.blob_request(name, desc, f"fetch {_title(desc)} of {name}")
        return self._transport.download_shards(request, out, blob.shards, have=have)


def _title(desc: Descriptor) -> str:
    """The blob's file name, or the start of its digest."""
    return desc.annotations.get(TITLE_ANNOTATION, desc.digest.hex[:12])


class Transport:
    """HTTP with the limits of :class:`RegistryOptions`; see the module doc.

    One transport serves one registry; it may be shared by threads that each hold their
    own responses (its pool keeps connections per host and proxy).

    The SSL context (see :func:`tls_context`) is made before the first connection that
    needs it (HTTPS, or a tunnel through a proxy), not before: loading the trust stores
    costs tens of milliseconds of CPU that a plain-HTTP registry (a mirror on loopback,
    ``--plain-http``) never needs. With ``ca_cert`` it is made at once, so that a file
    holding no certificate is refused before anything is fetched.
    """

    def __init__(
        self,
        options: RegistryOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._sleep = sleep
        self._clock = clock
        self._context = None if options.ca_cert is None else tls_context(options.ca_cert)
        self._loading = threading.Lock()
        # Credentials come from RegistryOptions and Docker's config only (never ~/.netrc).
        self._pool = Pool(
            connect_timeout=options.timeouts.connect,
            stall_timeout=options.timeouts.stall,
            tls=self._tls,
            watch=_watched,
        )

    def _tls(self) -> ssl.SSLContext:
        """The SSL context, made once, by the first connection that needs it."""
        with self._loading:
            if self._context is None:
                self._context = tls_context(None)
            return self._context

    def check_url(self, url: str) -> None:
        """Refuse a URL this transport must never connect to.

        Raises:
            RegistryError: not http(s), or plain http to a host other than loopback
                without ``plain_http``.
        """
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        if scheme == "https":
            return
        if scheme != "http":
            raise RegistryError(f"refusing to fetch {where(url)}: {scheme!r} is not http(s)")
        if not (self._options.plain_http or is_loopback(host)):
            raise RegistryError(
                f"refusing plain HTTP to {host}: traffic and credentials would be readable "
                "on the network; use HTTPS, or pass --plain-http if you mean it"
            )

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        params: Mapping[str, str] | None = None,
        auth: Authenticator | None = None,
        scope: str | None = None,
        deadline: float | None = None,
        retry: bool = True,
    ) -> Response:
        """Send a request and return the streamed response for any final status.

        Redirects of GET and HEAD are followed; a 401 is answered once through ``auth``;
        connection errors, 5xx and 429 are retried (unless ``retry`` is False). The caller
        reads or closes the response. ``what`` says what the request is for, in messages.

        Raises:
            RegistryError: the URL is refused, or the request could not be completed.
        """
        deadline = self._clock() + self._options.timeouts.deadline if deadline is None else deadline
        policy = self._options.retry
        attempt = 0
        hops = 0
        challenged = False
        origin = url
        while True:
            self.check_url(url)
            sent = {**(headers or {}), **(auth.authorize(url, scope) if auth else {})}
            if not (auth is not None and auth.may_send(url, origin=origin)):
                sent.pop("Authorization", None)
            try:
                response = self._send(
                    method,
                    url,
                    headers=sent,
                    body=body,
                    params=params,
                    deadline=deadline,
                    what=what,
                )
            except NETWORK_ERRORS as e:
                # A certificate or protocol mismatch, a request that cannot be sent or a
                # proxy that refuses the tunnel is no less wrong a second later.
                permanent = isinstance(e, _PERMANENT)
                if permanent or not retry or attempt >= policy.attempts:
                    raise self.network_error(e, what, url, auth) from e
                self._wait(attempt, None, deadline, what, url)
                attempt += 1
                continue
            status = response.status_code
            if status in REDIRECT_STATUSES and method in ("GET", "HEAD"):
                location = response.headers.get("Location")
                response.close()
                hops += 1
                if not location or hops > MAX_REDIRECTS:
                    raise RegistryError(
                        f"cannot {what}: {where(url)} redirects nowhere or too often"
                    )
                target = urljoin(url, location)
                _check_redirect(url, target, what)
                # Parameters belong to the first URL; the Location is complete.
                url, params = target, None
                continue
            if status == 401 and auth is not None and not challenged:
                challenged = True
                try:
                    again = auth.challenge(response, scope)
                except RegistryError:
                    response.close()
                    raise
                if again:
                    response.close()
                    continue
            if status in RETRY_STATUSES and retry and attempt < policy.attempts:
                retry_after = response.headers.get("Retry-After")
                response.close()
                self._wait(attempt, retry_after, deadline, what, url)
                attempt += 1
                continue
            return response

    def read(
        self,
        response: Response,
        *,
        limit: int,
        what: str,
        auth: Authenticator | None = None,
    ) -> bytes:
        """The body of ``response``, at most ``limit + 1`` bytes (so callers can tell
        "too long" from "exactly ``limit``"); the response is closed.

        Raises:
            RegistryError: the connection failed, stalled or ran past the deadline.
        """
        deadline = self._clock() + self._options.timeouts.deadline
        sink = io.BytesIO()
        with response:
            try:
                for chunk in self._chunks(response, limit + 1, deadline, what):
                    sink.write(chunk)
            except NETWORK_ERRORS as e:
                raise self.network_error(e, what, response.url, auth) from e
        return sink.getvalue()

    def download(
        self, blob: BlobRequest, sink: IO[bytes], progress: Progress | None = None
    ) -> tuple[Digest, int]:
        """Stream exactly the bytes ``blob.desc`` describes (its size and sha256) into
        ``sink``; returns the digest and size received.

        ``sink`` must be empty, seekable and truncatable. A connection that drops or
        stalls is resumed with ``Range: bytes=N-``: a 206 continues the hash where it
        stopped, a 200 (the server ignores ranges) restarts from zero, a 416 means the
        blob is shorter than declared. Attempts that received bytes do not count against
        the retry budget; the deadline bounds the whole download. The bytes are judged
        by :func:`~packager.registry._verified_read.check_blob`.

        Raises:
            TamperedError: more or fewer bytes than ``blob.desc`` declares, or another digest.
            RegistryError: the download failed, stalled or ran past the deadline.
        """
        url, size, what, auth = blob.url, blob.desc.size, blob.what, blob.auth
        deadline = self._clock() + self._options.timeouts.deadline
        # Hashed on a thread of its own while this one receives and writes.
        state = _Received(sink, progress, size)
        try:
            failures = 0
            while True:
                headers = {"Accept-Encoding": "identity"}
                if state.received:
                    headers["Range"] = f"bytes={state.received}-"
                response = self.request(
                    "GET",
                    url,
                    what=what,
                    headers=headers,
                    auth=auth,
                    scope=blob.scope,
                    deadline=deadline,
                )
                before = state.received
                with response:
                    self._start_part(response, state, what, auth)
                    try:
                        for chunk in self._chunks(
                            response, size + 1 - state.received, deadline, what
                        ):
                            state.add(chunk)
                    except NETWORK_ERRORS as e:
                        failures = 0 if state.received > before else failures + 1
                        if failures > self._options.retry.attempts:
                            raise self.network_error(e, what, url, auth) from e
                        self._wait(failures, None, deadline, what, url)
                        continue
                break
            got = Digest(state.hasher.hexdigest())
            check_blob(what, blob.desc, state.received, got)
            return got, state.received
        finally:
            state.hasher.close()

    def _start_part(
        self,
        response: Response,
        state: _Received,
        what: str,
        auth: Authenticator | None,
    ) -> None:
        """Check where a (resumed) response starts; a full answer restarts the sink."""
        status = response.status_code
        if state.received and status == 416:
            raise TamperedError(
                f"cannot {what}: it is shorter than the {state.size} bytes declared"
            )
        if state.received and status == 206:
            _check_content_range(response, state.received, state.size, what)
        elif status == 200:
            state.restart()
        else:
            raise self.http_error(response, what, auth)

    def download_into(
        self, blob: BlobRequest, out: int, progress: Progress | None = None
    ) -> tuple[Digest, int]:
        """:meth:`download` into the empty file ``out``, written back to disk while the
        bytes arrive (the caller's fsync then waits for the last MiB only).

        Raises:
            TamperedError, RegistryError: as :meth:`download`.
            OSError: ``out`` cannot be written.
        """
        with os.fdopen(os.dup(out), "r+b") as sink, flushing(out):
            received = self.download(blob, sink, progress)
            sink.flush()
        return received

    def download_file(
        self, blob: BlobRequest, dest: Path, progress: Progress | None = None
    ) -> None:
        """:meth:`download_into` the new file ``dest``: created exclusively (never
        through a link planted there), fsynced, and removed on any failure.

        Raises:
            TamperedError, RegistryError: as :meth:`download`; RegistryError also when
                ``dest`` exists or cannot be written.
        """
        with new_file(dest, blob.what) as out:
            self.download_into(blob, out, progress)

    @property
    def progress(self) -> bool:
        """Whether downloads show a progress bar (:attr:`RegistryOptions.progress`)."""
        return self._options.progress

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.close()

    # --- blobs signed by shards: one range each ------------------------------------

    def download_shards(
        self,
        blob: BlobRequest,
        out: int,
        shards: Sequence[Shard],
        *,
        workers: int = PARALLEL_SHARDS,
        progress: Progress | None = None,
        have: Collection[int] = (),
    ) -> bool:
        """Fetch the blob into the empty file ``out`` one ``Range`` request per shard,
        ``workers`` at once, each shard's bytes hashed as they arrive and checked against
        its signed digest; ``shards`` (in file order) cover ``blob.desc.size`` bytes.

        A shard whose connection drops or stalls is fetched again from its start (the
        shards before and after it stay). The shards whose indexes are in ``have`` are in
        ``out`` already (checked by the caller) and are not fetched; ``out`` is then
        already ``blob.desc.size`` bytes long. Returns False, with ``out`` emptied, when the
        server does not answer ranges (200 with the whole blob): the caller downloads
        the blob whole instead.

        Raises:
            TamperedError: a shard's bytes differ from its signed digest, or the server
                states another size for the blob.
            RegistryError: a shard could not be fetched (retries and deadline spent).
            OSError: ``out`` cannot be written.
        """
        if not shards or shards[-1].end != blob.desc.size:
            raise TamperedError(
                f"cannot {blob.what}: its signed shards do not cover the "
                f"{blob.desc.size} bytes declared"
            )
        if not have:
            os.ftruncate(out, blob.desc.size)
        deadline = self._clock() + self._options.timeouts.deadline
        stop = threading.Event()

        def fetch(shard: Shard) -> bool:
            if stop.is_set():
                return True
            try:
                served = self._fetch_shard(blob, out, shard, deadline, progress)
            except BaseException:
                stop.set()
                raise
            if not served:
                stop.set()
            return served

        with ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="packager-range"
        ) as pool:
            futures = [pool.submit(fetch, shard) for i, shard in enumerate(shards) if i not in have]
            outcomes = [future.exception() or future.result() for future in futures]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if not all(outcomes):
            os.ftruncate(out, 0)
            return False
        return True

    def _fetch_shard(
        self,
        blob: BlobRequest,
        out: int,
        shard: Shard,
        deadline: float,
        progress: Progress | None,
    ) -> bool:
        """One shard into ``out`` at its offset; False when the server ignores ranges."""
        what = f"{blob.what} (bytes {shard.start}-{shard.end})"
        failures = 0
        while True:
            response = self.request(
                "GET",
                blob.url,
                what=what,
                headers={
                    "Accept-Encoding": "identity",
                    "Range": f"bytes={shard.start}-{shard.end - 1}",
                },
                auth=blob.auth,
                scope=blob.scope,
                deadline=deadline,
            )
            with response:
                if response.status_code == 200:
                    return False
                if response.status_code != 206:
                    raise self.http_error(response, what, blob.auth)
                _check_content_range(response, shard.start, blob.desc.size, what)
                try:
                    position, digest = self._receive_shard(response, out, shard, deadline, what)
                except _Dropped as e:
                    failures += 1
                    if failures > self._options.retry.attempts:
                        raise self.network_error(e.cause, what, blob.url, blob.auth) from e.cause
                    self._wait(failures, None, deadline, what, blob.url)
                    continue
            if position > shard.end:
                raise TamperedError(f"cannot {what}: the server sent more bytes than asked for")
            if position < shard.end:
                # The connection closed early: fetch this shard again from its start.
                failures += 1
                if failures > self._options.retry.attempts:
                    raise RegistryError(f"cannot {what}: the connection keeps closing early")
                self._wait(failures, None, deadline, what, blob.url)
                continue
            if digest != shard.digest:
                raise TamperedError(
                    f"cannot {what}: the bytes do not match the shard's signed digest; "
                    "do not use it"
                )
            if progress is not None:
                progress(shard.end - shard.start)
            return True

    def _receive_shard(
        self, response: Response, out: int, shard: Shard, deadline: float, what: str
    ) -> tuple[int, Digest]:
        """Write the body of a range answer into ``out`` from the shard's start, hashing
        it; returns where it ended (one byte past the shard at most) and the digest.

        Raises:
            _Dropped: the connection failed while the body arrived.
            OSError: ``out`` cannot be written.
        """
        h = hashlib.sha256()
        position = shard.start
        chunks = self._chunks(response, shard.end - shard.start + 1, deadline, what)
        while True:
            try:
                chunk = next(chunks, None)
            except NETWORK_ERRORS as e:
                raise _Dropped(e) from e
            if chunk is None:
                return position, Digest(h.hexdigest())
            h.update(chunk)
            os.pwrite(out, chunk, position)
            position += len(chunk)

    def http_error(
        self, response: Response, what: str, auth: Authenticator | None = None
    ) -> RegistryError:
        """A one-line error for an unexpected status, quoting the registry's error code
        and message when it sent the OCI error JSON. Closes the response."""
        detail = ""
        try:
            body = self.read(response, limit=MAX_ERROR_BODY, what=what, auth=auth)
            detail = _error_detail(body)
        except RegistryError:
            pass  # the status alone still says what happened
        status = response.status_code
        hint = {
            401: f"; {auth.advice()}" if auth else "",
            403: "; the credentials do not allow this",
        }.get(status, "")
        text = f"cannot {what}: {where(response.url)} answered {status}{detail}{hint}"
        return RegistryError(_one_line(auth.redact(text) if auth else text))

    def network_error(
        self, error: BaseException, what: str, url: str, auth: Authenticator | None = None
    ) -> RegistryError:
        """A one-line error for a failed connection, naming the host and the cause."""
        text = f"cannot {what}: {where(url)}: {self._cause(error)}"
        return RegistryError(_one_line(auth.redact(text) if auth else text))

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Body | None,
        params: Mapping[str, str] | None,
        deadline: float,
        what: str,
    ) -> Response:
        """Send one request and receive its headers before ``deadline``.

        Raises:
            RegistryError: the deadline passed first (the watchdog shut the connection).
        """
        if params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(params)
        data = body() if callable(body) else body
        try:
            with _Watchdog(deadline - self._clock()) as watchdog:
                try:
                    response = self._pool.send(method, url, headers=headers, body=data)
                except NETWORK_ERRORS as e:
                    if watchdog.fired:
                        raise self._too_late(what) from e
                    raise
                except UnsupportedProxy as e:
                    raise RegistryError(f"cannot {what}: {e}") from None
        finally:
            if data is not None and not isinstance(data, bytes):
                data.close()
        if watchdog.fired:
            response.abort()
            raise self._too_late(what)
        return response

    def _too_late(self, what: str) -> RegistryError:
        return RegistryError(
            f"cannot {what}: not done after {self._options.timeouts.deadline:g} s; "
            "the connection is too slow or the server trickles"
        )

    def _chunks(
        self, response: Response, limit: int, deadline: float, what: str
    ) -> Iterator[bytes]:
        remaining = limit
        while remaining > 0:
            # read1 returns whatever one receive brings: a trickling server still gets
            # its deadline checked, where read(n) would wait for n bytes.
            chunk = response.read1(min(CHUNK, remaining))
            if not chunk:
                return
            if self._clock() > deadline:
                raise self._too_late(what)
            remaining -= len(chunk)
            yield chunk

    def _wait(
        self, attempt: int, retry_after: str | None, deadline: float, what: str, url: str
    ) -> None:
        policy = self._options.retry
        delay = _retry_after_seconds(retry_after)
        if delay is None:
            delay = policy.backoff * 2**attempt
        delay = min(delay, policy.max_wait)
        if self._clock() + delay > deadline:
            raise RegistryError(
                f"cannot {what}: {where(url)} still failing when the "
                f"{self._options.timeouts.deadline:g} s deadline ran out"
            )
        self._sleep(delay)

    def _cause(self, error: BaseException) -> str:
        timeouts = self._options.timeouts
        for e in _causes(error):
            if isinstance(e, ConnectTimeout):
                return f"no connection within {timeouts.connect:g} s"
            if isinstance(e, TimeoutError):
                return f"stalled: no data for {timeouts.stall:g} s"
            if isinstance(e, ssl.SSLCertVerificationError):
                return (
                    f"TLS certificate not trusted ({e.verify_message}); for a private CA, "
                    "install it in the system trust store or pass --ca-cert FILE"
                )
            if isinstance(e, ssl.SSLError):
                return f"TLS failed ({e.reason or e.strerror})"
            if isinstance(e, socket.gaierror):
                return "host name not found"
            if isinstance(e, http.client.InvalidURL):
                return "the URL cannot be sent (a control character or space in its host)"
            if isinstance(e, http.client.HTTPException | ConnectionResetError | BrokenPipeError):
                return "the connection broke mid-response"
            if isinstance(e, OSError) and e.strerror:
                return e.strerror.lower()
        return type(error).__name__


_PERMANENT = (ssl.SSLError, InvalidRequest, ProxyRefused, http.client.InvalidURL)


class _Dropped(Exception):
    """The connection failed while a body arrived (``cause``): worth another attempt."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Received:
    """What one download has received so far: written to the sink, hashed, reported."""

    def __init__(self, sink: IO[bytes], progress: Progress | None, size: int) -> None:
        self.sink = sink
        self.progress = progress
        self.size = size
        self.received = 0
        self.reported = 0
        self.hasher = BackgroundHasher()

    def add(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.sink.write(chunk)
        self.received += len(chunk)
        if self.progress is not None and self.received > self.reported:
            self.progress(min(self.received, self.size) - self.reported)
            self.reported = min(self.received, self.size)

    def restart(self) -> None:
        """The server sent the whole blob again: start over (progress never goes back)."""
        if self.received:
            self.sink.seek(0)
            self.sink.truncate()
            self.hasher.close()
            self.hasher, self.received = BackgroundHasher(), 0


_exchange = threading.local()
"""``watchdog``: the :class:`_Watchdog` of the request this thread is sending, if any."""


class _Watchdog:
    """Shuts the connection of the request this thread sends once ``seconds`` have passed.

    The connect and stall timeouts bound each wait for bytes, so a server that trickles
    its status line and headers (within the limits on their length) could keep a request
    for hours; the deadline must hold there too. The connection registers itself when it
    connects and sends (the ``watch`` hook of :class:`~packager.registry.http11.Pool`,
    :func:`_watched`); shutting its socket makes
    the blocked receive return at once, and the caller reads :attr:`fired`.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _exchange.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _exchange.watchdog = None
        with self._lock:
            self._connection = None

    def watch(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self.fired:
                _shut(connection)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._connection is not None:
                _shut(self._connection)


def _shut(connection: http.client.HTTPConnection) -> None:
    # While it connects, the connection's duplicate of its TCP socket (see http11).
    sock = getattr(connection, "shutter", None) or connection.sock
    if sock is not None:
        # socket.socket's own: SSLSocket.shutdown would drop the TLS state under the
        # receiving thread's feet. An error means it is closed already.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(connection: http.client.HTTPConnection) -> None:
    watchdog: _Watchdog | None = getattr(_exchange, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(connection)


def tls_context(ca_cert: Path | None) -> ssl.SSLContext:
    """The SSL context HTTPS is verified with: the operating system's trust store (an
    internal CA installed on the host; on Linux OpenSSL's default locations, which
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` override), certifi's bundle (so that a host
    without a CA store still reaches public registries), the file or directory
    ``$REQUESTS_CA_BUNDLE`` (or ``$CURL_CA_BUNDLE``) names, and ``ca_cert``.

    Raises:
        UsageError: ``ca_cert`` or the bundle variable names no certificate OpenSSL can read.
    """
    import certifi
    import truststore

    context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=certifi.where())
    variable = next((v for v in _CA_BUNDLE_VARIABLES if os.environ.get(v)), None)
    if variable is not None:
        _load_cas(context, Path(os.environ[variable]), f"${variable}")
    if ca_cert is not None:
        _load_cas(context, ca_cert, "--ca-cert")
    return context


def _load_cas(context: ssl.SSLContext, path: Path, source: str) -> None:
    try:
        if path.is_dir():
            context.load_verify_locations(capath=str(path))
        else:
            context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as e:
        raise UsageError(f"{source} {path}: no PEM certificate in it ({e})") from e


def _check_redirect(url: str, target: str, what: str) -> None:
    """Refuse a redirect from a host that is not loopback to loopback (a local service
    the registry has no business pointing at), or to plain HTTP anywhere but the same
    plain HTTP server."""
    here, there = urlsplit(url), urlsplit(target)
    if is_loopback(here.hostname or ""):
        return
    same_plain = here.scheme == "http" and host_port(url) == host_port(target)
    if is_loopback(there.hostname or "") or (there.scheme != "https" and not same_plain):
        raise RegistryError(
            f"cannot {what}: {where(url)} redirects to {there.scheme}://{where(target)}, "
            "which a remote registry may not send this client to"
        )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps (through args, ``.reason``, causes and contexts)."""
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]


def _retry_after_seconds(value: str | None) -> float | None:
    """The wait a ``Retry-After`` asks for: seconds, or an HTTP date; None for anything
    else."""
    if not value:
        return None
    seconds = header_number(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _check_content_range(response: Response, start: int, size: int, what: str) -> None:
    # "bytes START-END/TOTAL": the part must start where we stopped, and a total is a claim
    # about the blob's size that can be checked right away.
    unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
    first, _, total = spec.partition("/")
    if unit != "bytes" or header_number(first.partition("-")[0]) != start:
        raise RegistryError(
            f"cannot {what}: the server resumed at the wrong offset ({_one_line(spec, 80)!r})"
        )
    if total != "*" and header_number(total) != size:
        total = _one_line(total, 40)
        raise TamperedError(
            f"cannot {what}: the server says it has {total} bytes, not the {size} declared"
        )


def _error_detail(body: bytes) -> str:
    """`` CODE (message)`` from an OCI error response, or '' when there is none."""
    try:
        errors: Any = loads_object(body, what="error body", error=RegistryError).get("errors")
        first = errors[0]
        code, message = str(first.get("code", "")), str(first.get("message", ""))
    except (RegistryError, AttributeError, TypeError, IndexError, KeyError):
        return ""
    return f" {code}" + (f" ({message})" if message else "")


def _one_line(text: str, limit: int = 400) -> str:
    """Printable, single-line and bounded: servers choose part of this text."""
    return printable(text, limit)
