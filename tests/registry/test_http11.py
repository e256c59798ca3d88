"""The HTTP/1.1 client under the transport (registry/http11.py) against real servers on
127.0.0.1: keep-alive reuse, chunked bodies, proxies from the environment (an HTTP proxy
and a CONNECT tunnel run here), and the parsing of Link headers and NO_PROXY."""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from packager.errors import RegistryError
from packager.registry.http11 import (
    MAX_LINKS,
    Headers,
    bypasses_proxy,
    environ_proxies,
    parse_links,
    parse_proxy,
)
from packager.registry.options import RegistryOptions, RetryPolicy
from packager.registry.transport import Transport

from .servers import _Quiet, make_tls, serve

FAST = RetryPolicy(attempts=1, backoff=0.01, max_wait=0.1)
BODY = os.urandom(300_000)


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


def transport(**kwargs: Any) -> Transport:
    kwargs.setdefault("retry", FAST)
    return Transport(RegistryOptions(**kwargs))


@dataclass
class Origin:
    """Answers ``/chunked`` with a chunked body, ``/broken-chunk`` with a chunk cut short,
    anything else with BODY; records each request's client port and headers."""

    seen: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def connections(self) -> int:
        return len({client for client, _, _ in self.seen})

    @contextmanager
    def running(self, tls: Any = None) -> Iterator[Origin]:
        with serve(_OriginHandler, self, tls) as port:
            self.port = port
            yield self


class _OriginHandler(_Quiet):
    def do_GET(self) -> None:
        owner: Origin = self.server.owner  # type: ignore[attr-defined]
        owner.seen.append((self.client_address[1], self.path, dict(self.headers.items())))
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 70_000):
                part = BODY[start : start + 70_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/broken-chunk":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"1000\r\nonly this")
            self.close_connection = True
        elif self.path.startswith("/then-close"):
            self.answer(200, b"short")
            self.close_connection = True  # without saying so: the client pools it
        else:
            self.answer(200, BODY)


def get(t: Transport, url: str, limit: int = len(BODY)) -> bytes:
    response = t.request("GET", url, what="fetch")
    return t.read(response, limit=limit, what="fetch")


# --- keep-alive -----------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection() -> None:
    t = transport()
    with Origin().running() as origin:
        for path in ("/a", "/chunked", "/b", "/chunked"):
            assert get(t, origin.url(path)) == BODY
        t.close()
    assert len(origin.seen) == 4
    assert origin.connections() == 1


def test_a_response_closed_before_its_end_is_not_reused() -> None:
    t = transport()
    with Origin().running() as origin:
        response = t.request("GET", origin.url("/a"), what="fetch")
        assert response.read1(1000)
        response.close()  # most of the body unread: the connection cannot carry another
        assert get(t, origin.url("/b")) == BODY
        assert get(t, origin.url("/c")) == BODY
        t.close()
    assert origin.connections() == 2


def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    t = transport(retry=RetryPolicy(attempts=0))  # no retry would hide a broken reuse
    with Origin().running() as origin:
        for path in ("/then-close/1", "/then-close/2", "/then-close/3"):
            assert get(t, origin.url(path)) == b"short"
            time.sleep(0.2)  # the server's FIN arrives
        t.close()
    assert origin.connections() == 3


def test_threads_fetch_at_once_on_connections_of_their_own() -> None:
    t = transport()
    results: list[bytes] = []
    with Origin().running() as origin:
        threads = [
            threading.Thread(target=lambda: results.append(get(t, origin.url("/chunked"))))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        t.close()
    assert results == [BODY] * 6
    assert 1 <= origin.connections() <= 6


def test_a_chunked_body_cut_short_is_a_one_line_error() -> None:
    with Origin().running() as origin, pytest.raises(RegistryError) as caught:
        get(transport(), origin.url("/broken-chunk"))
    assert "the connection broke mid-response" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_what_every_request_says_and_does_not_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ~/.netrc with credentials for the host is never read.
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    with Origin().running() as origin:
        get(transport(), origin.url("/a b/ä?q=1 2"))
    _, path, headers = origin.seen[0]
    assert path == "/a%20b/%C3%A4?q=1%202"
    assert headers["User-Agent"] == "packager"
    assert headers["Accept-Encoding"] == "identity"
    assert "Authorization" not in headers


# --- proxies --------------------------------------------------------------------------------


@dataclass
class ForwardProxy:
    """An HTTP proxy: absolute-form requests are forwarded, CONNECT opens a tunnel. With
    ``password`` set, requests without ``Proxy-Authorization: Basic user:password`` get 407."""

    password: str | None = None
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    port: int = 0

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[ForwardProxy]:
        with serve(_ProxyHandler, self) as port:
            self.port = port
            yield self


class _ProxyHandler(_Quiet):
    def allowed(self) -> bool:
        owner: ForwardProxy = self.server.owner  # type: ignore[attr-defined]
        given = self.headers.get("Proxy-Authorization")
        owner.seen.append((self.command, self.path, given))
        if owner.password is None:
            return True
        wanted = "Basic " + base64.b64encode(f"user:{owner.password}".encode()).decode()
        if given == wanted:
            return True
        self.answer(407, b"", {"Proxy-Authenticate": 'Basic realm="proxy"'})
        return False

    def do_GET(self) -> None:
        if not self.allowed():
            return
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        upstream.request("GET", target.path + (f"?{target.query}" if target.query else ""))
        response = upstream.getresponse()
        self.answer(response.status, response.read())
        upstream.close()

    def do_CONNECT(self) -> None:
        if not self.allowed():
            return
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        ends = [self.connection, upstream]
        while True:
            readable, _, _ = select.select(ends, [], [], 10)
            data = b""
            for end in readable:
                data = end.recv(65536)
                if not data:
                    break
                (upstream if end is self.connection else self.connection).sendall(data)
            if not readable or not data:
                break
        upstream.close()
        self.close_connection = True


def test_plain_http_goes_through_the_http_proxy_with_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ForwardProxy(password="p@ss").running() as proxy, Origin().running() as origin:
        monkeypatch.setenv("http_proxy", proxy.url("user:p%40ss@"))
        assert get(transport(), origin.url("/via")) == BODY
    method, target, authorization = proxy.seen[0]
    assert (method, target) == ("GET", origin.url("/via"))  # absolute form
    assert authorization == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert origin.seen[0][1] == "/via"
    assert "Proxy-Authorization" not in origin.seen[0][2]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "localhost, 127.0.0.1"])
