"""The root of trust: root and delegations documents, and every rule about them (pure).

Like python-tuf's ``TrustedMetadataSet``: the trusted root plus bytes plus ``now`` in, a
decision out; fetching, storing and pinning are :mod:`packager.instance.roots`' job.

- A ROOT names keys (by PEM; key ids are recomputed, never read), the ``root`` role (who
  signs the next root, and how many of them) and the ``delegations`` role, with a
  ``version`` and an ``expires`` time. :func:`pin_root` checks one against its own
  threshold; :func:`next_root` accepts root N+1 only if the threshold of root N AND its
  own threshold signed it, and it says version N+1 exactly; :func:`check_fresh` refuses
  the newest root once expired.
- DELEGATIONS name model signing keys and, per model-name glob, which of them may sign,
  with their own ``version`` and ``expires``. :func:`accept_delegations` verifies them
  against the NEWEST root's delegations role, refuses an expired document and a version
  below the floor (:func:`delegations_floor`).
- :func:`delegated_policy` adds what the delegations allow to the instance's
  ``trust.toml`` policy; a key that policy revokes stays revoked.

Both documents are DSSE envelopes in a Sigstore bundle v0.3, each with its own payload
type, whose payload is an in-toto Statement v1 with its own predicate type; its one
subject names the document (``root.3``, ``delegations.7``) and carries the sha256 of the
canonical predicate.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.jsonio import Limits, loads_object
from packager.core.policy import Rule, TrustedKey, TrustPolicy, load_pem_public_key
from packager.core.signature import (
    STATEMENT_TYPE,
    add_signature,
    key_hint,
    sign_envelope,
    unverified_payload,
    verify_threshold,
)
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UsageError,
    VerificationError,
)

ROOT_PAYLOAD_TYPE = "application/vnd.packager.root.v1+json"
ROOT_PREDICATE_TYPE = "https://packager.dev/root/v1"
DELEGATIONS_PAYLOAD_TYPE = "application/vnd.packager.delegations.v1+json"
DELEGATIONS_PREDICATE_TYPE = "https://packager.dev/delegations/v1"
# Where every registry kind keeps them: a reserved repository, tags root.<N> and delegations.
TRUST_REPOSITORY = "packager-trust"
DELEGATIONS_TAG = "delegations"
ROOT_TAG_PREFIX = "root."
MAX_TRUST_DOCUMENT_BYTES = 256 << 10
_LIMITS = Limits(max_bytes=MAX_TRUST_DOCUMENT_BYTES)
MAX_KEYS = 64
MAX_DELEGATIONS = 256
_GLOB_RE = re.compile(r"[A-Za-z0-9._*?!\[\]-]{1,128}", re.ASCII)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Role:
    """Keys (by hint) of which at least ``threshold`` must sign."""

    keys: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    version: int
    expires: datetime
    keys: Mapping[str, bytes]
    root: Role
    delegations: Role

    def role_keys(self, role: Role) -> list[ec.EllipticCurvePublicKey]:
        return [_public_key(self.keys[hint]) for hint in role.keys]


@dataclass(frozen=True)
class Delegation:
    """Model names matching ``models`` (a glob) may be signed by ``keys`` (hints)."""

    models: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Delegations:
    version: int
    expires: datetime
    keys: Mapping[str, bytes]
    delegations: tuple[Delegation, ...]


def root_tag(version: int) -> str:
    return f"{ROOT_TAG_PREFIX}{version}"


def root_payload(root: Root) -> bytes:
    """The canonical in-toto statement a root document signs."""
    predicate = {
        "version": root.version,
        "expires": _timestamp(root.expires),
        "keys": _keys_json(root.keys),
        "roles": {
            "root": _role_json(root.root),
            "delegations": _role_json(root.delegations),
        },
    }
    return _statement(root_tag(root.version), ROOT_PREDICATE_TYPE, predicate)


def delegations_payload(doc: Delegations) -> bytes:
    """The canonical in-toto statement a delegations document signs."""
    predicate = {
        "version": doc.version,
        "expires": _timestamp(doc.expires),
        "keys": _keys_json(doc.keys),
        "delegations": [{"models": d.models, "keys": list(d.keys)} for d in doc.delegations],
    }
    return _statement(f"{DELEGATIONS_TAG}.{doc.version}", DELEGATIONS_PREDICATE_TYPE, predicate)


def sign_document(
    payload_type: str, payload: bytes, private_keys: Sequence[ec.EllipticCurvePrivateKey]
) -> bytes:
    """An envelope over ``payload`` signed by every key of ``private_keys``.

    Raises:
        UsageError: no key, a key given twice, or a key unfit to sign.
    """
    if not private_keys:
        raise UsageError("a root or delegations document needs at least one signing key")
    data = sign_envelope(payload_type, payload, private_key=private_keys[0])
    for key in private_keys[1:]:
        data = add_signature(data, payload_type, private_key=key)
    return data


def check_root(root: Root) -> Root:
    """Raises UsageError unless every role names known keys and a reachable threshold."""
    for name, role in (("root", root.root), ("delegations", root.delegations)):
        _check_role(role, root.keys, f"root role {name}", UsageError)
    return root


def check_delegations(doc: Delegations) -> Delegations:
    """Raises UsageError unless every delegation names known keys and a valid glob."""
    for delegation in doc.delegations:
        _check_delegation(delegation, doc.keys, UsageError)
    return doc


# -- verification -----------------------------------------------------------------------


def pin_root(data: bytes, *, pinned: Root | None = None) -> Root:
    """A root document to pin: signed by the threshold of its own root role, and not
    older than the root already pinned. Its expiry is not checked here (a pinned root is
    walked forward before use; see :func:`check_fresh`).

    Raises:
        TamperedError: malformed.
        UntrustedError: fewer than its threshold of its own root keys signed it.
        RollbackError: a version below ``pinned``'s.
    """
    root = _parse_root(unverified_payload(_capped(data, "root"), ROOT_PAYLOAD_TYPE))
    _verify(data, "root", root, f"root v{root.version}")
    if pinned is not None and root.version < pinned.version:
        raise RollbackError(
            f"root version {root.version} is older than the version {pinned.version} "
            "already trusted here"
        )
    return root


def next_root(trusted: Root, data: bytes) -> Root:
    """Root ``trusted.version + 1``, signed by the threshold of ``trusted``'s root role
    and by the threshold of its own.

    Raises:
        TamperedError: malformed.
        UntrustedError: either threshold is not met (e.g. signed only by new keys, or
            only by keys the trusted root does not name).
        RollbackError: any version but ``trusted.version + 1`` (a replayed older root, or
            a skipped one).
    """
    what = f"root v{trusted.version + 1}"
    payload = _verify(data, "root", trusted, f"{what} (by the keys of root v{trusted.version})")
    root = _parse_root(payload)
    if root.version != trusted.version + 1:
        raise RollbackError(
            f"the registry serves root version {root.version} where version "
            f"{trusted.version + 1} must follow {trusted.version}: roots are accepted one "
            "version at a time"
        )
    _verify(data, "root", root, f"{what} (by its own keys)")
    return root


def check_fresh(root: Root, *, now: datetime) -> Root:
    """Raises ExpiredError when the newest root is past its expiry (a frozen registry)."""
    if now >= root.expires:
        raise ExpiredError(
            f"root version {root.version} expired at {_timestamp(root.expires)}; the registry "
            "may be withholding a newer one: ask the publisher to publish a new root"
        )
    return root


def delegations_floor(previous: Root, newest: Root, last_version: int | None) -> int | None:
    """The lowest delegations version to accept under ``newest``: the one last accepted,
    unless ``newest`` changed the delegations role since ``previous`` (the root those were
    accepted under), which resets the floor as TUF does for a role whose keys rotated."""
    return last_version if previous.delegations == newest.delegations else None


def accept_delegations(root: Root, data: bytes, *, now: datetime, floor: int | None) -> Delegations:
    """Delegations signed by the threshold of ``root``'s (the newest root's) delegations
    role, not expired, not below ``floor``.

    Raises:
        TamperedError: malformed.
        UntrustedError: the threshold of the delegations keys ``root`` names is not met
            (e.g. signed with a delegation key an older root named).
        ExpiredError: past its expiry.
        RollbackError: a version below ``floor`` (a replayed older document).
    """
    doc = verify_delegations(root, data)
    if now >= doc.expires:
        raise ExpiredError(
            f"delegations version {doc.version} expired at {_timestamp(doc.expires)}; the "
            "registry may be withholding a newer one: ask the publisher to delegate again"
        )
    if floor is not None and doc.version < floor:
        raise RollbackError(
            f"delegations version {doc.version} is older than version {floor} seen before: "
            "the registry is replaying an old document"
        )
    return doc


def verify_delegations(root: Root, data: bytes) -> Delegations:
    """Delegations signed by the threshold of ``root``'s delegations role, whatever their
    expiry and version (what the publisher builds the next version on).

    Raises:
        TamperedError: malformed.
        UntrustedError: the threshold of the delegations keys ``root`` names is not met.
    """
    payload = _verify(
        data, "delegations", root, f"the delegations (by the keys of root v{root.version})"
    )
    return _parse_delegations(payload)


def delegated_policy(policy: TrustPolicy, doc: Delegations) -> TrustPolicy:
    """``policy`` plus, for each delegation, a rule trusting its keys for its glob.

    A delegated key whose id ``policy`` revokes is added revoked: the instance's own
    revocations win over the publisher's delegations.
    """
    revoked = policy.revoked_hints()
    keys = dict(policy.keys)
    names: dict[str, str] = {}
    for hint, pem in doc.keys.items():
        name = f"delegated.{hint[:16]}"
        names[hint] = name
        keys[name] = TrustedKey(name, pem, _public_key(pem), revoked=hint in revoked)
    rules = policy.rules + tuple(
        Rule(d.models, tuple(names[hint] for hint in d.keys)) for d in doc.delegations
    )
    source = f"{policy.source} and delegations v{doc.version}"
    # Everything else the instance's policy says (CAs, revocations, approvals required,
    # licence rules, minimums) stands as it is: delegations only add signing keys.
    return replace(policy, keys=keys, rules=rules, source=source)


def claimed_delegations_version(data: bytes) -> int:
    """The version a delegations document CLAIMS, unauthenticated: to order copies, never
    for trust.

    Raises:
        TamperedError: malformed.
    """
    payload = unverified_payload(_capped(data, "delegations"), DELEGATIONS_PAYLOAD_TYPE)
    return _parse_delegations(payload).version


# -- parsing ----------------------------------------------------------------------------


def _capped(data: bytes, what: str) -> bytes:
    if len(data) > MAX_TRUST_DOCUMENT_BYTES:
        raise TamperedError(f"the {what} document is larger than {MAX_TRUST_DOCUMENT_BYTES} bytes")
    return data


def _verify(data: bytes, kind: Literal["root", "delegations"], signer: Root, what: str) -> bytes:
    """The payload of the ``kind`` document ``data``, signed by the threshold of
    ``signer``'s role of that name."""
    role = signer.root if kind == "root" else signer.delegations
    payload_type = ROOT_PAYLOAD_TYPE if kind == "root" else DELEGATIONS_PAYLOAD_TYPE
    keys = signer.role_keys(role)
    try:
        payload, _ = verify_threshold(
            _capped(data, kind), payload_type, public_keys=keys, threshold=role.threshold, what=what
        )
        return payload
    except UsageError as e:  # an unsupported curve in a signed document is tampering
        raise TamperedError(f"{what}: {e}") from e
    except TamperedError as e:
        raise TamperedError(f"{what} is malformed: {e}") from e


