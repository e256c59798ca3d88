"""The trust core alone: bytes and parsed objects in, a decision out; no files, no registry.

Every rule of :mod:`packager.core.verify` is exercised here with its refusals: signature
(untrusted, revoked, malformed), manifest (digest, binding, file set), mix-and-match, what
a registry describes, what a directory holds, the minimum version and the rollback floor,
and channel acceptance (signer, binding, expiry, replay, equivocation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import encode_public_key, generate_private_key
from packager.core.channel import Channel, Seen, sign_channel
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, SIGNATURE, Manifest, dump_json, parse_manifest
from packager.core.policy import (
    Rule,
    Trusted,
    TrustedKey,
    TrustPolicy,
    Unverified,
    adhoc_policy,
)
from packager.core.signature import key_hint, sign
from packager.core.verify import (
    Statement,
    accept_channel,
    check_binding,
    check_channel_document,
    check_channel_mode,
    check_files,
    check_manifest,
    check_manifest_digest,
    check_resources,
    check_served,
    check_trusted,
    check_version_allowed,
    served_file,
    unverified_statement,
    verify_signature,
)
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
    WrongModelError,
)

EXAMPLE = Path(__file__).parents[2] / "manifests" / "manifest.example.json"
KEY = generate_private_key()
OTHER = generate_private_key()
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CONTENT = {"model.onnx": b"the graph", "testvectors.npz": b"the test vectors"}
INSECURE = Unverified("--insecure-skip-verify")


def manifest_bytes(name: str = "iris", version: str = "1.0.0", **content: bytes) -> bytes:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    doc["name"], doc["version"] = name, version
    files = {**CONTENT, **content}
    for entry in doc["files"]:
        data = files[entry["path"]]
        entry["sha256"], entry["size"] = Digest.of(data).hex, len(data)
    return dump_json(doc)


@dataclass(frozen=True)
class Bundle:
    """A signed bundle as bytes: what a registry or a directory would hand over."""

    files: dict[str, bytes]
    manifest: bytes
    sig: bytes

    @property
    def resources(self) -> dict[str, Digest]:
        found = {path: Digest.of(data) for path, data in self.files.items()}
        return {**found, MANIFEST: Digest.of(self.manifest)}

    def described(self) -> dict[str, tuple[Digest, int]]:
        every = {**self.files, MANIFEST: self.manifest, SIGNATURE: self.sig}
        return {path: (Digest.of(data), len(data)) for path, data in every.items()}


def signed_bundle(
    key: ec.EllipticCurvePrivateKey = KEY,
    *,
    data: bytes | None = None,
    resources: dict[str, Digest] | None = None,
) -> Bundle:
    manifest = manifest_bytes() if data is None else data
    files = dict(CONTENT)
    signed = resources or {
        **{path: Digest.of(body) for path, body in files.items()},
        MANIFEST: Digest.of(manifest),
    }
    sig = sign(subject_name="iris-1.0.0", resources=signed, private_key=key)
    return Bundle(files, manifest, sig)


def trusted(*keys: ec.EllipticCurvePrivateKey) -> Trusted:
    return Trusted(adhoc_policy([k.public_key() for k in keys or (KEY,)]))


def policy_with(*, revoked: bool = False, models: str = "*", minimum: str | None = None) -> Trusted:
    """KEY as "platform" (``revoked`` or not) and OTHER as "partner", both for ``models``."""
    keys = {
        name: TrustedKey(name, encode_public_key(k.public_key()), k.public_key(), gone)
        for name, k, gone in (("platform", KEY, revoked), ("partner", OTHER, False))
    }
    floor = {"iris": minimum} if minimum else {}
    return Trusted(TrustPolicy(keys, (Rule(models, tuple(keys)),), floor, "t.toml"))


def statement(bundle: Bundle | None = None) -> Statement:
    bundle = bundle or signed_bundle()
    return verify_signature(bundle.sig, trusted(), name="iris")


# 1. The signature.


def test_a_trusted_signature_gives_what_it_signs() -> None:
    bundle = signed_bundle()
    result = verify_signature(bundle.sig, trusted(), name="iris")
    assert result.signed and result.signer == key_hint(KEY.public_key())
    assert dict(result.resources) == bundle.resources
    assert result.describe() == f"key {result.signer}"


def test_signatures_the_policy_does_not_trust_are_refused() -> None:
    bundle = signed_bundle()
    with pytest.raises(UntrustedError, match="not one of the trusted keys"):
        verify_signature(signed_bundle(OTHER).sig, trusted(), name="iris")
    with pytest.raises(UntrustedError, match="revoked key 'platform'"):
        verify_signature(bundle.sig, policy_with(revoked=True), name="iris")
    with pytest.raises(UntrustedError, match="no rule covers"):
        verify_signature(bundle.sig, policy_with(models="spam-*"), name="iris")
    with pytest.raises(UntrustedError, match="no rule covers"):
        check_trusted(policy_with(models="spam-*"), "iris")
    check_trusted(INSECURE, "iris")  # nothing to check: the mode says so


def test_every_byte_of_the_signature_matters() -> None:
    sig = signed_bundle().sig
    for i in range(len(sig)):
        flipped = bytearray(sig)
        flipped[i] ^= 0x01
        try:
            result = verify_signature(bytes(flipped), trusted(), name="iris")
        except VerificationError:
            continue
        # Base64 padding or insignificant whitespace may change without changing anything.
        assert result == statement(), f"byte {i} changed what the signature vouches for"


def test_an_unverified_mode_trusts_the_manifest_as_served_and_says_why() -> None:
    data = manifest_bytes()
    result = unverified_statement(data, INSECURE)
    assert not result.signed and result.signer is None
    assert dict(result.resources) == signed_bundle().resources
    assert result.describe() == "signature not verified (--insecure-skip-verify)"
    with pytest.raises(TamperedError):
        unverified_statement(b"{}", INSECURE)
    with pytest.raises(UsageError, match="channel"):
        check_channel_mode(INSECURE)
    mode = trusted()
    assert check_channel_mode(mode) is mode


# 2. The manifest.


def test_mix_and_match_and_a_manifest_other_than_the_signed_one() -> None:
    bundle = signed_bundle()
    signed = Digest.of(bundle.manifest)
    vouched = statement(bundle)
    assert check_manifest_digest(vouched, signed, ref="iris@1.0.0", expected=signed) == signed
    assert check_manifest_digest(vouched, signed, ref="iris@1.0.0") == signed
    other = Digest.of(b"another manifest")
    with pytest.raises(TamperedError, match=r"mix-and-match: the channel names iris@1\.0\.0"):
        check_manifest_digest(vouched, signed, ref="iris@1.0.0", expected=other)
    with pytest.raises(TamperedError, match="not the signed one"):
        check_manifest_digest(vouched, other, ref="iris@1.0.0")
    unsigned_manifest = Statement({"model.onnx": signed}, trusted(), "hint")
    with pytest.raises(TamperedError, match="manifest.json is not covered"):
        check_manifest_digest(unsigned_manifest, signed, ref="iris@1.0.0")


def test_the_manifest_must_be_the_signed_one() -> None:
    bundle = signed_bundle()
    manifest = check_manifest(statement(bundle), bundle.manifest, name="iris", version="1.0.0")
    assert manifest.ref == "iris@1.0.0"
    with pytest.raises(TamperedError, match="does not match its signed digest"):
        check_manifest(statement(bundle), bundle.manifest + b" ")


def test_every_byte_of_the_manifest_matters() -> None:
    bundle = signed_bundle()
    vouched = statement(bundle)
    for i in range(len(bundle.manifest)):
        flipped = bytearray(bundle.manifest)
        flipped[i] ^= 0x20
        with pytest.raises(TamperedError):
            check_manifest(vouched, bytes(flipped), name="iris", version="1.0.0")


def test_a_validly_signed_bundle_of_another_model_or_version_is_refused() -> None:
    bundle = signed_bundle()
    with pytest.raises(WrongModelError, match="asked for spam but the signed bundle is iris@"):
        check_manifest(statement(bundle), bundle.manifest, name="spam")
    with pytest.raises(WrongModelError, match=r"asked for iris@2\.0\.0 .* wrong version"):
        check_manifest(statement(bundle), bundle.manifest, name="iris", version="2.0.0")
    unverified = unverified_statement(bundle.manifest, INSECURE)
    with pytest.raises(WrongModelError, match="unverified bundle is iris@1.0.0; /srv/r serves"):
        check_manifest(unverified, bundle.manifest, name="iris", version="2.0.0", source="/srv/r")


def test_the_one_binding_rule() -> None:
    manifest = parse_manifest(manifest_bytes())
    check_binding(manifest, name=None, version=None)
    check_binding(manifest, name="iris", version="1.0.0")
    for name, version, wrong in (("spam", None, "model"), ("iris", "1.0.1", "version")):
        with pytest.raises(WrongModelError, match=f"the registry serves the wrong {wrong}"):
            check_binding(manifest, name=name, version=version)
    # The version alone, for the model the manifest names.
    with pytest.raises(WrongModelError, match=r"asked for iris@2\.0\.0"):
        check_binding(manifest, name=None, version="2.0.0")


def test_signed_files_must_be_exactly_the_manifest_files() -> None:
    manifest = parse_manifest(manifest_bytes())
    good = signed_bundle().resources
    check_resources(Statement(good, trusted(), "hint"), manifest)
    extra = {**good, "extra.bin": Digest.of(b"x")}
    with pytest.raises(TamperedError, match="covers extra.bin, which manifest.json does not"):
        check_resources(Statement(extra, trusted(), "hint"), manifest)
    missing = {p: d for p, d in good.items() if p != "testvectors.npz"}
    with pytest.raises(TamperedError, match="testvectors.npz is listed in manifest.json but not"):
        check_resources(Statement(missing, trusted(), "hint"), manifest)
    changed = {**good, "model.onnx": Digest.of(b"another graph")}
    with pytest.raises(TamperedError, match="model.onnx: manifest.json and the signature"):
        check_resources(Statement(changed, trusted(), "hint"), manifest)


# 3. What a registry describes, and what a directory holds.


def checked(bundle: Bundle) -> tuple[Statement, Manifest]:
    vouched = statement(bundle)
    return vouched, check_manifest(vouched, bundle.manifest, name="iris", version="1.0.0")


def test_descriptors_must_be_the_signed_digests_and_sizes() -> None:
    bundle = signed_bundle()
    vouched, manifest = checked(bundle)
    served = bundle.described()
    check_served(vouched, manifest, served)
    check_served(vouched, manifest, {p: d for p, d in served.items() if p != SIGNATURE})
    with pytest.raises(TamperedError, match=r"different file set than was signed \(extra\.bin\)"):
        check_served(vouched, manifest, {**served, "extra.bin": (Digest.of(b"x"), 1)})
    with pytest.raises(TamperedError, match=r"different file set .* \(testvectors\.npz\)"):
        check_served(vouched, manifest, {p: d for p, d in served.items() if p != "testvectors.npz"})
    digest, size = served["model.onnx"]
    with pytest.raises(TamperedError, match="serves model.onnx as .* but the signed manifest"):
        check_served(vouched, manifest, {**served, "model.onnx": (digest, size + 1)})
    with pytest.raises(TamperedError, match="serves model.onnx as"):
        check_served(vouched, manifest, {**served, "model.onnx": (Digest.of(b"y"), size)})
    unverified = unverified_statement(bundle.manifest, INSECURE)
    with pytest.raises(TamperedError, match="than manifest.json lists"):
        check_served(unverified, manifest, {**served, "extra.bin": (Digest.of(b"x"), 1)})
    assert served_file(served, MANIFEST) == served[MANIFEST]
    with pytest.raises(TamperedError, match="has no model.sig; it is not a signed bundle"):
        served_file({MANIFEST: served[MANIFEST]}, SIGNATURE)


def test_files_found_must_be_the_signed_ones() -> None:
    bundle = signed_bundle()
    vouched, manifest = checked(bundle)
    present = {p: d for p, d in bundle.described().items() if p != SIGNATURE}
    check_files(vouched, manifest, present)
    cases = {
        "extra.bin is not covered by the signature": {**present, "extra.bin": (Digest.of(b""), 0)},
        "testvectors.npz is signed but missing": {
            p: d for p, d in present.items() if p != "testvectors.npz"
        },
        "model.onnx was modified after signing": {
            **present,
            "model.onnx": (Digest.of(b"x"), present["model.onnx"][1]),
        },
        "model.onnx: size differs": {
            **present,
            "model.onnx": (present["model.onnx"][0], 1),
        },
    }
    for message, files in cases.items():
        with pytest.raises(TamperedError, match=message):
            check_files(vouched, manifest, files)


def test_files_found_without_a_signature_check_against_the_manifest() -> None:
    bundle = signed_bundle()
    unverified = unverified_statement(bundle.manifest, INSECURE)
    manifest = check_manifest(unverified, bundle.manifest)
    present = {p: d for p, d in bundle.described().items() if p != SIGNATURE}
    check_files(unverified, manifest, present)
    with pytest.raises(TamperedError, match="extra.bin is not listed in manifest.json"):
        check_files(unverified, manifest, {**present, "extra.bin": (Digest.of(b""), 0)})
    with pytest.raises(TamperedError, match="model.onnx differs from manifest.json"):
        check_files(unverified, manifest, {**present, "model.onnx": (Digest.of(b"x"), 9)})
    with pytest.raises(TamperedError, match="model.onnx is listed in manifest.json but missing"):
        check_files(unverified, manifest, {p: d for p, d in present.items() if p != "model.onnx"})


# 4. Which versions may be installed.


def test_the_rollback_floor_and_the_minimum_version() -> None:
    mode = policy_with(minimum="1.5.0")
    check_version_allowed("iris", "2.0.0", mode=mode, floor="2.0.0")
    check_version_allowed("iris", "1.9.0", mode=mode, floor="2.0.0", allow_downgrade=True)
    with pytest.raises(RollbackError, match=r"2\.0\.0 was installed before \(rollback floor\)"):
        check_version_allowed("iris", "1.9.0", mode=mode, floor="2.0.0")
    with pytest.raises(RollbackError, match=r"minimum version 1\.5\.0 set in t\.toml"):
        check_version_allowed("iris", "1.4.0", mode=mode, allow_downgrade=True)
    # SemVer precedence, not text order; an unverified mode has no policy, so no minimum.
    check_version_allowed("iris", "1.10.0", mode=mode, floor="1.9.0")
    check_version_allowed("iris", "0.1.0", mode=INSECURE)
    with pytest.raises(RollbackError, match="rollback floor"):
        check_version_allowed("iris", "0.1.0", mode=INSECURE, floor="1.0.0")


def test_another_build_of_the_floors_version_is_a_rollback() -> None:
    mode = policy_with()
    # The floor's own version again is a reinstall.
    check_version_allowed("iris", "1.0.0+build.2", mode=mode, floor="1.0.0+build.2")
    # Build metadata has no order: either other build of the same precedence is refused.
    for version, floor in (("1.0.0+build.1", "1.0.0+build.2"), ("1.0.0", "1.0.0+build.1")):
        with pytest.raises(RollbackError, match=r"differs only in build metadata"):
            check_version_allowed("iris", version, mode=mode, floor=floor)
        check_version_allowed("iris", version, mode=mode, floor=floor, allow_downgrade=True)
    check_version_allowed("iris", "1.0.1+build.1", mode=mode, floor="1.0.0+build.2")


# Channel documents.

D1 = Digest.of(b"manifest 1")
DOC = Channel("iris", "stable", "1.0.0", D1, T0, T0 + timedelta(days=30), 3)


def document(key: ec.EllipticCurvePrivateKey = KEY, **changes: Any) -> bytes:
    return sign_channel(replace(DOC, **changes), private_key=key)


def accept(data: bytes, *, now: datetime = T0, last: Seen | None = None) -> Channel:
    return accept_channel(data, trusted(), name="iris", channel="stable", now=now, last_seen=last)[
        0
    ]


def test_a_channel_document_is_accepted_once_every_rule_holds() -> None:
    doc, hint = accept_channel(
        document(), trusted(), name="iris", channel="stable", now=T0, last_seen=Seen(3, "1.0.0", D1)
    )
    assert doc == DOC and hint == key_hint(KEY.public_key())


def test_channel_refusals() -> None:
    with pytest.raises(UntrustedError, match="not one of the trusted keys"):
        accept(document(OTHER))
    with pytest.raises(WrongModelError, match="asked for iris@stable .* of spam@stable"):
        accept(document(name="spam"))
    with pytest.raises(WrongModelError, match="of iris@canary"):
        accept(document(channel="canary"))
    with pytest.raises(ExpiredError, match="expired at 2026-12-01T00:00:00Z"):
        accept(document(), now=T0 + timedelta(days=30))
    with pytest.raises(RollbackError, match="replaying"):
        accept(document(), last=Seen(4, "1.0.0", D1))
    with pytest.raises(TamperedError, match="two different signed documents"):
        accept(document(), last=Seen(3, "0.9.0", Digest.of(b"manifest 0")))
    with pytest.raises(TamperedError, match="larger than"):
        accept(document() + b" " * (64 << 10))
    with pytest.raises(TamperedError):
        accept(signed_bundle().sig)


def test_checking_a_document_ignores_expiry_but_not_signer_or_binding() -> None:
    expired = document(issued=T0 - timedelta(days=60), expires=T0 - timedelta(days=30))
    doc, _ = check_channel_document(expired, trusted().policy, name="iris", channel="stable")
    assert doc.sequence == 3
    with pytest.raises(UntrustedError):
        check_channel_document(expired, trusted(OTHER).policy, name="iris", channel="stable")
    with pytest.raises(WrongModelError):
        check_channel_document(expired, trusted().policy, name="iris", channel="canary")
