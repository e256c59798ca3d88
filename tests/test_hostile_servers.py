"""Endless data and slow retrieval: installs from small real HTTP servers on 127.0.0.1 that
misbehave on purpose, for both remote kinds of registry.

:class:`Hostile` serves one registry directory two ways at once - as a static mirror
(``/<name>/index.json``, ``/<name>/blobs/sha256/<hex>``) and as the read side of the OCI
distribution API (``/v2/<name>/manifests/<tag>``, ``/v2/<name>/blobs/sha256:<hex>``,
``/v2/<name>/tags/list``) - so that every fault is played against
:class:`~packager.registry.http.StaticMirrorRegistry` and
:class:`~packager.registry.oci.OciRegistry` alike. What the transport proves on its own
(tests/registry/test_transport.py: drops, ignored ranges, wrong lengths, retries, stalls
and trickles on one blob) is not repeated; here every fault goes through a real install
and must end in a refusal with nothing installed, or in a byte-identical install.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from packager.core.channel import ARTIFACT_TYPE as CHANNEL_TYPE
from packager.core.channel import MAX_CHANNEL_BYTES
from packager.core.manifest import dump_json
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import PackagerError, RegistryError, TamperedError
from packager.instance.install import InstallOptions, InstallResult, install
from packager.instance.store import Store
from packager.registry.artifact import MAX_OCI_MANIFEST_BYTES, OCI_MANIFEST_MEDIA_TYPE
from packager.registry.base import Artifact, Registry
from packager.registry.http import StaticMirrorRegistry
from packager.registry.layout import MAX_INDEX_BYTES, MAX_MODELS_INDEX_BYTES, LayoutRegistry
from packager.registry.oci import MAX_LIST_BYTES, OciRegistry
from packager.registry.options import RegistryOptions, RetryPolicy, Timeouts

from .conftest import KeyPair
from .registry.servers import _Quiet, serve

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KINDS = ["mirror", "oci"]
# Small limits keep every test well under a few seconds.
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=0.1)
ONE_RETRY = RetryPolicy(attempts=1, backoff=0.01, max_wait=0.1)
TIMEOUTS = Timeouts(connect=1, stall=0.3, deadline=5)
SEND_BUFFER = 64 << 10
GARBAGE = b"\x00" * (64 << 10)


def _receive_buffer_max() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 32 << 20  # Linux's usual maximum


# What an endless server can have written beyond what the client read: what the client's
# receive buffer and the server's send buffer (twice what is asked, on Linux) can hold.
SLACK = _receive_buffer_max() + 2 * SEND_BUFFER + len(GARBAGE)
# The size of a huge document; endless servers stop there too, so that a test of a client
# that never stops reading still ends (and fails).
HUGE = 100 << 20
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class Hostile:
    """Serves ``root`` honestly (with ranges), except the first ``times`` requests whose
    path ends with ``target``: those get ``fault`` (see :class:`_HostileHandler`)."""

    root: Path
    target: str = "\0"
    fault: str = "ok"
    times: int = 1
    pause: float = 0.0
    cap: int = 0  # what ``overrun`` exceeds by one byte; 0: the body's length
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    sent: int = 0  # body bytes written to the faulty answers
    closing: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hits(self) -> list[str | None]:
        """The Range headers of the requests for the target so far."""
        return [r for path, r in self.seen if path.endswith(self.target)]

    @contextmanager
    def running(self) -> Iterator[Hostile]:
        with serve(_HostileHandler, self) as port:
            self.port = port
            try:
                yield self
            finally:
                self.closing.set()


class _HostileHandler(_Quiet):
    """Faults, each given the honest body:

    ``endless-close`` (no length, then garbage until the client hangs up),
    ``endless-chunked`` (chunked, endless), ``endless-length`` (Content-Length 100 MiB);
    ``overrun`` (``cap`` + 1 bytes, then silence);
    ``silent`` (never answers); ``trickle`` (a byte, then one every ``pause`` seconds);
    ``stall`` (half the body, then silence; later hits: silence at once);
    ``endless-header`` (a header line that never ends);
    ``header-trickle`` (the headers one byte every ``pause`` seconds, then honest);
    ``length-superscript`` (Content-Length ``²``, the body, then close);
    ``length-short`` / ``length-long-close`` / ``length-long-stall`` (Content-Length 10
    bytes off the body, then the connection is closed, or left silent);
    ``reset`` (half the body, then a TCP reset); ``reset-corrupt`` (a reset, then resumed
    ranges of other bytes); ``fail`` (500).
    """

    def do_GET(self) -> None:
        owner: Hostile = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        owner.seen.append((path, self.headers.get("Range")))
        found = self.resolve(owner.root, path)
        if found is None:
            self.answer(404, b'{"errors": [{"code": "NOT_FOUND"}]}')
            return
        body, media_type = found
        hit = len(owner.hits()) if path.endswith(owner.target) else 0
        if 0 < hit <= owner.times and owner.fault != "ok":
            getattr(self, "fault_" + owner.fault.replace("-", "_"))(owner, body, hit)
        else:
            self.honest(body, media_type)

    @staticmethod
    def resolve(root: Path, path: str) -> tuple[bytes, str] | None:
        """The bytes and media type ``path`` names, in either API; None when missing."""
        parts = path.strip("/").split("/")
        if ".." in parts:
            return None
        if parts[:1] == ["v2"]:
            return _HostileHandler.resolve_oci(root, parts[1:])
        file = root.joinpath(*parts)
        return (file.read_bytes(), "application/octet-stream") if file.is_file() else None

    @staticmethod
    def resolve_oci(root: Path, parts: list[str]) -> tuple[bytes, str] | None:
        if not parts or parts == [""]:
            return b"{}", "application/json"
        name, kind, ref = parts[0], parts[1], parts[-1]
        index_file = root / name / "index.json"
        if not index_file.is_file():
            return None
        entries = json.loads(index_file.read_bytes())["manifests"]
        if kind == "tags":
            tags = [e["annotations"][REF_NAME] for e in entries]
            return json.dumps({"name": name, "tags": tags}).encode(), "application/json"
        if kind == "manifests":
            digests = [e["digest"] for e in entries if e["annotations"][REF_NAME] == ref]
            if not digests:
                return None
            ref, media_type = digests[0], OCI_MANIFEST_MEDIA_TYPE
        else:
            media_type = "application/octet-stream"
        blob = root / name / "blobs" / "sha256" / ref.removeprefix("sha256:")
        return (blob.read_bytes(), media_type) if blob.is_file() else None

    def honest(self, body: bytes, media_type: str) -> None:
        first = self.headers.get("Range", "").removeprefix("bytes=").rstrip("-")
        if not first.isdigit():
            self.answer(200, body, {"Content-Type": media_type})
        elif int(first) >= len(body):
            self.answer(416, headers={"Content-Range": f"bytes */{len(body)}"})
        else:
            part = f"bytes {first}-{len(body) - 1}/{len(body)}"
            self.answer(206, body[int(first) :], {"Content-Range": part})

    def head(self, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()

    def send(self, owner: Hostile, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        owner.sent += len(data)

    def endless(self, owner: Hostile, body: bytes, frame: Callable[[bytes], bytes]) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            self.send(owner, frame(body))
            while owner.sent < HUGE:
                self.send(owner, frame(GARBAGE))
        except OSError:
            pass  # the client hung up: what it should do

    def fault_endless_close(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.head(Connection="close")
        self.endless(owner, body, lambda data: data)

    def fault_endless_chunked(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.head(Transfer_Encoding="chunked")
        self.endless(owner, body, lambda data: b"%x\r\n%s\r\n" % (len(data), data))

    def fault_endless_length(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.head(Content_Length=str(HUGE))
        self.endless(owner, body, lambda data: data)

    def fault_overrun(self, owner: Hostile, body: bytes, hit: int) -> None:
        # One byte more than the client may read, then silence: a client that asks for
        # more waits for the stall timeout instead of refusing at once.
        self.head(Connection="close")
        cap = owner.cap or len(body)
        self.send(owner, (body + GARBAGE * (cap // len(GARBAGE) + 1))[: cap + 1])
        owner.closing.wait(owner.pause)
        self.close_connection = True

    def fault_silent(self, owner: Hostile, body: bytes, hit: int) -> None:
        owner.closing.wait(owner.pause)
        self.close_connection = True

    def fault_trickle(self, owner: Hostile, body: bytes, hit: int) -> None:
        first = self.headers.get("Range", "").removeprefix("bytes=").rstrip("-")
        start = int(first) if first.isdigit() else 0
        if start:
            part = f"bytes {start}-{len(body) - 1}/{len(body)}"
            self.head(206, Content_Range=part, Content_Length=str(len(body) - start))
        else:
            self.head(Content_Length=str(len(body)))
        self.close_connection = True
        try:
            for i in range(start, len(body)):
                self.send(owner, body[i : i + 1])
                if owner.closing.wait(owner.pause):
                    return
        except OSError:
            pass

    def fault_stall(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.close_connection = True
        if hit == 1:
            self.head(Content_Length=str(len(body)))
            self.send(owner, body[: len(body) // 2])
        owner.closing.wait(owner.pause)

    def fault_endless_header(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            while owner.sent < HUGE:
                self.send(owner, b"a" * len(GARBAGE))
        except OSError:
            pass

    def fault_header_trickle(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(20):
            self.send(owner, b"a")
            if owner.closing.wait(owner.pause):
                return
        self.wfile.write(b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def lie_about_length(self, owner: Hostile, body: bytes, length: int) -> None:
        self.head(Content_Length=str(length))
        self.send(owner, body)
        self.close_connection = True

    def fault_length_superscript(self, owner: Hostile, body: bytes, hit: int) -> None:
        # "²" passes str.isdigit() and fails int(): no number, so the body ends at close.
        self.head(Content_Length="²", Connection="close")
        self.send(owner, body)
        self.close_connection = True

    def fault_length_short(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.lie_about_length(owner, body, len(body) - 10)

    def fault_length_long_close(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.lie_about_length(owner, body, len(body) + 10)

    def fault_length_long_stall(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.lie_about_length(owner, body, len(body) + 10)
        owner.closing.wait(owner.pause)

    def fault_reset(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.head(Content_Length=str(len(body)))
        self.send(owner, body[: len(body) // 2])
        # Time for the client to take the first half before the reset throws away what
        # is still queued.
        owner.closing.wait(0.2)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def fault_reset_corrupt(self, owner: Hostile, body: bytes, hit: int) -> None:
        if hit == 1:
            self.fault_reset(owner, body, hit)
        else:
            self.honest(bytes(b ^ 1 for b in body), "application/octet-stream")

    def fault_fail(self, owner: Hostile, body: bytes, hit: int) -> None:
        self.answer(500, b"try again")


@dataclass(frozen=True)
class Published:
    root: Path
    bundle: Path
    artifact: Artifact

    def hex(self, title: str) -> str:
        """The sha256 hex of a bundle file's blob, or of the OCI manifest."""
        if title == "OCI manifest":
            return self.artifact.manifest_digest.hex
        return self.artifact.files[title].digest.hex

    def size(self, title: str) -> int:
        return self.artifact.files[title].size