def _statement(name: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    return _canonical(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": _predicate_digest(predicate)}}],
            "predicateType": predicate_type,
            "predicate": predicate,
        }
    )


def _open_statement(payload: bytes, predicate_type: str, what: str) -> tuple[dict[str, Any], str]:
    doc = loads_object(payload, what=what, limits=_LIMITS)
    if set(doc) != {"_type", "subject", "predicateType", "predicate"}:
        raise TamperedError(f"{what}: not an in-toto statement of the expected fields")
    if doc["_type"] != STATEMENT_TYPE or doc["predicateType"] != predicate_type:
        raise TamperedError(f"{what}: predicateType is not {predicate_type}")
    subject, predicate = doc["subject"], doc["predicate"]
    if not isinstance(predicate, dict):
        raise TamperedError(f"{what}: the predicate is not an object")
    if (
        not isinstance(subject, list)
        or len(subject) != 1
        or not isinstance(subject[0], dict)
        or set(subject[0]) != {"name", "digest"}
        or subject[0]["digest"] != {"sha256": _predicate_digest(predicate)}
        or not isinstance(subject[0]["name"], str)
    ):
        raise TamperedError(f"{what}: the subject does not describe the predicate")
    return predicate, subject[0]["name"]


def _parse_root(payload: bytes) -> Root:
    predicate, subject = _open_statement(payload, ROOT_PREDICATE_TYPE, "root document")
    if set(predicate) != {"version", "expires", "keys", "roles"}:
        raise TamperedError("root document: unexpected fields")
    version = _version(predicate["version"], "root document")
    if subject != root_tag(version):
        raise TamperedError(f"root document: subject {subject[:40]!r} is not {root_tag(version)}")
    keys = _parse_keys(predicate["keys"], "root document")
    roles = predicate["roles"]
    if not isinstance(roles, dict) or set(roles) != {"root", "delegations"}:
        raise TamperedError("root document: roles must be exactly root and delegations")
    root_role = _parse_role(roles["root"], keys, "root role root")
    delegations_role = _parse_role(roles["delegations"], keys, "root role delegations")
    expires = _parse_time(predicate["expires"], "root document")
    return Root(version, expires, keys, root_role, delegations_role)