def test_no_proxy_sends_the_request_direct(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    with ForwardProxy().running() as proxy, Origin().running() as origin:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.setenv("NO_PROXY", no_proxy)
        assert get(transport(), origin.url("/direct")) == BODY
    assert proxy.seen == []
    assert len(origin.seen) == 1


def test_https_goes_through_a_connect_tunnel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls")
    with ForwardProxy(password="secret").running() as proxy, Origin().running(tls) as origin:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url("user:secret@"))
        t = transport(ca_cert=tls.cert)
        assert get(t, origin.url("/tunnelled", "https")) == BODY
        assert get(t, origin.url("/again", "https")) == BODY  # through the same tunnel
        t.close()
    assert [(m, p) for m, p, _ in proxy.seen] == [("CONNECT", f"127.0.0.1:{origin.port}")]
    assert [path for _, path, _ in origin.seen] == ["/tunnelled", "/again"]
    assert origin.connections() == 1


def test_a_proxy_refusing_the_tunnel_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls")
    with ForwardProxy(password="secret").running() as proxy, Origin().running(tls) as origin:
        monkeypatch.setenv("ALL_PROXY", proxy.url("user:wrong@"))
        with pytest.raises(RegistryError, match="the proxy refused the tunnel") as caught:
            get(transport(ca_cert=tls.cert), origin.url("/x", "https"))
    assert "407" in str(caught.value) and "wrong" not in str(caught.value)
    assert origin.seen == []
    # Refused for good: asked once, not again after a backoff.
    assert [method for method, _, _ in proxy.seen] == ["CONNECT"]


def test_a_proxys_credentials_are_not_in_its_repr() -> None:
    proxy = parse_proxy("http://user:hunter2@proxy.example:3128")
    assert proxy.authorization == "Basic " + base64.b64encode(b"user:hunter2").decode()
    assert "hunter2" not in repr(proxy) and proxy.authorization not in repr(proxy)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("socks5://user:pw@127.0.0.1:1080", "SOCKS proxy"),
        ("socks5h://127.0.0.1:1080", "SOCKS proxy"),
        ("https://user:pw@proxy.example:3128", "not one packager can use"),
        ("http://proxy.example:port", "no valid URL"),
    ],
)
def test_proxies_this_client_cannot_use_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("ALL_PROXY", value)
    with pytest.raises(RegistryError, match=message) as caught:
        transport().request("GET", "http://127.0.0.1:9/", what="probe")
    assert "pw" not in str(caught.value) and "\n" not in str(caught.value)