@pytest.fixture
def published(tmp_path: Path, bundles: dict[str, Path]) -> Published:
    root = tmp_path / "registry"
    registry = LayoutRegistry(root)
    artifact = publish_bundle(
        bundles["1.0.0"], registry=registry, mode=Unverified("publish without --key")
    )
    (root / "models.json").write_text('["iris"]\n')
    return Published(root, bundles["1.0.0"], artifact)


def open_kind(kind: str, server: Hostile, **options: Any) -> Registry:
    options = {"retry": FAST, "timeouts": TIMEOUTS, "plain_http": True, **options}
    if kind == "mirror":
        return StaticMirrorRegistry(f"http://{server.host}", options=RegistryOptions(**options))
    return OciRegistry(f"oci://{server.host}", options=RegistryOptions(**options))


def blob_target(kind: str, hex_digest: str) -> str:
    return f"/sha256/{hex_digest}" if kind == "mirror" else f"/sha256:{hex_digest}"


def index_target(kind: str) -> str:
    """Where a registry says what iris 1.0.0 is: index.json, or the tagged manifest."""
    return "/iris/index.json" if kind == "mirror" else "/manifests/1.0.0"


def install_from(
    registry: Registry, home: Path, keypair: KeyPair, ref: str = "iris@1.0.0"
) -> InstallResult:
    return install(
        ref,
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )


def refused(
    registry: Registry, home: Path, keypair: KeyPair, ref: str = "iris@1.0.0"
) -> PackagerError:
    """The error an install from ``registry`` fails with; checks nothing was installed."""
    with pytest.raises(PackagerError) as caught:
        install_from(registry, home, keypair, ref)
    assert not (home / "models" / "iris").exists()
    assert not [p for p in (home / "tmp").rglob("*") if p.is_file()], "staging left behind"
    return caught.value


def assert_installed(result: InstallResult, bundle: Path) -> None:
    assert result.version == "1.0.0"
    installed = {p.name: p.read_bytes() for p in result.directory.iterdir()}
    assert installed == {p.name: p.read_bytes() for p in bundle.iterdir()}


# --- (a) endless data ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["endless-close", "endless-chunked", "endless-length"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_endless_blob_is_cut_at_its_signed_size_plus_one(
    kind: str, fault: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    with Hostile(published.root, target, fault).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, TamperedError), error
    assert "longer than the" in str(error)
    assert error.exit_code == 3
    assert server.hits() == [None]  # no second try at a blob that was too long
    assert server.sent <= published.size("model.onnx") + 1 + SLACK


@pytest.mark.parametrize("kind", KINDS)
def test_a_blob_is_read_to_its_signed_size_plus_one_and_no_further(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    timeouts = Timeouts(connect=1, stall=5, deadline=10)
    started = time.monotonic()
    with Hostile(published.root, target, "overrun", pause=10).running() as server:
        error = refused(open_kind(kind, server, timeouts=timeouts), home, keypair)
    assert isinstance(error, TamperedError), error
    assert "longer than the" in str(error)
    # Refused on byte size + 1: a client wanting one more would have waited for the stall.
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("title", ["model.sig", "manifest.json", "OCI manifest"])
@pytest.mark.parametrize("kind", KINDS)
def test_endless_documents_read_before_verification_are_cut(
    kind: str, title: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    if title != "OCI manifest":
        target, cap = blob_target(kind, published.hex(title)), published.size(title)
    elif kind == "mirror":
        target = blob_target(kind, published.hex(title))
        cap = len(published.artifact.oci_manifest)
    else:  # fetched by tag: no size is known before it is read
        target, cap = index_target(kind), MAX_OCI_MANIFEST_BYTES
    with Hostile(published.root, target, "endless-close").running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, TamperedError), error
    assert error.exit_code == 3
    assert server.sent <= cap + 1 + SLACK


@pytest.mark.parametrize("kind", KINDS)
def test_an_endless_channel_document_is_cut(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    source = LayoutRegistry(published.root)
    promote("iris@1.0.0", channel="stable", registry=source, private_key=keypair.private, now=NOW)
    document = source.get_document(
        "iris", "channel.stable", artifact_type=CHANNEL_TYPE, max_size=MAX_CHANNEL_BYTES
    )
    target = blob_target(kind, hashlib.sha256(document).hexdigest())
    with Hostile(published.root, target, "endless-close").running() as server:
        error = refused(open_kind(kind, server), home, keypair, "iris@stable")
    assert isinstance(error, TamperedError), error
    assert "longer than the" in str(error)
    assert server.sent <= len(document) + 1 + SLACK


# --- (b) slow retrieval ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_that_never_answers_hits_the_stall_timeout(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    started = time.monotonic()
    with Hostile(published.root, target, "silent", times=99, pause=10).running() as server:
        error = refused(open_kind(kind, server, retry=ONE_RETRY), home, keypair)
    assert isinstance(error, RegistryError), error
    assert error.exit_code == 4
    assert "stalled: no data for 0.3 s" in str(error)
    assert len(server.hits()) == ONE_RETRY.attempts + 1
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_stalling_mid_body_is_resumed_then_given_up(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    half = published.size("model.onnx") // 2
    with Hostile(published.root, target, "stall", times=99, pause=10).running() as server:
        error = refused(open_kind(kind, server, retry=ONE_RETRY), home, keypair)
    assert isinstance(error, RegistryError), error
    assert error.exit_code == 4
    assert "stalled" in str(error)
    # The first stall made progress, so it did not count against the retry budget.
    assert server.hits() == [None] + [f"bytes={half}-"] * (ONE_RETRY.attempts + 1)


@pytest.mark.parametrize("kind", KINDS)
def test_one_byte_a_second_is_stopped_by_the_deadline(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    # Each resume gets a byte before stalling: progress, so only the deadline ends it.
    target = blob_target(kind, published.hex("model.onnx"))
    timeouts = Timeouts(connect=1, stall=0.3, deadline=0.8)
    started = time.monotonic()
    with Hostile(published.root, target, "trickle", times=999, pause=1.0).running() as server:
        error = refused(open_kind(kind, server, timeouts=timeouts, retry=ONE_RETRY), home, keypair)
    elapsed = time.monotonic() - started
    assert isinstance(error, RegistryError), error
    assert error.exit_code == 4
    assert "deadline" in str(error) or "not done after" in str(error)
    assert len(server.hits()) > ONE_RETRY.attempts + 1  # more tries than the retry budget
    assert elapsed < 2.5


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickling_listing_hits_the_deadline(kind: str, published: Published) -> None:
    target = "/iris/index.json" if kind == "mirror" else "/tags/list"
    timeouts = Timeouts(connect=1, stall=1, deadline=0.5)
    started = time.monotonic()
    with (
        Hostile(published.root, target, "trickle", times=99, pause=0.05).running() as server,
        pytest.raises(RegistryError, match="not done after 0.5 s") as caught,
    ):
        open_kind(kind, server, timeouts=timeouts).versions("iris")
    assert caught.value.exit_code == 4
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_endless_headers_are_refused(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.sig"))
    with Hostile(published.root, target, "endless-header", times=99).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, RegistryError), error
    assert error.exit_code == 4
    assert len(server.hits()) == FAST.attempts + 1
    assert server.sent <= len(server.hits()) * (len(GARBAGE) + SLACK)


def test_trickling_headers_hit_the_deadline(published: Published) -> None:
    timeouts = Timeouts(connect=1, stall=1, deadline=0.5)
    target = "/iris/index.json"
    started = time.monotonic()
    with Hostile(published.root, target, "header-trickle", pause=0.05).running() as server:
        with pytest.raises(RegistryError, match="0.5 s"):
            open_kind("mirror", server, timeouts=timeouts).versions("iris")
        assert time.monotonic() - started < 0.9


# --- (c) lies in Content-Length --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_content_length_that_is_no_number_is_ignored(kind: str, published: Published) -> None:
    target = "/iris/index.json" if kind == "mirror" else "/tags/list"
    with Hostile(published.root, target, "length-superscript").running() as server:
        assert open_kind(kind, server).versions("iris") == ["1.0.0"]
        assert len(server.hits()) == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("length-short", "shorter than"),
        ("length-long-close", "shorter than"),  # resumed past the end: 416
        ("length-long-stall", "shorter than"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_a_false_content_length_is_never_accepted(
    kind: str, fault: str, message: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    with Hostile(published.root, target, fault, pause=5).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, TamperedError), error
    assert message in str(error)
    assert error.exit_code == 3


# --- (d) a reset mid-body ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_reset_mid_body_resumes_with_range_and_installs_the_same_bytes(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    with Hostile(published.root, target, "reset").running() as server:
        result = install_from(open_kind(kind, server), home, keypair)
    assert_installed(result, published.bundle)
    assert server.hits() == [None, f"bytes={published.size('model.onnx') // 2}-"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_resume_with_other_bytes_fails_the_whole_digest(
    kind: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = blob_target(kind, published.hex("model.onnx"))
    with Hostile(published.root, target, "reset-corrupt", times=99).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, TamperedError), error
    assert "do not match" in str(error)
    assert server.hits()[1] == f"bytes={published.size('model.onnx') // 2}-"


# --- (e) server errors, then success -----------------------------------------------------------


@pytest.mark.parametrize("what", ["index", "blob"])
@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_are_retried_until_success(
    kind: str, what: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = (
        index_target(kind) if what == "index" else blob_target(kind, published.hex("model.onnx"))
    )
    retry = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.1)
    with Hostile(published.root, target, "fail", times=3).running() as server:
        result = install_from(open_kind(kind, server, retry=retry), home, keypair)
    assert_installed(result, published.bundle)
    assert len(server.hits()) == 4


@pytest.mark.parametrize("what", ["index", "blob"])
@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_beyond_the_retry_budget_are_exit_4(
    kind: str, what: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    target = (
        index_target(kind) if what == "index" else blob_target(kind, published.hex("model.onnx"))
    )
    with Hostile(published.root, target, "fail", times=99).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, RegistryError), error
    assert "answered 500" in str(error)
    assert error.exit_code == 4
    assert len(server.hits()) == FAST.attempts + 1


# --- (f) caps on documents read before verification ---------------------------------------------


def list_versions(registry: Registry) -> object:
    return registry.versions("iris")


def list_names(registry: Registry) -> object:
    return registry.names()


def resolve_version(registry: Registry) -> object:
    return registry.resolve("iris", "1.0.0")


@pytest.mark.parametrize("fault", ["endless-close", "overrun"])
@pytest.mark.parametrize(
    ("kind", "target", "call", "cap", "error"),
    [
        ("mirror", "/iris/index.json", list_versions, MAX_INDEX_BYTES, RegistryError),
        ("mirror", "/models.json", list_names, MAX_MODELS_INDEX_BYTES, RegistryError),
        ("oci", "/tags/list", list_versions, MAX_LIST_BYTES, RegistryError),
        ("oci", "/manifests/1.0.0", resolve_version, MAX_OCI_MANIFEST_BYTES, TamperedError),
    ],
)
def test_an_endless_document_is_read_to_its_cap_plus_one_and_refused(
    kind: str,
    target: str,
    call: Callable[[Registry], object],
    cap: int,
    error: type[PackagerError],
    fault: str,
    published: Published,
) -> None:
    timeouts = Timeouts(connect=1, stall=5, deadline=10)
    started = time.monotonic()
    with (
        Hostile(published.root, target, fault, cap=cap, pause=10).running() as server,
        pytest.raises(error),
    ):
        call(open_kind(kind, server, timeouts=timeouts))
    # Refused on byte cap + 1: a client wanting one more would have waited for the stall.
    assert time.monotonic() - started < 3
    assert server.sent <= cap + 1 + SLACK
    assert server.sent < HUGE


def test_a_document_declaring_more_than_its_cap_is_refused_unread(published: Published) -> None:
    with (
        Hostile(published.root, "/iris/index.json", "endless-length").running() as server,
        pytest.raises(RegistryError, match=f"larger than the {MAX_INDEX_BYTES} bytes"),
    ):
        open_kind("mirror", server).versions("iris")
    # Refused on the header: only what the socket buffers took was ever written.
    assert server.sent < SLACK


def edit_version(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite iris 1.0.0's OCI manifest in the layout at ``root`` (a hostile registry)."""
    layout = root / "iris"
    index = json.loads((layout / "index.json").read_bytes())
    (entry,) = index["manifests"]
    blobs = layout / "blobs" / "sha256"
    doc = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
    edit(doc)
    data = dump_json(doc)
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    entry.update(digest=f"sha256:{digest}", size=len(data))
    (layout / "index.json").write_bytes(dump_json(index))


@pytest.mark.parametrize("title", ["model.sig", "manifest.json"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_signature_or_manifest_declared_huge_is_refused_before_a_byte_is_read(
    kind: str, title: str, published: Published, home: Path, keypair: KeyPair
) -> None:
    def declare_huge(doc: dict[str, Any]) -> None:
        for layer in doc["layers"]:
            if layer["annotations"]["org.opencontainers.image.title"] == title:
                layer["size"] = HUGE

    edit_version(published.root, declare_huge)
    target = blob_target(kind, published.hex(title))
    with Hostile(published.root, target).running() as server:
        error = refused(open_kind(kind, server), home, keypair)
    assert isinstance(error, TamperedError), error
    assert f"declares {HUGE} bytes" in str(error)
    assert server.hits() == []