def _parse_delegations(payload: bytes) -> Delegations:
    what = "delegations document"
    predicate, subject = _open_statement(payload, DELEGATIONS_PREDICATE_TYPE, what)
    if set(predicate) != {"version", "expires", "keys", "delegations"}:
        raise TamperedError(f"{what}: unexpected fields")
    version = _version(predicate["version"], what)
    if subject != f"{DELEGATIONS_TAG}.{version}":
        raise TamperedError(f"{what}: subject {subject[:40]!r} does not name version {version}")
    keys = _parse_keys(predicate["keys"], what)
    entries = predicate["delegations"]
    if not isinstance(entries, list) or len(entries) > MAX_DELEGATIONS:
        raise TamperedError(f"{what}: delegations must be a list of at most {MAX_DELEGATIONS}")
    delegations = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"models", "keys"}:
            raise TamperedError(f"{what}: a delegation has exactly models and keys")
        hints = entry["keys"]
        if not isinstance(hints, list) or not all(isinstance(h, str) for h in hints):
            raise TamperedError(f"{what}: a delegation's keys must be a list of key ids")
        if not isinstance(entry["models"], str):
            raise TamperedError(f"{what}: a delegation's models must be a glob")
        delegation = Delegation(entry["models"], tuple(hints))
        _check_delegation(delegation, keys, TamperedError)
        delegations.append(delegation)
    expires = _parse_time(predicate["expires"], what)
    return Delegations(version, expires, keys, tuple(delegations))