def test_proxy_variables_lower_case_first() -> None:
    environ = {
        "HTTP_PROXY": "http://upper:1",
        "http_proxy": "http://lower:1",
        "HTTPS_PROXY": "http://only-upper:1",
        "no_proxy": "",
        "NO_PROXY": "example.com",
    }
    assert environ_proxies(environ) == {"http": "http://lower:1", "https": "http://only-upper:1"}
    # Under CGI, HTTP_PROXY is a request header ("Proxy: ...") and never a proxy.
    cgi = {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://attacker:1"}
    assert environ_proxies(cgi) == {}


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("registry.example.com", 443, "example.com", True),
        ("registry.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("registry.example.com", 443, "other.org, example.com", True),
        ("registry.example.com", 443, "EXAMPLE.COM", True),
        ("registry.example.com", 5000, "registry.example.com:5000", True),
        ("registry.example.com", 443, "registry.example.com:5000", False),
        ("anything.test", 80, "*", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("::1", 443, "::1", True),
        ("[::1]", 443, "[::1]:443", True),
        ("fd00::5", 443, "fd00::/8", True),
        ("registry.example.com", 443, "", False),
        ("registry.example.com", 443, ",, ,", False),
        ("registry.example.com", 443, "registry.example.com:x", False),
        ("10.1.2.3", 80, "10.0.0.0/99", False),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


# --- Link headers ---------------------------------------------------------------------------


def test_link_headers_as_registries_send_them() -> None:
    value = '</v2/iris/tags/list?last=1.0.0&n=100>; rel="next"'
    assert parse_links(value)["next"]["url"] == "/v2/iris/tags/list?last=1.0.0&n=100"
    several = '<https://a/1>; rel="prev", <https://a/3>; REL=next; type="a;b,c"'
    links = parse_links(several)
    assert links["prev"]["url"] == "https://a/1"
    assert links["next"] == {"rel": "next", "type": "a;b,c", "url": "https://a/3"}
    assert parse_links('<https://a/2>; rel="next last"')["last"]["url"] == "https://a/2"
    assert parse_links("<https://a/4>")["https://a/4"]["url"] == "https://a/4"
    # The first link of a type wins.
    assert parse_links("<x>; rel=next, <y>; rel=next")["next"]["url"] == "x"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "<unterminated",
        '<a>; rel="next',
        '<a>; rel="\\',
        ";;;;,,,,<<<>>>",
        '<a>; rel="next"' + "; x" * 100_000,
        ", " * 100_000,
        '<a>; rel="' + "\\" * 100_001,
        '<a>; x="' * 50_000,
        "<" + "a" * 1_000_000 + ">; rel=next",
        "\x00\r\n<\x7f>; rel=\xff",
    ],
)
def test_hostile_link_headers_parse_quickly_into_dicts_of_strings(value: str) -> None:
    links = parse_links(value)
    assert isinstance(links, dict)
    assert all(isinstance(v, str) for link in links.values() for v in link.values())


def test_link_headers_are_bounded() -> None:
    value = ", ".join(f"<https://a/{i}>; rel=r{i}" for i in range(1000))
    assert len(parse_links(value)) == MAX_LINKS


def test_response_headers_are_case_insensitive_and_joined() -> None:
    headers = Headers([("Link", "<a>; rel=next"), ("content-length", "3"), ("LINK", "<b>")])
    assert headers["content-LENGTH"] == "3"
    assert headers["link"] == "<a>; rel=next, <b>"
    assert "LINK" in headers and "Location" not in headers
    assert sorted(headers) == ["Link", "content-length"]


# --- what start-up loads --------------------------------------------------------------------


def test_the_registry_http_layer_loads_no_third_party_http_stack() -> None:
    program = (
        "import sys\n"
        "import packager.registry.transport, packager.registry.oci, packager.registry.http\n"
        "heavy = ['requests', 'urllib3', 'charset_normalizer', 'idna', 'urllib.request',\n"
        "         'http.cookiejar', 'truststore', 'certifi']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_install_help_loads_no_third_party_http_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "packager", "install", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not loaded & {"requests", "urllib3", "charset_normalizer", "idna"}


# --- requests that cannot be sent -----------------------------------------------------------


class _RedirectHandler(_Quiet):
    def do_GET(self) -> None:
        owner: list[str] = self.server.owner  # type: ignore[attr-defined]
        owner.append(self.path)
        self.send_response(302)
        self.send_header("Location", "https://bad host.example/x")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_to_a_host_that_cannot_be_sent_fails_once_in_one_line() -> None:
    seen: list[str] = []
    retrying = transport(retry=RetryPolicy(attempts=3, backoff=0.5, max_wait=0.5))
    started = time.monotonic()
    with (
        serve(_RedirectHandler, seen) as port,
        pytest.raises(RegistryError, match="cannot be sent") as caught,
    ):
        get(retrying, f"http://127.0.0.1:{port}/start")
    assert time.monotonic() - started < 0.5  # not retried: no backoff waited
    assert seen == ["/start"]
    assert "\n" not in str(caught.value)


def test_a_url_that_cannot_be_encoded_is_a_one_line_error() -> None:
    with Origin().running() as origin, pytest.raises(RegistryError, match="cannot be sent"):
        get(transport(), origin.url("/\udcff"))
    assert origin.seen == []
