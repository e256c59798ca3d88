"""model.sig: golden bytes, round trips, a mutation sweep and an independent verifier."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.hashing import digest_file
from packager.core.digests import Digest
from packager.core.signature import (
    MAX_SIGNATURE_BYTES,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    SignedStatement,
    pae,
    sign,
    statement_payload,
    verify,
)
from packager.errors import TamperedError, UntrustedError, UsageError, VerificationError

RESOURCES = {"model.onnx": Digest.of(b"onnx graph"), "manifest.json": Digest.of(b"{}")}
# A fixed key, so signatures are reproducible across runs and machines.
FIXED_KEY = ec.derive_private_key(0x5EED0F7E5751611A7E, ec.SECP256R1())

GOLDEN_PAYLOAD = (
    b'{"_type":"https://in-toto.io/Statement/v1","predicate":{"resources":['
    b'{"algorithm":"sha256","digest":'
    b'"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","name":"manifest.json"},'
    b'{"algorithm":"sha256","digest":'
    b'"8ba3f44e4bc911b02490b288ea7e3a11ac41b7a9871015ece4b151dd5103077f","name":"model.onnx"}],'
    b'"serialization":{"allow_symlinks":false,"hash_type":"sha256",'
    b'"ignore_paths":["model.sig"],"method":"files"}},'
    b'"predicateType":"https://model_signing/signature/v1.0",'
    b'"subject":[{"digest":{"sha256":'
    b'"638e551d98c2600d608e932f40aaf2e8922a7d8ba7a547051c780e120eccf98d"},"name":"iris-1.0.0"}]}'
)
GOLDEN_HINT = "0b36a74377a653ead8722b4f71a00c627aa208a54d066313489773ca0b85cf7d"
# RFC 6979: the same key and message always give this signature.
GOLDEN_SIG = (
    "MEUCIG00vufXJVuvfV5HERkJEHXnPrTlS5YeDMRoyiVrCYjLAiEA2/"
    "xtBDrU3PZTZ1MpomAnBBOJYxj8y9xIsUyshJlMw+M="
)


# --- helpers: an independent bundle writer, so statements can be mutated and re-signed --


def spki_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def envelope(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> dict[str, Any]:
    """A bundle dict over ``payload`` built without the code under test."""
    message = b"DSSEv1 %d %s %d %s" % (
        len(PAYLOAD_TYPE),
        PAYLOAD_TYPE.encode(),
        len(payload),
        payload,
    )
    sig = key.sign(message, ec.ECDSA(hash_algorithm or hashes.SHA256()))
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": spki_hint(key.public_key())}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode()}],
        },
    }


def dump(value: object) -> bytes:
    return json.dumps(value).encode()


def statement(resources: list[tuple[str, str]], *, name: str = "iris-1.0.0") -> dict[str, Any]:
    """An OMS v1.0 statement over (path, hex digest) pairs in the given order."""
    subject = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in resources)).hexdigest()
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": subject}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": ["model.sig"],
            },
            "resources": [{"name": p, "algorithm": "sha256", "digest": d} for p, d in resources],
        },
    }


def resigned(document: object, key: ec.EllipticCurvePrivateKey = FIXED_KEY) -> bytes:
    return dump(envelope(json.dumps(document).encode(), key))


BASE = [("manifest.json", Digest.of(b"{}").hex), ("model.onnx", Digest.of(b"onnx graph").hex)]
BASE_DIGESTS = [(p, Digest(d)) for p, d in BASE]


# --- golden bytes ----------------------------------------------------------------


def test_pae_golden() -> None:
    # The DSSE v1 specification's own example, then ours.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae(PAYLOAD_TYPE, b'{"a":1}') == b'DSSEv1 28 application/vnd.in-toto+json 7 {"a":1}'
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    # Lengths count bytes, not characters.
    assert pae("é", "ü".encode()) == "DSSEv1 2 é 2 ü".encode()


def test_statement_payload_golden() -> None:
    assert statement_payload("iris-1.0.0", RESOURCES) == GOLDEN_PAYLOAD
    subject = hashlib.sha256(
        hashlib.sha256(b"{}").digest() + hashlib.sha256(b"onnx graph").digest()
    ).hexdigest()
    assert subject.encode() in GOLDEN_PAYLOAD


def test_sign_is_deterministic_and_golden() -> None:
    first = sign(subject_name="iris-1.0.0", resources=RESOURCES, private_key=FIXED_KEY)
    second = sign(subject_name="iris-1.0.0", resources=dict(RESOURCES), private_key=FIXED_KEY)
    assert first == second
    bundle = json.loads(first)
    assert bundle == {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": GOLDEN_HINT}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(GOLDEN_PAYLOAD).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": "", "sig": GOLDEN_SIG}],
        },
    }
    # Canonical layout: sorted keys, no whitespace.
    assert first == json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()
    assert spki_hint(FIXED_KEY.public_key()) == GOLDEN_HINT


# --- round trips -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "hash_algorithm"),
    [
        (ec.SECP256R1(), hashes.SHA256()),
        (ec.SECP384R1(), hashes.SHA384()),
        (ec.SECP521R1(), hashes.SHA512()),
    ],
)
def test_round_trip(curve: ec.EllipticCurve, hash_algorithm: hashes.HashAlgorithm) -> None:
    key = ec.generate_private_key(curve)
    sig = sign(subject_name="iris-1.0.0", resources=RESOURCES, private_key=key)
    result = verify(sig, public_keys=[key.public_key()])
    assert result == SignedStatement(
        subject_name="iris-1.0.0",
        resources=dict(sorted(RESOURCES.items())),
        key_hint=spki_hint(key.public_key()),
    )
    assert list(result.resources) == ["manifest.json", "model.onnx"]
    # The curve's own hash signs, as other OMS verifiers expect.
    envelope_ = json.loads(sig)["dsseEnvelope"]
    key.public_key().verify(
        base64.b64decode(envelope_["signatures"][0]["sig"]),
        pae(PAYLOAD_TYPE, base64.b64decode(envelope_["payload"])),
        ec.ECDSA(hash_algorithm),
    )


def test_verified_resources_are_read_only() -> None:
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    resources = verify(sig, public_keys=[FIXED_KEY.public_key()]).resources
    with pytest.raises(TypeError):
        resources["extra"] = Digest.of(b"x")  # type: ignore[index]


def test_verify_picks_the_hinted_key_or_tries_each() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    keys = [other.public_key(), FIXED_KEY.public_key()]
    assert verify(sig, public_keys=keys).key_hint == GOLDEN_HINT

    bundle = json.loads(sig)
    del bundle["verificationMaterial"]["publicKey"]
    assert verify(dump(bundle), public_keys=keys).key_hint == GOLDEN_HINT
    bundle["verificationMaterial"]["publicKey"] = {"hint": "0" * 64}
    assert verify(dump(bundle), public_keys=keys).key_hint == GOLDEN_HINT


def test_resources_in_any_order_verify_and_come_back_sorted() -> None:
    sig = resigned(statement(list(reversed(BASE))))
    result = verify(sig, public_keys=[FIXED_KEY.public_key()])
    assert list(result.resources) == ["manifest.json", "model.onnx"]


def test_unknown_fields_are_ignored() -> None:
    document = statement(BASE)
    document["predicate"]["modelCard"] = {"any": "thing"}
    document["subject"][0]["annotations"] = {"k": "v"}
    result = verify(resigned(document), public_keys=[FIXED_KEY.public_key()])
    assert result.resources == dict(BASE_DIGESTS)


# --- trust -----------------------------------------------------------------------


def test_wrong_key_is_untrusted_and_says_how_to_trust() -> None:
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(UntrustedError) as caught:
        verify(sig, public_keys=[stranger])
    message = str(caught.value)
    assert GOLDEN_HINT in message
    assert "pass --key PATH to the publisher's cosign.pub" in message
    assert caught.value.exit_code == 3


def test_forged_hint_does_not_help() -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    bundle = envelope(statement_payload("m", RESOURCES), stranger)
    bundle["verificationMaterial"]["publicKey"]["hint"] = GOLDEN_HINT
    with pytest.raises(UntrustedError, match="does not verify"):
        verify(dump(bundle), public_keys=[FIXED_KEY.public_key()])


def test_no_keys_fails_closed() -> None:
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    with pytest.raises(UsageError, match="no trusted public key"):
        verify(sig, public_keys=[])


def test_unsupported_curve_is_a_usage_error() -> None:
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(UsageError, match="secp256k1"):
        sign(subject_name="m", resources=RESOURCES, private_key=k1)
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    with pytest.raises(UsageError, match="secp256k1"):
        verify(sig, public_keys=[k1.public_key()])


@pytest.mark.parametrize("path", ["../model.onnx", "/etc/passwd", "a\\b", "a//b", "./a", "", "a/"])
def test_sign_refuses_unsafe_paths(path: str) -> None:
    with pytest.raises(UsageError):
        sign(subject_name="m", resources={path: Digest.of(b"x")}, private_key=FIXED_KEY)


def test_sign_refuses_empty_inputs() -> None:
    with pytest.raises(UsageError):
        sign(subject_name="m", resources={}, private_key=FIXED_KEY)
    with pytest.raises(UsageError):
        sign(subject_name="", resources=RESOURCES, private_key=FIXED_KEY)


# --- mutation sweep --------------------------------------------------------------


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def expect_refusal(sig: bytes, kind: type[VerificationError] = VerificationError) -> None:
    """verify must raise ``kind`` and never any other exception type."""
    try:
        verify(sig, public_keys=[FIXED_KEY.public_key()])
    except kind:
        return
    except Exception as e:  # the point of the sweep: name the foreign exception
        pytest.fail(f"{type(e).__name__} escaped verify: {e}")
    pytest.fail("a mutated model.sig verified")


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_every_byte_of_the_signed_fields_matters(field: str) -> None:
    original = json.loads(sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY))
    env = original["dsseEnvelope"]
    holder = env if field == "payload" else env["signatures"][0]
    raw = base64.b64decode(holder[field])
    for index in range(len(raw)):
        holder[field] = base64.b64encode(flipped(raw, index)).decode()
        expect_refusal(dump(original), UntrustedError)


def test_every_byte_of_the_file_either_is_refused_or_changes_nothing() -> None:
    sig = sign(subject_name="m", resources=RESOURCES, private_key=FIXED_KEY)
    expected = verify(sig, public_keys=[FIXED_KEY.public_key()])
    for index in range(len(sig)):
        mutated = flipped(sig, index)
        try:
            result = verify(mutated, public_keys=[FIXED_KEY.public_key()])
        except VerificationError:
            continue
        except Exception as e:
            pytest.fail(f"{type(e).__name__} escaped verify at byte {index}: {e}")
        # Only unsigned bytes may change: the key hint and the empty keyid.
        assert result == expected, index


Mutation = Callable[[dict[str, Any]], object]


def set_at(path: tuple[Any, ...], value: object) -> Mutation:
    def apply(document: dict[str, Any]) -> object:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return document

    return apply


def delete_at(path: tuple[Any, ...]) -> Mutation:
    def apply(document: dict[str, Any]) -> object:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        return document

    return apply


def with_resources(items: list[tuple[str, str]]) -> Mutation:
    # The subject digest is recomputed, so only the resource check can refuse.
    return lambda _document: statement(items)


def _mutations() -> dict[str, Mutation]:
    digest = BASE[0][1]
    serialization_ = ("predicate", "serialization")
    first = ("predicate", "resources", 0)
    mutations: dict[str, Mutation] = {
        "not an object": lambda _d: [1],
        "_type": set_at(("_type",), "https://in-toto.io/Statement/v0.1"),
        "_type missing": delete_at(("_type",)),
        "predicateType": set_at(("predicateType",), "https://slsa.dev/provenance/v1"),
        "legacy predicateType": set_at(("predicateType",), "https://model_signing/Digests/v0.1"),
        "predicateType missing": delete_at(("predicateType",)),
        "subject missing": delete_at(("subject",)),
        "subject not a list": set_at(("subject",), {"name": "m"}),
        "no subject": set_at(("subject",), []),
        "two subjects": lambda d: set_at(("subject",), d["subject"] * 2)(d),
        "subject not an object": set_at(("subject", 0), "m"),
        "subject name not a string": set_at(("subject", 0, "name"), 7),
        "subject name missing": delete_at(("subject", 0, "name")),
        "subject digest missing": delete_at(("subject", 0, "digest")),
        "subject digest other algorithm": set_at(("subject", 0, "digest"), {"sha512": "00"}),
        "subject digest wrong": set_at(("subject", 0, "digest", "sha256"), "0" * 64),
        "subject digest uppercase": lambda d: set_at(
            ("subject", 0, "digest", "sha256"), d["subject"][0]["digest"]["sha256"].upper()
        )(d),
        "subject digest not a string": set_at(("subject", 0, "digest", "sha256"), 1),
        "predicate missing": delete_at(("predicate",)),
        "predicate not an object": set_at(("predicate",), []),
        "serialization missing": delete_at(serialization_),
        "method shards": set_at((*serialization_, "method"), "shards"),
        "method missing": delete_at((*serialization_, "method")),
        "hash_type blake3": set_at((*serialization_, "hash_type"), "blake3"),
        "allow_symlinks string": set_at((*serialization_, "allow_symlinks"), "false"),
        "allow_symlinks missing": delete_at((*serialization_, "allow_symlinks")),
        "ignore_paths not a list": set_at((*serialization_, "ignore_paths"), "x"),
        "ignore_paths not strings": set_at((*serialization_, "ignore_paths"), [1]),
        "resources missing": delete_at(("predicate", "resources")),
        "resources not a list": set_at(("predicate", "resources"), {}),
        "resources empty": with_resources([]),
        "resource not an object": set_at(first, "manifest.json"),
        "resource name missing": delete_at((*first, "name")),
        "resource name not a string": set_at((*first, "name"), None),
        "resource algorithm": set_at((*first, "algorithm"), "sha512"),
        "resource algorithm missing": delete_at((*first, "algorithm")),
        "resource digest missing": delete_at((*first, "digest")),
        "resource digest short": set_at((*first, "digest"), digest[:-2]),
        "resource digest changed": set_at((*first, "digest"), "1" * 64),
        "resource digest uppercase": with_resources([("manifest.json", digest.upper())]),
        "duplicate path": with_resources([("a", digest), ("a", digest)]),
    }
    unsafe = ["../x", "a/../../x", "/etc/passwd", "a\\b", "a//b", "./a", "a/.", "", "a/"]
    # Control characters, and a lone surrogate (JSON can spell it, UTF-8 cannot).
    unsafe += ["a\x00b", "a\nb", "\udcff"]
    for bad in unsafe:
        mutations[f"path {bad!r}"] = with_resources([(bad, digest)])
    return mutations


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_statement_field_is_checked(name: str) -> None:
    document = MUTATIONS[name](statement(BASE))
    expect_refusal(resigned(document), TamperedError)


def test_the_unmutated_statement_verifies() -> None:
    # Guards the sweep above: its base statement and re-signing are valid.
    result = verify(resigned(statement(BASE)), public_keys=[FIXED_KEY.public_key()])
    assert result.resources == dict(BASE_DIGESTS)


def _bundle_mutations() -> dict[str, bytes]:
    # The golden bundle: its signature has a "+", a "/" and one "=" of padding.
    good = sign(subject_name="iris-1.0.0", resources=RESOURCES, private_key=FIXED_KEY)
    bundle = json.loads(good)
    payload = bundle["dsseEnvelope"]["payload"]
    sig_b64 = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    assert sig_b64 == GOLDEN_SIG
    envelope_ = ("dsseEnvelope",)
    first = ("dsseEnvelope", "signatures", 0)
    hint = ("verificationMaterial", "publicKey", "hint")

    def changed(mutation: Mutation) -> bytes:
        return dump(mutation(json.loads(good)))

    return {
        "empty": b"",
        "not json": b"model.sig",
        "not utf-8": b"\xff" + good,
        "utf-16": good.decode().encode("utf-16"),
        "bom": b"\xef\xbb\xbf" + good,
        "array": b"[]",
        "too large": good + b" " * (MAX_SIGNATURE_BYTES + 1 - len(good)),
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "NaN": good[:-1] + b',"x":NaN}',
        "huge integer": good[:-1] + b',"x":' + b"9" * 5000 + b"}",
        "duplicate key": good[:-1]
        + b',"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}',
        "mediaType": changed(set_at(("mediaType",), "application/vnd.dev.sigstore.bundle+json")),
        "mediaType missing": changed(delete_at(("mediaType",))),
        "verificationMaterial missing": changed(delete_at(("verificationMaterial",))),
        "verificationMaterial not an object": changed(set_at(("verificationMaterial",), [])),
        "publicKey not an object": changed(set_at(hint[:2], "k")),
        "hint not a string": changed(set_at(hint, 1)),
        "envelope missing": changed(delete_at(envelope_)),
        "envelope not an object": changed(set_at(envelope_, "e")),
        "payloadType": changed(set_at((*envelope_, "payloadType"), "application/json")),
        "payloadType missing": changed(delete_at((*envelope_, "payloadType"))),
        "payload missing": changed(delete_at((*envelope_, "payload"))),
        "payload not base64": changed(set_at((*envelope_, "payload"), "!!!!")),
        "sig urlsafe": changed(
            set_at((*first, "sig"), sig_b64.replace("/", "_").replace("+", "-"))
        ),
        "payload unpadded": changed(set_at((*envelope_, "payload"), payload.rstrip("="))),
        "payload number": changed(set_at((*envelope_, "payload"), 5)),
        "signatures missing": changed(delete_at((*envelope_, "signatures"))),
        "no signatures": changed(set_at((*envelope_, "signatures"), [])),
        "two signatures": changed(
            set_at((*envelope_, "signatures"), [{"sig": sig_b64}, {"sig": sig_b64}])
        ),
        "signature not an object": changed(set_at((*envelope_, "signatures"), [sig_b64])),
        "sig missing": changed(delete_at((*first, "sig"))),
        "sig empty": changed(set_at((*first, "sig"), "")),
        # Same bytes, another spelling: spare bits set in the last character.
        "sig non-canonical": changed(set_at((*first, "sig"), sig_b64[:-2] + "N=")),
        "keyid not a string": changed(set_at((*first, "keyid"), 0)),
    }


BUNDLE_MUTATIONS = _bundle_mutations()


@pytest.mark.parametrize("name", sorted(BUNDLE_MUTATIONS))
def test_malformed_bundles_are_tampered(name: str) -> None:
    expect_refusal(BUNDLE_MUTATIONS[name], TamperedError)


def test_non_canonical_base64_decodes_to_the_same_bytes() -> None:
    # Guards "sig non-canonical": it must be a respelling, not a different signature.
    mutated = json.loads(BUNDLE_MUTATIONS["sig non-canonical"])["dsseEnvelope"]["signatures"][0]
    assert mutated["sig"] != GOLDEN_SIG
    assert base64.b64decode(mutated["sig"]) == base64.b64decode(GOLDEN_SIG)


# --- independent oracle: model_signing ------------------------------------------


def model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "model_signing"
    assert exe.exists(), "model-signing (a dev dependency) is not installed next to python"
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def write_model(directory: Path, files: dict[str, bytes]) -> dict[str, Digest]:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return {name: digest_file(directory / name)[0] for name in files}


@pytest.mark.slow
@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_model_signing_verifies_our_signature(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    public = tmp_path / "cosign.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    bundle = tmp_path / "iris-1.0.0"
    bundle.mkdir()
    resources = write_model(
        bundle,
        {
            "model.onnx": b"\x08\x07onnx graph" * 1000,
            "manifest.json": b'{"schemaVersion":1}',
            "testvectors.npz": b"PK\x03\x04 vectors",
        },
    )
    sig = bundle / "model.sig"
    sig.write_bytes(sign(subject_name=bundle.name, resources=resources, private_key=key))
    args = ("verify", "key", bundle, "--signature", sig, "--public_key", public)

    ok = model_signing(*args)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (bundle / "model.onnx").write_bytes(b"\x08\x07tampered graph")
    tampered = model_signing(*args)
    assert tampered.returncode != 0
    assert "model.onnx" in tampered.stdout + tampered.stderr


@pytest.mark.slow
@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_we_verify_model_signing_signatures(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    private = tmp_path / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    model = tmp_path / "iris-1.0.0"
    model.mkdir()
    # "a.txt" < "a/b.bin" as strings, but model_signing orders by path
    # components ("a" < "a.txt"): verify must accept either order.
    resources = write_model(
        model,
        {"model.onnx": b"graph", "manifest.json": b"{}", "a.txt": b"t", "a/b.bin": b"b"},
    )
    sig = model / "model.sig"
    signed = model_signing("sign", "key", model, "--private_key", private, "--signature", sig)
    assert signed.returncode == 0, signed.stdout + signed.stderr

    result = verify(sig.read_bytes(), public_keys=[key.public_key()])
    assert result.subject_name == "iris-1.0.0"
    assert dict(result.resources) == resources
    assert result.key_hint == spki_hint(key.public_key())

    stranger = ec.generate_private_key(curve).public_key()
    with pytest.raises(UntrustedError):
        verify(sig.read_bytes(), public_keys=[stranger])
