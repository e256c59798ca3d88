"""OpenSSF Model Signing (OMS) v1.0 signatures: the bytes of ``model.sig``.

``model.sig`` is a Sigstore bundle v0.3 (JSON) holding one DSSE envelope whose
payload is an in-toto Statement v1 listing every signed file and its sha256.
The signature is ECDSA over the DSSE pre-authentication encoding (PAE) of that
payload, made with a key rather than a certificate, so the bundle carries only
a hint naming the key (hex sha256 of its PEM SubjectPublicKeyInfo) and no
transparency-log entries.

This module is pure: keys and bytes in, bytes or a verified
:class:`SignedStatement` out. Reading files, keys and passwords happens in
:mod:`packager._io.keys` and the callers.

What :func:`verify` accepts, beyond what :func:`sign` writes (so that bundles
signed by other OMS v1.0 signers verify too):

- JSON in any key order and whitespace; unknown fields are ignored (OMS v1.0
  tells verifiers to ignore unknown predicate fields), known ones are
  type-checked; duplicate keys, NaN and non-canonical base64 are refused.
- resources in any order (the subject digest is recomputed in the listed
  order), any ``ignore_paths`` and either ``allow_symlinks`` value; the
  caller checks the files on disk against the signed list.
- a missing or unknown key hint: then every trusted key is tried.
- the ``shards`` serialization (resources ``path:start:end``, see
  :mod:`packager.core.shards`) as well as ``files``, with ``shard_size`` an integer or,
  as model-signing 1.1.1 writes it, an integral float such as ``1000000.0``; every
  file's shards must be contiguous from byte 0 and cut at multiples of the shard size.

Not accepted: the pre-1.0 predicate ``https://model_signing/Digests/v0.1``.
It lists files as subjects with no model name, no subject digest over the
resources and no serialization record, so it cannot be read into a
:class:`SignedStatement` with the same guarantees; it is refused with a
message asking to re-sign.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.bundlefiles import MAX_SIGNATURE_BYTES as MAX_SIGNATURE_BYTES
from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads
from packager.core.manifest import SIGNATURE
from packager.core.shards import (
    MIN_SHARD_SIZE,
    Shard,
    algorithm_name,
    shard_name,
    split_shard_name,
)
from packager.errors import TamperedError, UntrustedError, UsageError, VerificationError

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Documents signed by a threshold of keys (roots) carry several signatures; each costs a
# verification per trusted key, so their number is bounded.
MAX_DSSE_SIGNATURES = 16
_SIGNATURE_LIMITS = Limits(max_bytes=MAX_SIGNATURE_BYTES)
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
LEGACY_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"

_TRUST_ADVICE = "pass --key PATH to the publisher's cosign.pub"

# Each curve signs with its own hash, as the OMS key format fixes it; signer
# and verifier must pick the same one.
_HASH_BY_CURVE: Mapping[str, Callable[[], hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
SUPPORTED_CURVES = frozenset(_HASH_BY_CURVE)


@dataclass(frozen=True)
class SignedStatement:
    """What a verified ``model.sig`` vouches for.

    ``resources`` maps each signed path whose whole-file sha256 is signed to that
    digest, sorted by path and read-only; ``key_hint`` names the trusted key that
    verified the signature (hex sha256 of its PEM SubjectPublicKeyInfo), not the hint
    the file claims.

    Signed by shards (``shard_size`` set), ``shards`` gives every signed file's shards
    in file order; a file of one shard is also in ``resources`` (that shard's digest is
    the file's), an empty file has no shard and is in neither.
    """

    subject_name: str
    resources: Mapping[str, Digest]
    key_hint: str
    shard_size: int | None = None
    shards: Mapping[str, tuple[Shard, ...]] = field(default_factory=lambda: MappingProxyType({}))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that get signed."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex sha256 of the key's PEM SubjectPublicKeyInfo, as OMS bundles name keys."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def statement_payload(
    subject_name: str,
    resources: Mapping[str, Digest],
    *,
    shard_size: int | None = None,
    shards: Mapping[str, Sequence[Shard]] | None = None,
) -> bytes:
    """The in-toto Statement v1 that :func:`sign` signs, as canonical JSON bytes.

    Keys are sorted, separators compact, text UTF-8; resources are sorted by
    name and the subject digest is sha256 over their raw digests in that order.
    With ``shard_size``, every path of ``resources`` is signed by the shards
    ``shards`` gives it (cut at multiples of ``shard_size``, as
    :func:`packager.core.shards.bounds` does), named ``path:start:end``.

    Raises:
        UsageError: a path is not a safe relative POSIX path, ``resources`` is
            empty, ``subject_name`` is empty, or a file's shards are missing.
    """
    if not subject_name:
        raise UsageError("cannot sign: the subject (bundle) name is empty")
    if not resources:
        raise UsageError("cannot sign: no files to sign")
    for path in resources:
        problem = _path_problem(path)
        if problem is not None:
            raise UsageError(f"cannot sign {_short(path)}: {problem}")
    listed = (
        sorted(resources.items())
        if shard_size is None
        else _shard_resources(resources, shard_size, shards or {})
    )
    serialization: dict[str, object] = {
        "method": "files" if shard_size is None else "shards",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [SIGNATURE],
    }
    algorithm = "sha256"
    if shard_size is not None:
        serialization["shard_size"] = shard_size
        algorithm = algorithm_name(shard_size)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": subject_name, "digest": {"sha256": _subject_digest(d for _, d in listed)}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization,
            "resources": [
                {"name": name, "algorithm": algorithm, "digest": digest.hex}
                for name, digest in listed
            ],
        },
    }
    return _canonical_json(statement)


def _shard_resources(
    resources: Mapping[str, Digest], shard_size: int, shards: Mapping[str, Sequence[Shard]]
) -> list[tuple[str, Digest]]:
    """Every shard of every file as (``path:start:end``, digest), in the order
    model-signing lists them: by path component, then by offset."""
    listed = []
    for path in resources:
        if path not in shards:
            raise UsageError(f"cannot sign {_short(path)} by shards: its shards were not given")
        for shard in shards[path]:
            if shard.start % shard_size or not 0 < shard.end - shard.start <= shard_size:
                raise UsageError(
                    f"cannot sign {shard.describe(path)}: not a {shard_size}-byte shard"
                )
            listed.append((path.split("/"), shard.start, shard.end, shard.digest))
    return [(shard_name("/".join(p), start, end), d) for p, start, end, d in sorted(listed)]


def sign(
    *,
    subject_name: str,
    resources: Mapping[str, Digest],
    private_key: ec.EllipticCurvePrivateKey,
    certificate_chain: Sequence[bytes] = (),
    shard_size: int | None = None,
    shards: Mapping[str, Sequence[Shard]] | None = None,
) -> bytes:
    """Sign ``resources`` and return the bytes of ``model.sig``.

    Deterministic: ECDSA nonces follow RFC 6979, so the same inputs and key give
    the same bytes (bundles are byte-reproducible). ``certificate_chain`` (DER, leaf
    first): see :func:`sign_envelope`. ``shard_size`` and ``shards``: signed by
    shards instead of whole files (see :func:`statement_payload`).

    Raises:
        UsageError: the key's curve is not P-256, P-384 or P-521, this
            cryptography/OpenSSL build cannot sign deterministically, or the
            statement is invalid (see :func:`statement_payload`).
    """
    return sign_envelope(
        PAYLOAD_TYPE,
        statement_payload(subject_name, resources, shard_size=shard_size, shards=shards),
        private_key=private_key,
        certificate_chain=certificate_chain,
    )


def sign_envelope(
    payload_type: str,
    payload: bytes,
    *,
    private_key: ec.EllipticCurvePrivateKey,
    certificate_chain: Sequence[bytes] = (),
) -> bytes:
    """A Sigstore bundle (v0.3) holding a DSSE envelope over ``payload``.

    Deterministic (RFC 6979). model.sig and channel documents both use it. Without
    ``certificate_chain`` the bundle names the key by its hint (key method); with it
    (DER certificates, leaf first, the leaf certifying ``private_key``) the bundle
    carries the chain as ``x509CertificateChain``, as ``model_signing sign certificate``
    writes it.

    Raises:
        UsageError: unsupported curve, or no deterministic ECDSA in this build.
    """
    hash_algorithm = _hash_for(private_key.curve)
    try:
        signature = private_key.sign(
            pae(payload_type, payload), ec.ECDSA(hash_algorithm, deterministic_signing=True)
        )
    except UnsupportedAlgorithm as e:
        raise UsageError(
            "this cryptography/OpenSSL build cannot sign deterministically (RFC 6979 "
            "needs OpenSSL 3.2 or later); install the cryptography wheel from PyPI"
        ) from e
    material: dict[str, object] = (
        {
            "x509CertificateChain": {
                "certificates": [{"rawBytes": _b64(d)} for d in certificate_chain]
            }
        }
        if certificate_chain
        else {"publicKey": {"hint": key_hint(private_key.public_key())}}
    )
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {**material, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": payload_type,
            # keyid is optional in DSSE; an empty one is what OMS key signers write.
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        },
    }
    return _canonical_json(bundle)


def verify(sig: bytes, *, public_keys: Sequence[ec.EllipticCurvePublicKey]) -> SignedStatement:
    """Check ``model.sig`` against the trusted keys; return what it signs.

    Only the statement is checked here, not the files: the caller compares
    :attr:`SignedStatement.resources` with what it has.

    Raises:
        UsageError: ``public_keys`` is empty (there is nothing to trust) or
            holds a key on an unsupported curve.
        TamperedError: ``sig`` is too large, malformed, or its statement is
            malformed or inconsistent (bad paths, duplicates, digest mismatch).
        UntrustedError: no trusted key verifies the signature.
    """
    payload, hint = verify_envelope(sig, PAYLOAD_TYPE, public_keys=public_keys, what="model.sig")
    return _parse_statement(payload, key_hint=hint)


def verify_envelope(
    data: bytes,
    payload_type: str,
    *,
    public_keys: Sequence[ec.EllipticCurvePublicKey],
    what: str,
    advice: str = _TRUST_ADVICE,
) -> tuple[bytes, str]:
    """Verify a bundle made by :func:`sign_envelope`; return (payload, hint of the key).

    ``what`` names the document in messages (e.g. "model.sig"); ``advice`` says how to
    trust its signer.

    Raises:
        UsageError: no keys, or a key on an unsupported curve.
        TamperedError: malformed bundle or another payload type.
        UntrustedError: no trusted key verifies it.
    """
    if not public_keys:
        raise UsageError(f"no trusted public key to verify {what} with: {_TRUST_ADVICE}")
    trusted = [(key_hint(key), key, _hash_for(key.curve)) for key in public_keys]

    claimed_hint, payload, signature = _parse_bundle(data, payload_type)
    message = pae(payload_type, payload)
    # The hint is unauthenticated: it only chooses which key to try.
    named = [entry for entry in trusted if entry[0] == claimed_hint]
    for hint, key, hash_algorithm in named or trusted:
        try:
            key.verify(signature, message, ec.ECDSA(hash_algorithm))
        except InvalidSignature:
            continue
        return payload, hint

    if named:
        raise UntrustedError(
            f"{what} names trusted key {claimed_hint} but its signature does not verify "
            "with it: the signed document or the signature was altered"
        )
    signer = f"key {_short(claimed_hint)}" if claimed_hint else "an unnamed key"
    raise UntrustedError(
        f"{what} was signed by {signer}, which is not one of the trusted keys "
        f"({', '.join(hint for hint, _, _ in trusted)}); to trust the publisher, {advice}"
    )


def claimed_key_hint(sig: bytes) -> str | None:
    """The key hint ``model.sig`` claims, UNAUTHENTICATED: for messages, never for trust."""
    return claimed_key_hint_of(sig, PAYLOAD_TYPE)


def claimed_key_hint_of(data: bytes, payload_type: str) -> str | None:
    """The key hint a signed document claims, UNAUTHENTICATED: for display, never for trust."""
    try:
        return _parse_bundle(data, payload_type)[0]
    except VerificationError:
        return None


# --- signatures made with a certificate ---------------------------------------
# Which certificates are trusted is decided in packager.core.x509; these functions only
# read the chain a bundle carries and check the signature with the leaf's key.


def certificate_chain(data: bytes, payload_type: str = PAYLOAD_TYPE) -> tuple[bytes, ...] | None:
    """The DER certificates (leaf first) a bundle carries, UNAUTHENTICATED; None when it
    names a key instead (``x509CertificateChain``, or one ``certificate`` as Sigstore
    bundles v0.3 may hold).

    Raises:
        TamperedError: malformed bundle, or both a key and certificates.
    """
    _parse_bundle(data, payload_type)
    bundle = _object(_load_json(data, "the file"), "the bundle")
    material = _object(bundle["verificationMaterial"], "verificationMaterial")
    present = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in material]
    if len(present) > 1:
        raise _tampered(f"verificationMaterial holds both {present[0]} and {present[1]}")
    if "certificate" in material:
        where = "verificationMaterial.certificate"
        single = _object(material["certificate"], where)
        return (_b64decode(_get(single, "rawBytes", where), f"{where}.rawBytes"),)
    if "x509CertificateChain" not in material:
        return None
    where = "verificationMaterial.x509CertificateChain"
    chain = _object(material["x509CertificateChain"], where)
    entries = _list(_get(chain, "certificates", where), f"{where}.certificates")
    ders = []
    for index, entry in enumerate(entries):
        at = f"{where}.certificates[{index}]"
        ders.append(_b64decode(_get(_object(entry, at), "rawBytes", at), f"{at}.rawBytes"))
    return tuple(ders)


def parse_verified_statement(payload: bytes, *, key_hint: str) -> SignedStatement:
    """What the payload of a VERIFIED model.sig signs (:func:`verify_envelope` or
    :func:`verify_envelope_with_certificate` returned it), ``key_hint`` the signing key's.

    Raises:
        TamperedError: the statement is malformed or inconsistent.
    """
    return _parse_statement(payload, key_hint=key_hint)


def verify_envelope_with_certificate(
    data: bytes, payload_type: str, *, leaf_key: ec.EllipticCurvePublicKey, what: str
) -> bytes:
    """The payload of a bundle whose signature verifies with ``leaf_key``.

    Raises:
        UsageError: the leaf key is on an unsupported curve.
        TamperedError: malformed bundle or another payload type.
        UntrustedError: the signature does not verify with the leaf's key.
    """
    _, payload, signature = _parse_bundle(data, payload_type)
    try:
        leaf_key.verify(signature, pae(payload_type, payload), ec.ECDSA(_hash_for(leaf_key.curve)))
    except InvalidSignature:
        raise UntrustedError(
            f"{what}'s signature does not verify with the key of its signing certificate: "
            "the signed document or the signature was altered"
        ) from None
    return payload


def verify_threshold(
    data: bytes,
    payload_type: str,
    *,
    public_keys: Sequence[ec.EllipticCurvePublicKey],
    threshold: int,
    what: str,
) -> tuple[bytes, frozenset[str]]:
    """Verify an envelope that ``threshold`` of ``public_keys`` must have signed; return
    (payload, hints of the distinct trusted keys whose signature verifies).

    Each trusted key counts once, however many signatures it made; a signature no trusted
    key verifies is ignored (it may be another role's).

    Raises:
        UsageError: a key on an unsupported curve, or a threshold below 1.
        TamperedError: malformed bundle or another payload type.
        UntrustedError: fewer than ``threshold`` distinct trusted keys signed it.
    """
    if threshold < 1:
        raise UsageError(f"the signature threshold of {what} must be at least 1")
    trusted = [(key_hint(key), key, _hash_for(key.curve)) for key in public_keys]
    _, payload, signatures = _parse_envelope(data, payload_type)
    message = pae(payload_type, payload)
    signers: set[str] = set()
    for keyid, signature in signatures:
        # keyid is unauthenticated: it only chooses which key to try first.
        named = [entry for entry in trusted if entry[0] == keyid]
        for hint, key, hash_algorithm in named or trusted:
            if hint in signers:
                continue
            try:
                key.verify(signature, message, ec.ECDSA(hash_algorithm))
            except InvalidSignature:
                continue
            signers.add(hint)
            break
    if len(signers) < threshold:
        raise UntrustedError(
            f"{what} is signed by {len(signers)} of the trusted keys, fewer than the "
            f"threshold of {threshold}"
        )
    return payload, frozenset(signers)


def unverified_payload(data: bytes, payload_type: str) -> bytes:
    """The payload of an envelope, UNAUTHENTICATED: to learn which keys must have signed it.

    Raises:
        TamperedError: malformed bundle or another payload type.
    """
    return _parse_envelope(data, payload_type)[1]


def add_signature(
    data: bytes, payload_type: str, *, private_key: ec.EllipticCurvePrivateKey
) -> bytes:
    """The envelope ``data`` with one more signature, by ``private_key`` (keyid: its hint).

    Raises:
        UsageError: the key already signed it, unsupported curve, or no deterministic ECDSA.
        TamperedError: ``data`` is malformed, or already holds the most signatures allowed.
    """
    claimed_hint, payload, signatures = _parse_envelope(data, payload_type)
    if len(signatures) >= MAX_DSSE_SIGNATURES:
        raise _tampered(f"it already holds {MAX_DSSE_SIGNATURES} signatures")
    hint = key_hint(private_key.public_key())
    try:
        verify_threshold(
            data, payload_type, public_keys=[private_key.public_key()], threshold=1, what="it"
        )
    except UntrustedError:
        pass
    else:
        raise UsageError(f"key {hint[:16]} has already signed this document")
    extra = json.loads(sign_envelope(payload_type, payload, private_key=private_key))
    bundle = json.loads(data)
    bundle["dsseEnvelope"]["signatures"] = [
        {"sig": _b64(sig), "keyid": keyid} for keyid, sig in signatures
    ] + [{"sig": extra["dsseEnvelope"]["signatures"][0]["sig"], "keyid": hint}]
    if claimed_hint is None:
        bundle["verificationMaterial"]["publicKey"] = {"hint": hint}
    return _canonical_json(bundle)


def _hash_for(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    make_hash = _HASH_BY_CURVE.get(curve.name)
    if make_hash is None:
        raise UsageError(
            f"unsupported key curve {curve.name}: use an ECDSA P-256, P-384 or P-521 key"
        )
    return make_hash()


def _subject_digest(digests: Iterable[Digest]) -> str:
    h = hashlib.sha256()
    for digest in digests:
        h.update(digest.raw)
    return h.hexdigest()


def _path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative POSIX file path, or None if it is."""
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    if "\\" in path:
        return "backslash in path"
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return "control character in path"
    segments = path.split("/")
    if ".." in segments:
        return "'..' in path"
    if "" in segments or "." in segments:
        return "empty or '.' path segment"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    return None


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- strict reading ---------------------------------------------------------


def _tampered(what: str) -> TamperedError:
    return TamperedError(f"model.sig is malformed: {what}; do not use this bundle")


def _load_json(data: bytes, what: str) -> object:
    return loads(data, what=what, error=_tampered, limits=_SIGNATURE_LIMITS)


def _get(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise _tampered(f"{where} has no {key!r}")
    return obj[key]


T = TypeVar("T")
_KINDS: Mapping[type, str] = {dict: "a JSON object", list: "a JSON array", str: "a string"}


def _typed(value: object, kind: type[T], where: str) -> T:
    """``value`` when it is a ``kind`` (one of :data:`_KINDS`), else tampering."""
    if not isinstance(value, kind):
        raise _tampered(f"{where} is not {_KINDS[kind]}")
    return value


def _object(value: object, where: str) -> Mapping[str, object]:
    return _typed(value, dict, where)


def _list(value: object, where: str) -> list[object]:
    return _typed(value, list, where)


def _str(value: object, where: str) -> str:
    return _typed(value, str, where)


def _expect(value: object, expected: str, where: str) -> None:
    if value != expected:
        raise _tampered(f"{where} is {_short(value)}, expected {expected!r}")


def _short(value: object) -> str:
    """repr() cut to a length fit for an error message (inputs reach 1 MiB)."""
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _b64decode(value: object, where: str) -> bytes:
    text = _str(value, where)
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error included
        raise _tampered(f"{where} is not base64") from e
    # Only one spelling per byte string, so the signed bytes have one encoding.
    if _b64(data) != text:
        raise _tampered(f"{where} is not canonical base64")
    return data


def _parse_bundle(sig: bytes, payload_type: str) -> tuple[str | None, bytes, bytes]:
    """Return (claimed key hint, payload, signature) from a Sigstore bundle of one signature."""
    claimed_hint, payload, signatures = _parse_envelope(sig, payload_type)
    if len(signatures) != 1:
        raise _tampered(f"{len(signatures)} DSSE signatures, expected exactly 1")
    return claimed_hint, payload, signatures[0][1]


def _parse_envelope(
    sig: bytes, payload_type: str
) -> tuple[str | None, bytes, list[tuple[str, bytes]]]:
    """Return (claimed key hint, payload, [(keyid, signature)]) from a Sigstore bundle."""
    if len(sig) > MAX_SIGNATURE_BYTES:
        raise _tampered(f"it is {len(sig)} bytes, more than the {MAX_SIGNATURE_BYTES} allowed")
    bundle = _object(_load_json(sig, "the file"), "the bundle")
    _expect(_get(bundle, "mediaType", "the bundle"), BUNDLE_MEDIA_TYPE, "mediaType")

    material = _object(_get(bundle, "verificationMaterial", "the bundle"), "verificationMaterial")
    claimed_hint = None
    if "publicKey" in material:
        public_key = _object(material["publicKey"], "verificationMaterial.publicKey")
        if "hint" in public_key:
            claimed_hint = _str(public_key["hint"], "verificationMaterial.publicKey.hint")

    envelope = _object(_get(bundle, "dsseEnvelope", "the bundle"), "dsseEnvelope")
    _expect(_get(envelope, "payloadType", "dsseEnvelope"), payload_type, "dsseEnvelope.payloadType")
    payload = _b64decode(_get(envelope, "payload", "dsseEnvelope"), "dsseEnvelope.payload")
    entries = _list(_get(envelope, "signatures", "dsseEnvelope"), "dsseEnvelope.signatures")
    if not 1 <= len(entries) <= MAX_DSSE_SIGNATURES:
        raise _tampered(f"{len(entries)} DSSE signatures, expected 1 to {MAX_DSSE_SIGNATURES}")
    signatures = []
    for index, item in enumerate(entries):
        where = f"dsseEnvelope.signatures[{index}]"
        entry = _object(item, where)
        keyid = _str(entry["keyid"], f"{where}.keyid") if "keyid" in entry else ""
        signature = _b64decode(_get(entry, "sig", where), f"{where}.sig")
        if not signature:
            raise _tampered("the DSSE signature is empty")
        signatures.append((keyid, signature))
    return claimed_hint, payload, signatures


def _parse_statement(payload: bytes, *, key_hint: str) -> SignedStatement:
    statement = _object(_load_json(payload, "the signed statement"), "the statement")
    _expect(_get(statement, "_type", "the statement"), STATEMENT_TYPE, "_type")
    predicate_type = _get(statement, "predicateType", "the statement")
    if predicate_type == LEGACY_PREDICATE_TYPE:
        raise _tampered(
            f"predicateType {LEGACY_PREDICATE_TYPE} (pre-1.0 model signing) is not "
            f"supported; ask the publisher to re-sign with {PREDICATE_TYPE}"
        )
    _expect(predicate_type, PREDICATE_TYPE, "predicateType")

    subjects = _list(_get(statement, "subject", "the statement"), "subject")
    if len(subjects) != 1:
        raise _tampered(f"{len(subjects)} subjects, expected exactly 1")
    subject = _object(subjects[0], "subject[0]")
    subject_name = _str(_get(subject, "name", "subject[0]"), "subject[0].name")
    subject_digests = _object(_get(subject, "digest", "subject[0]"), "subject[0].digest")
    claimed = _str(_get(subject_digests, "sha256", "subject[0].digest"), "subject[0].digest.sha256")

    predicate = _object(_get(statement, "predicate", "the statement"), "predicate")
    shard_size = _check_serialization(_get(predicate, "serialization", "predicate"))
    entries = _list(_get(predicate, "resources", "predicate"), "predicate.resources")
    if not entries:
        raise _tampered("predicate.resources is empty")

    algorithms = {"sha256"} if shard_size is None else {"sha256", algorithm_name(shard_size)}
    listed: list[tuple[str, Digest]] = []
    for index, item in enumerate(entries):
        where = f"predicate.resources[{index}]"
        resource = _object(item, where)
        name = _str(_get(resource, "name", where), f"{where}.name")
        if _get(resource, "algorithm", where) not in algorithms:
            _expect(resource["algorithm"], " or ".join(sorted(algorithms)), f"{where}.algorithm")
        listed.append((name, Digest(_str(_get(resource, "digest", where), f"{where}.digest"))))

    named = dict(listed)
    if len(named) != len(listed):
        raise _tampered("predicate.resources lists a name twice")
    if _subject_digest(d for _, d in listed) != claimed:
        raise _tampered("subject digest does not match the listed resources")
    if shard_size is None:
        for name in named:
            _check_resource_path(name, name)
        return SignedStatement(
            subject_name=subject_name,
            resources=MappingProxyType(dict(sorted(named.items()))),
            key_hint=key_hint,
        )
    shards = _shards_by_file(named, shard_size)
    return SignedStatement(
        subject_name=subject_name,
        resources=MappingProxyType(
            {path: cut[0].digest for path, cut in shards.items() if len(cut) == 1}
        ),
        key_hint=key_hint,
        shard_size=shard_size,
        shards=MappingProxyType(shards),
    )


def _check_resource_path(path: str, name: str) -> None:
    problem = _path_problem(path)
    if problem is not None:
        raise _tampered(f"resource {_short(name)}: {problem}")


def _shards_by_file(named: Mapping[str, Digest], shard_size: int) -> dict[str, tuple[Shard, ...]]:
    """Every file's shards, in file order: contiguous from byte 0, cut at multiples of
    ``shard_size``, each one full but the last."""
    found: dict[str, list[Shard]] = {}
    for name, digest in named.items():
        parts = split_shard_name(name)
        if parts is None:
            raise _tampered(f"resource {_short(name)} is not named path:start:end")
        path, start, end = parts
        _check_resource_path(path, name)
        found.setdefault(path, []).append(Shard(start, end, digest))
    shards = {}
    for path in sorted(found):
        cut = sorted(found[path], key=lambda shard: shard.start)
        position = 0
        for index, shard in enumerate(cut):
            last = index == len(cut) - 1
            length = shard.end - shard.start
            if shard.start != position or not (
                0 < length <= shard_size if last else length == shard_size
            ):
                raise _tampered(
                    f"the shards of {_short(path)} are not contiguous {shard_size}-byte "
                    f"pieces from byte 0 (at {shard.start}-{shard.end})"
                )
            position = shard.end
        shards[path] = tuple(cut)
    return shards


def _check_serialization(value: object) -> int | None:
    """The shard size a ``shards`` serialization records; None for ``files``."""
    where = "predicate.serialization"
    record = _object(value, where)
    method = _get(record, "method", where)
    if method not in ("files", "shards"):
        _expect(method, "files' or 'shards", f"{where}.method")
    _expect(_get(record, "hash_type", where), "sha256", f"{where}.hash_type")
    if not isinstance(_get(record, "allow_symlinks", where), bool):
        raise _tampered(f"{where}.allow_symlinks is not a boolean")
    if "ignore_paths" in record:
        ignore_paths = _list(record["ignore_paths"], f"{where}.ignore_paths")
        for index, path in enumerate(ignore_paths):
            _str(path, f"{where}.ignore_paths[{index}]")
    if method == "files":
        return None
    size = _get(record, "shard_size", where)
    # model-signing 1.1.1 writes the size as a float (1000000.0): integral values only.
    if isinstance(size, float) and size.is_integer() and size < 2**53:
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int):
        raise _tampered(f"{where}.shard_size is not an integer")
    if size < MIN_SHARD_SIZE:
        raise _tampered(f"{where}.shard_size {size} is below {MIN_SHARD_SIZE} bytes")
    return size
