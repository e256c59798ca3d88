"""Real servers on 127.0.0.1 for the remote-registry tests.

- :class:`RegistryProcess`: CNCF distribution (Debian's ``docker-registry``) with its own
  config: no auth, htpasswd basic auth, or token auth trusting :class:`TokenServer`.
- :class:`TokenServer`: issues RS256 JWTs with an x5c chain, granting per-user actions.
- :class:`Proxy`: forwards to a registry, records every request, optionally speaks TLS,
  and lets a test answer chosen requests itself (refuse PATCH, drop a connection
  half-way, lie about a blob) - a misbehaving registry made of a real one.
- :class:`BlobServer`: serves one blob with a chosen misbehaviour, for the transport.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

INSTALL_HINT = "apt-get install docker-registry apache2-utils skopeo"


def require(binary: str) -> str:
    """The path of ``binary``; skips the test without it, and fails it under CI=true."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- TLS material ------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    *,
    issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
    ip: str | None = None,
    dns: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip))]
        names += [x509.DNSName(dns)] if dns else []
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and registry.test, and its key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path) -> TlsFiles:
    key = _new_key()
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(
        _pem(_cert("127.0.0.1", key, ca=True, ip="127.0.0.1", dns="registry.test"))
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


def make_ca_tls(directory: Path, common: str = "Packager Test Root CA") -> tuple[Path, TlsFiles]:
    """A CA (its certificate's path) and a server certificate it issued for 127.0.0.1 and
    registry.test: what an internal CA installed on a host looks like."""
    ca_key, key = _new_key(), _new_key()
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(_pem(_cert(common, ca_key, ca=True)))
    leaf = _cert("127.0.0.1", key, issuer=(common, ca_key), ip="127.0.0.1", dns="registry.test")
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(_pem(leaf))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, TlsFiles(cert_path, key_path)


# --- HTTP servers in threads ---------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


@contextmanager
def serve(
    handler: type[BaseHTTPRequestHandler], owner: Any, tls: TlsFiles | None = None
) -> Iterator[int]:
    """Run ``handler`` on 127.0.0.1 in a thread; yields the port. ``owner`` is reachable
    from the handler as ``self.server.owner``."""
    server = _Server(("127.0.0.1", 0), handler)
    server.owner = owner
    if tls is not None:
        server.socket = tls.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --- Token server ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """The token service of a registry in token mode.

    ``users`` maps a user to (password, actions granted on every repository); the
    catalog is granted to any authenticated user. Anonymous requests get a token with no
    access. ``requests`` records (user, scopes) of every token request.
    """

    directory: Path
    service: str = "packager-test"
    issuer: str = "packager-test-issuer"
    users: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    expires_in: int = 300
    requests: list[tuple[str | None, list[str]]] = field(default_factory=list)
    tls: TlsFiles | None = None
    port: int = 0

    def __post_init__(self) -> None:
        root_key, self._key = _new_key(), _new_key()
        root = _cert("packager test root", root_key, ca=True)
        leaf = _cert(
            "packager test token signer", self._key, issuer=("packager test root", root_key)
        )
        self.root_bundle = self.directory / "token-root.pem"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.root_bundle.write_bytes(_pem(root))
        self._x5c = [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()]

    @property
    def realm(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}/token"

    def issue(self, user: str | None, scopes: list[str]) -> str:
        granted = self.users[user][1] if user else set()
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = (
                ["*"]
                if kind == "registry" and user
                else [a for a in actions.split(",") if a in granted]
            )
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    @contextmanager
    def running(self) -> Iterator[TokenServer]:
        with serve(_TokenHandler, self, self.tls) as port:
            self.port = port
            yield self


class _TokenHandler(_Quiet):
    def do_GET(self) -> None:
        owner: TokenServer = self.server.owner  # type: ignore[attr-defined]
        query = parse_qs(urlsplit(self.path).query)
        scopes = [s for value in query.get("scope", []) for s in value.split()]
        user = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if owner.users.get(name, ("", set()))[0] != password or name not in owner.users:
                self.answer(401, b'{"details": "bad credentials"}')
                return
            user = name
        owner.requests.append((user, scopes))
        token = owner.issue(user, scopes)
        body = json.dumps({"token": token, "expires_in": owner.expires_in}).encode()
        self.answer(200, body, {"Content-Type": "application/json"})


# --- docker-registry ---------------------------------------------------------------------


@dataclass
class RegistryProcess:
    """``docker-registry serve`` with a config written here; ``host`` is 127.0.0.1:PORT."""

    directory: Path
    auth: dict[str, Any] | None = None
    tls: TlsFiles | None = None
    host: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryProcess:
        binary = require("docker-registry")
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if self.auth is not None:
            config["auth"] = self.auth
        context = None
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
            context = ssl.create_default_context(cafile=str(self.tls.cert))
        scheme = "http" if self.tls is None else "https"
        self.directory.mkdir(parents=True, exist_ok=True)
        # JSON is YAML, and needs no YAML library here.
        (self.directory / "config.yml").write_text(json.dumps(config))
        log = open(self.directory / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "serve", str(self.directory / "config.yml")], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "docker-registry exited: " + (self.directory / "registry.log").read_text()
                )
            try:
                urllib.request.urlopen(
                    f"{scheme}://{self.host}/v2/", timeout=1, context=context
                ).close()
                return self
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def htpasswd(path: Path, users: dict[str, str]) -> Path:
    binary = require("htpasswd")
    lines = [
        subprocess.run(
            [binary, "-Bbn", user, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- Proxy ----------------------------------------------------------------------------------

Hook = Callable[["ProxyHandler"], bool]
"""Called for every request; True when it answered itself (else the request is forwarded)."""


@dataclass
class Proxy:
    """A recording, fault-injecting reverse proxy in front of a registry at ``upstream``."""

    upstream: str
    tls: TlsFiles | None = None
    hook: Hook | None = None
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for m, path, _ in self.seen if m == method and contains in path)

    @contextmanager
    def running(self) -> Iterator[Proxy]:
        with serve(ProxyHandler, self, self.tls) as port:
            self.port = port
            yield self


class ProxyHandler(_Quiet):
    def handle_any(self) -> None:
        owner: Proxy = self.server.owner  # type: ignore[attr-defined]
        owner.seen.append((self.command, self.path, dict(self.headers.items())))
        if owner.hook is not None and owner.hook(self):
            return
        self.forward()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def upstream(self, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        """Send this request on to the registry; returns its response."""
        owner: Proxy = self.server.owner  # type: ignore[attr-defined]
        connection = http.client.HTTPConnection(owner.upstream, timeout=30)
        sent = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        if owner.tls is not None:
            # So that the registry writes https:// into upload locations.
            sent["X-Forwarded-Proto"] = "https"
        sent.update(headers or {})
        connection.request(self.command, self.path, body=self.body(), headers=sent)
        return connection.getresponse()

    def forward(self) -> None:
        response = self.upstream()
        body = response.read()
        self.relay(response, body)

    def relay(self, response: http.client.HTTPResponse, body: bytes) -> None:
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --- A blob server for the transport --------------------------------------------------------


@dataclass
class BlobServer:
    """Serves ``data`` at any path, misbehaving as ``mode`` says:

    ``ok``; ``drop`` (first response: full Content-Length, half the bytes, then close);
    ``no-range`` (drops like ``drop``, then ignores Range and sends 200 with everything);
    ``shrink`` (drops like ``drop``, then has only a quarter of the bytes);
    ``stall`` (sends a little, then waits ``pause`` seconds); ``trickle`` (one byte every
    ``pause`` seconds); ``header-trickle`` (a header line, one byte every ``pause``
    seconds); ``longer``/``shorter``/``corrupt`` (bytes differ from ``data``);
    ``fail:N:STATUS`` (N answers STATUS with ``retry_after``, then ok);
    ``redirect:URL`` (302 to URL).
    """

    data: bytes
    mode: str = "ok"
    pause: float = 0.0
    retry_after: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/blob"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @contextmanager
    def running(self, tls: TlsFiles | None = None) -> Iterator[BlobServer]:
        with serve(_BlobHandler, self, tls) as port:
            self.port = port
            yield self


class _BlobHandler(_Quiet):
    def do_GET(self) -> None:
        owner: BlobServer = self.server.owner  # type: ignore[attr-defined]
        owner.requests.append(dict(self.headers.items()))
        attempt = len(owner.requests)
        data, mode = owner.data, owner.mode
        if mode.startswith("fail:"):
            _, count, status = mode.split(":")
            if attempt <= int(count):
                headers = {"Retry-After": owner.retry_after} if owner.retry_after else {}
                self.answer(int(status), b"busy", headers)
                return
        if mode.startswith("redirect:"):
            self.answer(302, headers={"Location": mode.partition(":")[2]})
            return
        if mode in ("drop", "no-range", "shrink") and attempt == 1:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:100])
            self.wfile.flush()
            time.sleep(owner.pause)
            self.close_connection = True
            return
        if mode == "header-trickle":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(200):
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(owner.pause)
            return
        if mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(owner.pause)
            return
        data = {
            "shrink": data[: len(data) // 4],
            "longer": data + b"extra",
            "shorter": data[:-1],
            "corrupt": bytes([data[0] ^ 1]) + data[1:],
        }.get(mode, data)
        start = self.headers.get("Range", "")
        if start.startswith("bytes=") and mode != "no-range":
            offset = int(start[6:].rstrip("-"))
            if offset >= len(data):
                self.answer(416, headers={"Content-Range": f"bytes */{len(data)}"})
                return
            self.answer(
                206, data[offset:], {"Content-Range": f"bytes {offset}-{len(data) - 1}/{len(data)}"}
            )
            return
        self.answer(200, data)


# --- A scripted server that records credentials -------------------------------------------


Route = tuple[int, dict[str, str], bytes]


@dataclass
class Scripted:
    """Answers each path (query left out) as ``routes`` says, 404 otherwise; a path in
    ``challenges`` first answers 401 with that ``WWW-Authenticate`` to any request without
    an ``Authorization`` header. ``seen`` records (path, Authorization) of every request:
    what tests check for credentials that must never arrive."""

    routes: dict[str, Route] = field(default_factory=dict)
    challenges: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    tls: TlsFiles | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://127.0.0.1:{self.port}"

    def authorizations(self) -> list[str]:
        """Every Authorization header this server received."""
        return [auth for _, auth in self.seen if auth is not None]

    @contextmanager
    def running(self) -> Iterator[Scripted]:
        with serve(_ScriptedHandler, self, self.tls) as port:
            self.port = port
            yield self


class _ScriptedHandler(_Quiet):
    def do_GET(self) -> None:
        owner: Scripted = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        authorization = self.headers.get("Authorization")
        owner.seen.append((path, authorization))
        if path in owner.challenges and authorization is None:
            self.answer(401, b"", {"WWW-Authenticate": owner.challenges[path]})
            return
        status, headers, body = owner.routes.get(path, (404, {}, b""))
        self.answer(status, body, headers)


@dataclass
class EndlessListing:
    """An OCI registry whose tag list of ``ns/iris`` links to a next page forever; each
    page holds ``tags`` tags and ``pad`` bytes of trailing whitespace. ``pages`` counts the pages
    served."""

    tags: int = 1
    pad: int = 0
    pages: int = 0
    port: int = 0

    @property
    def ref(self) -> str:
        return f"oci://127.0.0.1:{self.port}/ns"

    @contextmanager
    def running(self) -> Iterator[EndlessListing]:
        with serve(_EndlessListingHandler, self) as port:
            self.port = port
            yield self


class _EndlessListingHandler(_Quiet):
    disable_nagle_algorithm = True  # a thousand small answers, without delayed ACKs

    def do_GET(self) -> None:
        owner: EndlessListing = self.server.owner  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        if parts.path != "/v2/ns/iris/tags/list":
            self.answer(200 if parts.path == "/v2/" else 404, b"{}")
            return
        owner.pages += 1
        page = int(parse_qs(parts.query).get("last", ["0"])[0])
        tags = [f"t{page}-{i}" for i in range(owner.tags)]
        body = json.dumps({"name": "ns/iris", "tags": tags}).encode() + b" " * owner.pad
        link = f'</v2/ns/iris/tags/list?last={page + 1}>; rel="next"'
        self.answer(200, body, {"Content-Type": "application/json", "Link": link})