def _parse_keys(value: object, what: str) -> Mapping[str, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_KEYS:
        raise TamperedError(f"{what}: keys must be an object of 1 to {MAX_KEYS} keys")
    keys: dict[str, bytes] = {}
    for hint, entry in value.items():
        if (
            not isinstance(entry, dict)
            or set(entry) != {"pem"}
            or not isinstance(entry["pem"], str)
        ):
            raise TamperedError(f'{what}: each key is {{"pem": "..."}}')
        pem = entry["pem"].encode()
        try:
            actual = key_hint(_public_key(pem))
        except UsageError as e:
            raise TamperedError(f"{what}: {e}") from e
        if actual != hint:
            raise TamperedError(f"{what}: key id {hint[:20]!r} is not the id of its key")
        keys[hint] = pem
    return MappingProxyType(keys)


def _parse_role(value: object, keys: Mapping[str, bytes], where: str) -> Role:
    if not isinstance(value, dict) or set(value) != {"keys", "threshold"}:
        raise TamperedError(f"{where}: a role has exactly keys and threshold")
    hints, threshold = value["keys"], value["threshold"]
    if not isinstance(hints, list) or not all(isinstance(h, str) for h in hints):
        raise TamperedError(f"{where}: keys must be a list of key ids")
    if type(threshold) is not int:
        raise TamperedError(f"{where}: threshold must be an integer")
    role = Role(tuple(hints), threshold)
    _check_role(role, keys, where, TamperedError)
    return role


def _check_role(
    role: Role, keys: Mapping[str, bytes], where: str, error: type[VerificationError | UsageError]
) -> None:
    if len(set(role.keys)) != len(role.keys) or not role.keys:
        raise error(f"{where}: list at least one key, each once")
    unknown = [hint for hint in role.keys if hint not in keys]
    if unknown:
        raise error(f"{where}: names unknown key {unknown[0][:20]!r}")
    if not 1 <= role.threshold <= len(role.keys):
        raise error(f"{where}: threshold {role.threshold} must be 1 to {len(role.keys)}")


def _check_delegation(
    delegation: Delegation, keys: Mapping[str, bytes], error: type[VerificationError | UsageError]
) -> None:
    if not _GLOB_RE.fullmatch(delegation.models):
        raise error(f"delegation {delegation.models[:40]!r}: not a glob over model names")
    if not delegation.keys or len(set(delegation.keys)) != len(delegation.keys):
        raise error(f"delegation {delegation.models}: list at least one key, each once")
    unknown = [hint for hint in delegation.keys if hint not in keys]
    if unknown:
        raise error(f"delegation {delegation.models}: names unknown key {unknown[0][:20]!r}")


def _version(value: object, what: str) -> int:
    if type(value) is not int or value < 1:
        raise TamperedError(f"{what}: version must be a positive integer")
    return value


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise TamperedError(f"{what}: expires is not a timestamp")
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise TamperedError(f"{what}: expires {value[:40]!r} is malformed") from e


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    return load_pem_public_key(pem, where="root of trust key")


def _keys_json(keys: Mapping[str, bytes]) -> dict[str, Any]:
    return {hint: {"pem": pem.decode()} for hint, pem in sorted(keys.items())}


def _role_json(role: Role) -> dict[str, Any]:
    return {"keys": list(role.keys), "threshold": role.threshold}


def _predicate_digest(predicate: object) -> str:
    return hashlib.sha256(_canonical(predicate)).hexdigest()


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def keys_by_hint(keys: Iterable[ec.EllipticCurvePublicKey]) -> dict[str, bytes]:
    """Hint -> PEM of each key, as documents list them."""
    return {
        key_hint(key): key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for key in keys
    }
