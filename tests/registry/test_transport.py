"""The HTTP transport against small real servers on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from packager.core.digests import Digest
from packager.errors import RegistryError, TamperedError
from packager.registry.base import Descriptor
from packager.registry.options import RegistryOptions, RetryPolicy, Timeouts
from packager.registry.transport import BlobRequest, Transport, header_number, is_loopback

from .servers import BlobServer, make_tls

DATA = os.urandom(3 << 20)  # more than one read, so drops happen mid-body
FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.2)


def transport(**kwargs: Any) -> Transport:
    kwargs.setdefault("retry", FAST)
    return Transport(RegistryOptions(**kwargs))


def fetch(t: Transport, server: BlobServer, dest: Path, *, size: int = len(DATA)) -> list[int]:
    steps: list[int] = []
    digest = Digest(hashlib.sha256(DATA).hexdigest())
    t.download_file(
        BlobRequest(server.url, Descriptor("", digest, size), "fetch the test blob"),
        dest,
        steps.append,
    )
    return steps


def test_resumes_a_dropped_download_with_range(tmp_path: Path) -> None:
    with BlobServer(DATA, mode="drop").running() as server:
        steps = fetch(transport(), server, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == DATA
    first, second = server.requests
    assert "Range" not in first
    assert second["Range"] == f"bytes={len(DATA) // 2}-"
    # Progress never goes back and adds up to the blob, however the bytes arrived.
    assert all(s > 0 for s in steps) and sum(steps) == len(DATA)


def test_restarts_when_the_server_ignores_range(tmp_path: Path) -> None:
    with BlobServer(DATA, mode="no-range").running() as server:
        steps = fetch(transport(), server, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == DATA
    assert server.requests[1]["Range"] == f"bytes={len(DATA) // 2}-"
    assert sum(steps) == len(DATA)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("longer", "longer than"),
        ("shorter", "shorter than"),
        ("corrupt", "do not match"),
        ("shrink", "shorter than"),  # resumed past the end: 416
    ],
)
def test_bytes_other_than_declared_are_tampering(tmp_path: Path, mode: str, message: str) -> None:
    with (
        BlobServer(DATA, mode=mode).running() as server,
        pytest.raises(TamperedError, match=message) as caught,
    ):
        fetch(transport(), server, tmp_path / "blob")
    assert caught.value.exit_code == 3
    assert not (tmp_path / "blob").exists()


def test_in_memory_download_is_capped_at_size_plus_one() -> None:
    sink = io.BytesIO()
    with (
        BlobServer(DATA, mode="longer").running() as server,
        pytest.raises(TamperedError, match="longer"),
    ):
        transport().download(
            BlobRequest(server.url, Descriptor("", Digest.of(DATA[:10]), 10), "read a small blob"),
            sink,
        )
    assert len(sink.getvalue()) == 11


def test_retries_server_errors_then_succeeds(tmp_path: Path) -> None:
    with BlobServer(DATA, mode="fail:2:500").running() as server:
        fetch(transport(), server, tmp_path / "blob")
    assert len(server.requests) == 3
    assert (tmp_path / "blob").read_bytes() == DATA


def test_gives_up_after_the_retry_budget(tmp_path: Path) -> None:
    with (
        BlobServer(DATA, mode="fail:99:503").running() as server,
        pytest.raises(RegistryError, match="answered 503") as caught,
    ):
        fetch(transport(), server, tmp_path / "blob")
    assert len(server.requests) == FAST.attempts + 1
    assert caught.value.exit_code == 4
    assert not (tmp_path / "blob").exists()


def test_honours_retry_after_on_429(tmp_path: Path) -> None:
    with BlobServer(DATA, mode="fail:1:429", retry_after="1").running() as server:
        started = time.monotonic()
        fetch(
            transport(retry=RetryPolicy(attempts=2, backoff=0.01, max_wait=5)),
            server,
            tmp_path / "blob",
        )
    assert time.monotonic() - started >= 1.0
    assert len(server.requests) == 2


def test_caps_retry_after(tmp_path: Path) -> None:
    with BlobServer(DATA, mode="fail:1:429", retry_after="3600").running() as server:
        started = time.monotonic()
        fetch(transport(), server, tmp_path / "blob")
    assert time.monotonic() - started < FAST.max_wait + 1


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0", 0),
        ("123", 123),
        (" 42\t", 42),  # HTTP's optional whitespace
        ("9" * 18, 10**18 - 1),
        ("9" * 19, None),  # bounded
        ("9" * 4000, None),
        ("١٢٣", None),  # Arabic-Indic digits, which int() takes
        ("\uff11\uff12\uff13", None),  # fullwidth digits, the same
        ("²", None),  # isdigit() passes it, int() refuses it
        ("1_000", None),
        ("+1", None),
        ("-1", None),
        ("1 000", None),
        ("0x10", None),
        ("1e3", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_numbers_in_headers_are_ascii_digits_only(value: str | None, number: int | None) -> None:
    assert header_number(value) == number


# Header bytes arrive as Latin-1: "²" is the one digit int() and isdigit() disagree on
# that a server can send; the other scripts' digits are the parser's test above.
@pytest.mark.parametrize("value", ["²", "9" * 40, "1_000", "+5", "5 0"])
def test_a_retry_after_that_is_no_number_is_ignored(value: str, tmp_path: Path) -> None:
    # Neither a traceback nor the longest wait allowed: the usual backoff.
    patient = transport(retry=RetryPolicy(attempts=2, backoff=0.01, max_wait=5))
    with BlobServer(DATA, mode="fail:1:429", retry_after=value).running() as server:
        started = time.monotonic()
        fetch(patient, server, tmp_path / "blob")
    assert time.monotonic() - started < 2
    assert len(server.requests) == 2


def test_stalled_server_times_out(tmp_path: Path) -> None:
    slow = transport(
        timeouts=Timeouts(connect=1, stall=0.3, deadline=30),
        retry=RetryPolicy(attempts=1, backoff=0.01),
    )
    started = time.monotonic()
    with BlobServer(DATA, mode="stall", pause=3).running() as server:
        with pytest.raises(RegistryError, match="stalled: no data for 0.3 s"):
            fetch(slow, server, tmp_path / "blob")
        assert time.monotonic() - started < 2.5
    assert not (tmp_path / "blob").exists()


def test_trickling_server_hits_the_deadline() -> None:
    # Each byte comes well within the stall timeout; only the deadline can stop this.
    slow = transport(timeouts=Timeouts(connect=1, stall=5, deadline=0.5))
    started = time.monotonic()
    with BlobServer(DATA[:200], mode="trickle", pause=0.02).running() as server:
        with pytest.raises(RegistryError, match="not done after 0.5 s"):
            slow.download(
                BlobRequest(server.url, Descriptor("", Digest.of(DATA[:200]), 200), "fetch"),
                io.BytesIO(),
            )
        assert time.monotonic() - started < 2


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_trickling_headers_hit_the_deadline(scheme: str, tmp_path: Path) -> None:
    # Each header byte comes well within the stall timeout; only the deadline can stop it.
    tls = make_tls(tmp_path / "tls")
    slow = transport(timeouts=Timeouts(connect=1, stall=5, deadline=0.5), ca_cert=tls.cert)
    server = BlobServer(DATA, mode="header-trickle", pause=0.02)
    with server.running(tls if scheme == "https" else None):
        started = time.monotonic()
        with pytest.raises(RegistryError, match="not done after 0.5 s"):
            slow.request("GET", server.url.replace("http:", f"{scheme}:"), what="fetch")
        assert time.monotonic() - started < 0.9
    assert len(server.requests) == 1  # not retried: the deadline is over


def test_a_trickled_tls_handshake_hits_the_deadline() -> None:
    """A server that answers the ClientHello a byte at a time: ssl bounds the handshake
    by the connect timeout, and the deadline, shorter here, stops it sooner, while ssl
    holds the socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        give_up = time.monotonic() + 5  # a client the deadline does not stop fails later
        with conn:
            conn.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16 KiB: waited for
            while not stop.wait(0.05) and time.monotonic() < give_up:
                try:
                    conn.sendall(b"\x02")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    slow = transport(timeouts=Timeouts(connect=3, stall=5, deadline=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(RegistryError, match="not done after 0.5 s"):
            slow.request("GET", f"https://127.0.0.1:{listener.getsockname()[1]}/", what="fetch")
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_connection_refused_is_a_registry_error(tmp_path: Path) -> None:
    with BlobServer(DATA).running() as server:
        url = server.url
    with pytest.raises(RegistryError, match="connection refused") as caught:
        transport().request("GET", url, what="reach a closed port")
    assert "\n" not in str(caught.value)


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every name lookup other than 127.0.0.1's, and lets none reach a resolver."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("127.0.0.1", b"127.0.0.1"):
            return real(host, *args, **kwargs)
        looked_up.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "not in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_plain_http_to_a_remote_host_is_refused_before_any_socket(no_dns: list[str]) -> None:
    with pytest.raises(RegistryError, match="--plain-http"):
        transport().request("GET", "http://registry.example.test/v2/", what="probe")
    assert no_dns == []
    # Asked for, it is attempted (and fails here only because nothing resolves).
    with pytest.raises(RegistryError, match="host name not found"):
        transport(plain_http=True).request("GET", "http://registry.example.test/v2/", what="probe")
    assert no_dns and set(no_dns) == {"registry.example.test"}


def test_a_redirect_to_plain_http_elsewhere_is_refused(tmp_path: Path, no_dns: list[str]) -> None:
    with (
        BlobServer(DATA, mode="redirect:http://cdn.example.test/blob").running() as server,
        pytest.raises(RegistryError, match="refusing plain HTTP to cdn.example.test"),
    ):
        fetch(transport(), server, tmp_path / "blob")
    assert no_dns == []


@pytest.mark.parametrize(
    "target", ["https://127.0.0.1:{port}/blob", "http://registry.test:{port}/blob"]
)
def test_a_remote_host_may_not_redirect_to_loopback_or_plain_http(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "registry.test" is a server on this machine under a name that is not loopback.
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "registry.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    tls = make_tls(tmp_path / "tls")
    with BlobServer(DATA).running() as local:
        location = target.format(port=local.port)
        with BlobServer(DATA, mode=f"redirect:{location}").running(tls) as server:
            remote = f"https://registry.test:{server.port}/blob"
            # Even with --plain-http, which allows plain HTTP to the registry itself.
            with pytest.raises(RegistryError, match="redirects to") as caught:
                transport(ca_cert=tls.cert, plain_http=True).request("GET", remote, what="fetch")
    assert len(server.requests) == 1
    assert local.requests == []
    assert "\n" not in str(caught.value)


def test_ca_cert_verifies_a_private_tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment's bundle must not win over --ca-cert (it would with Session.verify).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    tls = make_tls(tmp_path / "tls")
    with BlobServer(DATA).running(tls) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(RegistryError, match="not trusted.*--ca-cert"):
            transport().request("GET", url, what="fetch over TLS")
        response = transport(ca_cert=tls.cert).request("GET", url, what="fetch over TLS")
        response.close()
    assert response.status_code == 200


def test_plain_http_loads_no_trust_store_and_https_is_verified_all_the_same(
    tmp_path: Path,
) -> None:
    # A fresh interpreter: whether the trust stores were loaded shows in sys.modules.
    program = (
        "import sys\n"
        "from packager.errors import RegistryError\n"
        "from packager.registry.options import RegistryOptions\n"
        "from packager.registry.transport import Transport\n"
        "plain, tls, redirect = sys.argv[1:]\n"
        "t = Transport(RegistryOptions())\n"
        "t.request('GET', plain, what='fetch').close()\n"
        "print('loaded' if 'truststore' in sys.modules else 'not loaded')\n"
        "for url in (tls, redirect):\n"
        "    try:\n"
        "        Transport(RegistryOptions()).request('GET', url, what='fetch').close()\n"
        "    except RegistryError as e:\n"
        "        print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    tls = make_tls(tmp_path / "tls")
    with (
        BlobServer(DATA).running() as plain,
        BlobServer(DATA).running(tls) as private,
    ):
        https = private.url.replace("http://", "https://")
        with BlobServer(DATA, mode=f"redirect:{https}").running() as redirect:
            done = subprocess.run(
                [sys.executable, "-c", program, plain.url, https, redirect.url],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "not loaded"
    assert len(lines) == 3 and all("TLS certificate not trusted" in line for line in lines[1:])
    assert len(plain.requests) == 1 and len(redirect.requests) == 1


def test_loopback_names() -> None:
    assert all(map(is_loopback, ["localhost", "127.0.0.1", "127.3.4.5", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["registry.local", "10.0.0.1", "localhost.example", "::"]))
