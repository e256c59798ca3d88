"""Trust policy: which keys may sign which models, revocations, minimum versions (pure).

The policy is parsed from TOML text by :func:`parse_policy`; files are read by
:mod:`packager.instance.trust`. It fails closed: a model no rule covers has no trusted key,
and a revoked key is never trusted, whatever the rules say.

::

    [keys.platform]
    pem = '''-----BEGIN PUBLIC KEY----- ...'''
    revoked = false

    [[rules]]
    models = "security-*"          # glob over model names
    keys = ["platform"]

    [minimum]
    spam-filter = "2.0.0"          # never install below this version

Whether to verify at all is one explicit value, a :data:`VerifyMode`: :class:`Trusted`
(check every signature against a policy) or :class:`Unverified` (check none, only digests;
made by ``--insecure-skip-verify`` and ``mirror --no-verify``, and always audited with its
reason), like sigstore's ``UnsafeNoOp``. There is no third spelling (no ``None``, no flag).
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.manifest import NAME_RE, is_version
from packager.core.signature import key_hint
from packager.errors import UntrustedError, UsageError

KEY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class TrustedKey:
    name: str
    pem: bytes
    public_key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    revoked: bool = False

    @property
    def hint(self) -> str:
        return key_hint(self.public_key)


@dataclass(frozen=True)
class Rule:
    models: str
    keys: tuple[str, ...]

    def covers(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.models)


@dataclass(frozen=True)
class TrustPolicy:
    keys: Mapping[str, TrustedKey]
    rules: tuple[Rule, ...]
    minimum: Mapping[str, str] = field(default_factory=dict)
    source: str = "trust policy"

    def keys_for(self, model: str) -> list[ec.EllipticCurvePublicKey]:
        """Public keys allowed to sign ``model``: named by a covering rule and not revoked.

        Raises:
            UntrustedError: no rule covers the model, or every key it names is revoked.
        """
        names = sorted({k for rule in self.rules if rule.covers(model) for k in rule.keys})
        allowed = [self.keys[n].public_key for n in names if not self.keys[n].revoked]
        if not allowed:
            why = "every key its rules name is revoked" if names else "no rule covers it"
            raise UntrustedError(
                f"no trusted key for {model} in {self.source} ({why}); add one with "
                f"`packager trust add-key NAME cosign.pub --models '{model}'`"
            )
        return allowed

    def revoked_hints(self) -> dict[str, str]:
        """Hint -> name of every revoked key (to name it when it signed something)."""
        return {key.hint: key.name for key in self.keys.values() if key.revoked}


@dataclass(frozen=True)
class Trusted:
    """Verify every signature against ``policy`` (fail closed: see :class:`TrustPolicy`)."""

    policy: TrustPolicy


@dataclass(frozen=True)
class Unverified:
    """Check no signature, only digests and sizes. ``reason`` (the option that asked for
    it, e.g. ``--insecure-skip-verify``) is shown in warnings and written to the audit log.

    Raises:
        UsageError: an empty reason: skipping verification is never silent.
    """

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise UsageError("an unverified mode must say why signatures are not checked")


VerifyMode = Trusted | Unverified


def load_pem_public_key(pem: bytes, *, where: str) -> ec.EllipticCurvePublicKey:
    """Raises UsageError unless ``pem`` is an EC public key in PEM SPKI form."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{where}: not a PEM public key ({e})") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError(f"{where}: only ECDSA public keys are supported")
    return key


def check_key_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= KEY_NAME_CHARS:
        raise UsageError(f"invalid key name {name!r}: use up to 64 letters, digits, '.', '_', '-'")
    return name


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table")
    return value


def parse_policy(text: str, *, source: str) -> TrustPolicy:
    """Parse trust.toml text.

    Raises:
        UsageError: malformed TOML, unknown fields, bad keys, rules naming unknown keys.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source} is not valid TOML: {e}") from e
    unknown = set(doc) - {"keys", "rules", "minimum"}
    if unknown:
        raise UsageError(f"{source}: unknown section {sorted(unknown)[0]!r}")
    keys: dict[str, TrustedKey] = {}
    for name, entry in _table(doc.get("keys", {}), f"{source}: [keys]").items():
        where = f"{source}: [keys.{name}]"
        check_key_name(name)
        entry = _table(entry, where)
        if set(entry) - {"pem", "revoked"} or not isinstance(entry.get("pem"), str):
            raise UsageError(f"{where} needs pem = '''...''' and optionally revoked = true|false")
        revoked = entry.get("revoked", False)
        if not isinstance(revoked, bool):
            raise UsageError(f"{where}: revoked must be true or false")
        pem = entry["pem"].encode()
        keys[name] = TrustedKey(name, pem, load_pem_public_key(pem, where=where), revoked)
    rules: list[Rule] = []
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        raise UsageError(f"{source}: rules must be an array of tables ([[rules]])")
    for i, entry in enumerate(raw_rules):
        where = f"{source}: rules[{i}]"
        entry = _table(entry, where)
        models, names = entry.get("models"), entry.get("keys")
        if (
            set(entry) - {"models", "keys"}
            or not isinstance(models, str)
            or not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
        ):
            raise UsageError(f'{where} needs models = "GLOB" and keys = ["NAME", ...]')
        missing = [n for n in names if n not in keys]
        if missing:
            raise UsageError(f"{where} names unknown key {missing[0]!r}")
        rules.append(Rule(models, tuple(names)))
    minimum: dict[str, str] = {}
    for model, version in _table(doc.get("minimum", {}), f"{source}: [minimum]").items():
        if not NAME_RE.fullmatch(model) or not isinstance(version, str):
            raise UsageError(f'{source}: [minimum] {model!r} must be a model name = "VERSION"')
        if not is_version(version):
            raise UsageError(f"{source}: [minimum] {model} = {version!r} is not a SemVer version")
        minimum[model] = version
    return TrustPolicy(keys, tuple(rules), minimum, source)


def render_policy(policy: TrustPolicy) -> str:
    """TOML text for a policy; ``parse_policy(render_policy(p))`` gives ``p`` back."""
    import tomli_w  # deferred: only `packager trust` writes policies

    doc: dict[str, Any] = {
        "keys": {
            key.name: {"pem": key.pem.decode().strip() + "\n", "revoked": key.revoked}
            for key in sorted(policy.keys.values(), key=lambda k: k.name)
        },
        "rules": [{"models": rule.models, "keys": list(rule.keys)} for rule in policy.rules],
    }
    if policy.minimum:
        doc["minimum"] = dict(sorted(policy.minimum.items()))
    header = "# packager trust policy: which keys may sign which models.\n\n"
    return header + tomli_w.dumps(doc, multiline_strings=True)


def adhoc_policy(keys: Sequence[ec.EllipticCurvePublicKey]) -> TrustPolicy:
    """A policy trusting ``keys`` for every model: what ``--key PATH`` on the command line means."""
    trusted = {}
    for i, key in enumerate(keys):
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        trusted[f"key{i}"] = TrustedKey(f"key{i}", pem, key)
    return TrustPolicy(trusted, (Rule("*", tuple(trusted)),), {}, "--key")
