"""Fuzzing the parsers that read untrusted bytes: only packager's own errors may escape."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager._io.keys import generate_private_key
from packager.core import signature
from packager.core.channel import ARTIFACT_TYPE as CHANNEL_TYPE
from packager.core.digests import Digest
from packager.core.manifest import parse_manifest
from packager.core.policy import Trusted, Unverified, adhoc_policy, parse_policy
from packager.distribution.publish import publish_bundle
from packager.errors import PackagerError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry import open_registry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE, parse_oci_manifest
from packager.registry.base import RegistryReader
from packager.registry.index import parse_index
from packager.registry.memory import MemoryRegistry, MemorySnapshot
from packager.registry.options import RegistryOptions, RetryPolicy
from packager.registry.tarscan import scan_tar

from .conftest import KeyPair
from .registry.servers import _Quiet, serve

KEY = generate_private_key()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


EXAMPLE = Path(__file__).parents[1] / "manifests" / "manifest.example.json"


def valid_manifest() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return doc


def replace_at(doc: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    if isinstance(doc, dict) and doc:
        key = list(doc)[path[0] % len(doc)]
        return {**doc, key: replace_at(doc[key], path[1:], value)}
    if isinstance(doc, list) and doc:
        i = path[0] % len(doc)
        return [*doc[:i], replace_at(doc[i], path[1:], value), *doc[i + 1 :]]
    return value


def only_our_errors(parse: Any, data: Any) -> None:
    """Any exception but a PackagerError fails the test."""
    with contextlib.suppress(PackagerError):
        parse(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_manifest_parser_bytes(data: bytes) -> None:
    only_our_errors(parse_manifest, data)


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), json_values)
def test_manifest_parser_mutations(path: list[int], value: Any) -> None:
    doc = replace_at(valid_manifest(), path, value)
    only_our_errors(parse_manifest, json.dumps(doc).encode())


SIGNED = signature.sign(
    subject_name="m", resources={"a": Digest.of(b"a"), "b": Digest.of(b"b")}, private_key=KEY
)


@FUZZ
@given(st.binary(max_size=2048))
def test_signature_parser_bytes(data: bytes) -> None:
    only_our_errors(lambda d: signature.verify(d, public_keys=[KEY.public_key()]), data)


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), json_values)
def test_signature_parser_mutations(path: list[int], value: Any) -> None:
    doc = replace_at(json.loads(SIGNED), path, value)
    only_our_errors(
        lambda d: signature.verify(d, public_keys=[KEY.public_key()]), json.dumps(doc).encode()
    )


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_oci_manifest_parser(data: bytes) -> None:
    only_our_errors(
        lambda d: parse_oci_manifest(d, name="m", version="1.0.0", digest=Digest.of(d)), data
    )


def _index_lookups(data: bytes) -> None:
    index = parse_index(data, where="index.json", hint="fuzz")
    for ref in index.refs:
        index.descriptor(ref)


@FUZZ
@given(
    st.binary(max_size=2048)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.lists(json_values, max_size=4).map(lambda m: json.dumps({"manifests": m}).encode())
)
def test_oci_index_parser(data: bytes) -> None:
    only_our_errors(_index_lookups, data)


@FUZZ
@given(st.text(max_size=1024))
def test_policy_parser(text: str) -> None:
    only_our_errors(lambda t: parse_policy(t, source="fuzz"), text)


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_channel_parser(data: bytes) -> None:
    from datetime import UTC, datetime

    from packager.core.channel import parse_channel_payload
    from packager.core.policy import Trusted, adhoc_policy
    from packager.core.verify import accept_channel

    only_our_errors(parse_channel_payload, data)
    only_our_errors(
        lambda d: accept_channel(
            d,
            Trusted(adhoc_policy([KEY.public_key()])),
            name="m",
            channel="stable",
            now=datetime.now(UTC),
            last_seen=None,
        ),
        data,
    )


@FUZZ
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_root_of_trust_parsers(data: bytes) -> None:
    from datetime import UTC, datetime

    from packager.core.root import (
        DELEGATIONS_PAYLOAD_TYPE,
        ROOT_PAYLOAD_TYPE,
        accept_delegations,
        pin_root,
    )
    from packager.core.signature import sign_envelope

    only_our_errors(pin_root, data)
    for payload_type in (ROOT_PAYLOAD_TYPE, DELEGATIONS_PAYLOAD_TYPE):
        # Signed, so that the parsers behind the signature check see the bytes too.
        signed = sign_envelope(payload_type, data, private_key=KEY)
        only_our_errors(pin_root, signed)
    root = pin_root(_ROOT)
    only_our_errors(
        lambda d: accept_delegations(root, d, now=datetime.now(UTC), floor=None),
        sign_envelope(DELEGATIONS_PAYLOAD_TYPE, data, private_key=KEY),
    )


def _one_key_root() -> bytes:
    from datetime import UTC, datetime

    from packager.core.root import (
        ROOT_PAYLOAD_TYPE,
        Role,
        Root,
        keys_by_hint,
        root_payload,
        sign_document,
    )
    from packager.core.signature import key_hint

    hint = key_hint(KEY.public_key())
    root = Root(1, datetime(2100, 1, 1, tzinfo=UTC), keys_by_hint([KEY.public_key()]),
                Role((hint,), 1), Role((hint,), 1))  # fmt: skip
    return sign_document(ROOT_PAYLOAD_TYPE, root_payload(root), [KEY])


_ROOT = _one_key_root()


@FUZZ
@given(json_values)
def test_root_of_trust_predicates(predicate: Any) -> None:
    """Any predicate inside a well-formed, signed statement: refused with our errors."""
    import hashlib

    from packager.core.root import ROOT_PAYLOAD_TYPE, ROOT_PREDICATE_TYPE, pin_root
    from packager.core.signature import STATEMENT_TYPE, sign_envelope

    canonical = json.dumps(predicate, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": "root.1", "digest": {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}}
        ],
        "predicateType": ROOT_PREDICATE_TYPE,
        "predicate": predicate,
    }
    data = sign_envelope(ROOT_PAYLOAD_TYPE, json.dumps(statement).encode(), private_key=KEY)
    only_our_errors(pin_root, data)


# --- every registry answer, through the client that reads it ------------------------------
#
# A real server on 127.0.0.1 answers each request with the fuzzed bytes; whatever it says,
# the client must end in a value or in packager's own error, with exit 3 or 4.

# Answers read as JSON: arbitrary bytes, arbitrary JSON, and JSON near the expected shape.
answers = (
    st.binary(max_size=1024)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "tags": st.lists(st.text(max_size=140) | json_values, max_size=4),
            "manifests": st.lists(json_values, max_size=3),
            "token": st.text(max_size=40) | json_values,
            "expires_in": st.integers() | st.floats() | json_values,
            "errors": st.lists(json_values, max_size=2),
        },
    ).map(lambda d: json.dumps(d).encode())
)
FAST = RetryPolicy(attempts=1, backoff=0.01, max_wait=0.1)
FUZZ_NET = settings(FUZZ, max_examples=150)


@dataclass
class Answers:
    """What every request is answered: ``status`` and ``body``; with ``token`` set, requests
    without credentials are challenged and the token service answers ``token``."""

    status: int = 200
    body: bytes = b""
    token: bytes | None = None


class _AnswerHandler(_Quiet):
    def do_GET(self) -> None:
        owner: Answers = self.server.owner  # type: ignore[attr-defined]
        json_type = {"Content-Type": "application/json"}
        if owner.token is not None and self.path.startswith("/token"):
            self.answer(200, owner.token, json_type)
        elif owner.token is not None and "Authorization" not in self.headers:
            port = self.server.server_address[1]
            realm = f'Bearer realm="http://127.0.0.1:{port}/token",service="fuzz"'
            self.answer(401, b"", {"WWW-Authenticate": realm})
        else:
            self.answer(owner.status, owner.body, json_type)

    do_HEAD = do_GET


def exits_3_or_4(call: Callable[[], object]) -> None:
    """``call`` returns, or raises a PackagerError whose exit code is 3 or 4."""
    refusal: PackagerError | None = None
    try:
        call()
    except PackagerError as e:
        refusal = e
    assert refusal is None or refusal.exit_code in (3, 4), repr(refusal)


@contextlib.contextmanager
def answering(kind: str) -> Iterator[tuple[Answers, RegistryReader]]:
    owner = Answers()
    with serve(_AnswerHandler, owner) as port, tempfile.TemporaryDirectory() as home:
        url = f"{kind}://127.0.0.1:{port}/fuzz"
        yield owner, open_registry(url, home=Path(home), options=RegistryOptions(retry=FAST))


def test_oci_tag_list_manifest_and_error_answers() -> None:
    with answering("oci") as (owner, registry):

        @FUZZ_NET
        @given(answers, st.sampled_from([200, 400, 403, 404]))
        def run(body: bytes, status: int) -> None:
            owner.status, owner.body = status, body
            exits_3_or_4(lambda: registry.versions("iris"))
            exits_3_or_4(lambda: registry.resolve("iris", "1.0.0"))

        run()


def test_token_answers() -> None:
    with answering("oci") as (owner, registry):

        @FUZZ_NET
        @given(answers)
        def run(token: bytes) -> None:
            owner.token, owner.body = token, b'{"name": "fuzz/iris", "tags": ["1.0.0"]}'
            exits_3_or_4(lambda: registry.versions("iris"))

        run()


def test_mirror_models_json_and_index_answers() -> None:
    with answering("http") as (owner, registry):

        @FUZZ_NET
        @given(answers, st.sampled_from([200, 400, 403]))
        def run(body: bytes, status: int) -> None:
            owner.status, owner.body = status, body
            exits_3_or_4(registry.names)
            exits_3_or_4(lambda: registry.versions("iris"))
            exits_3_or_4(lambda: registry.resolve("iris", "1.0.0"))

        run()


# --- the tar scanner ----------------------------------------------------------------------


def _tar_of(names: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return out.getvalue()


TAR = _tar_of(["oci-layout", "a" * 150, "index.json"])


@FUZZ
@given(
    st.binary(max_size=4096)
    | st.lists(st.tuples(st.integers(0, len(TAR) - 1), st.integers(0, 255)), max_size=8).map(
        lambda flips: _flipped(TAR, flips)
    )
)
def test_tar_scanner(data: bytes) -> None:
    def scan() -> None:
        for _ in scan_tar(io.BytesIO(data), file_size=len(data), where="t.tar", max_headers=50):
            pass

    exits_3_or_4(scan)


def _flipped(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, value in flips:
        out[at] = value
    return bytes(out)


# --- install: every refusal of a fuzzed answer is audited ---------------------------------

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _lie(registry: MemoryRegistry, target: str, data: bytes) -> str:
    """Make ``registry`` serve ``data`` as ``target``; returns what to install."""
    if target == "index.json":
        registry.roll_back(MemorySnapshot({"iris": data}))
    elif target == "OCI manifest":
        digest = registry.put_blob(data)
        entry = {"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": str(digest), "size": len(data)}
        registry.set_tag("iris", "1.0.0", entry)
    elif target == "signature":
        registry.serve(registry.resolve("iris", "1.0.0").files["model.sig"].digest, data)
    else:
        registry.put_document("iris", "channel.stable", data, artifact_type=CHANNEL_TYPE)
        return "iris@stable"
    return "iris@1.0.0"


def test_install_audits_the_refusal_of_every_fuzzed_answer(
    bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = MemoryRegistry()
    publish_bundle(bundles["1.0.0"], registry=registry, mode=Unverified("fuzz"))
    honest = registry.snapshot()
    sig = registry.resolve("iris", "1.0.0").files["model.sig"]
    honest_sig = registry.read_blob("iris", sig, max_size=sig.size)
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])))

    @settings(FUZZ, max_examples=100)
    @given(st.sampled_from(["index.json", "OCI manifest", "signature", "channel"]), answers)
    def run(target: str, data: bytes) -> None:
        registry.roll_back(honest)
        registry.serve(sig.digest, honest_sig)
        ref = _lie(registry, target, data)
        with tempfile.TemporaryDirectory() as home:
            store = Store(Path(home))
            with pytest.raises(PackagerError) as info:
                install(ref, registry=registry, store=store, now=NOW, options=options)
            assert info.value.exit_code in (3, 4)
            last = store.audit_log("iris")[-1]
            assert last.outcome == "refused" and str(info.value) in last.detail

    run()
