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

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.manifest import NAME_RE, SEMVER_RE
from packager.core.signature import SUPPORTED_CURVES, key_hint
from packager.errors import UntrustedError, UsageError

_USE = "use an ECDSA P-256, P-384 or P-521 key (`packager keygen` makes one)"
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
class UnusableKey:
    """A key in the policy file that packager cannot verify with (``reason`` says why): it
    is kept in the file and trusted for nothing, so it never stops the usable keys."""

    name: str
    pem: bytes
    revoked: bool
    reason: str


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
    unusable: Mapping[str, UnusableKey] = field(default_factory=dict)

    def keys_for(self, model: str) -> list[ec.EllipticCurvePublicKey]:
        """Public keys allowed to sign ``model``: named by a covering rule and not revoked.

        Raises:
            UntrustedError: no rule covers the model, or every key it names is revoked or
                unusable (see :class:`UnusableKey`).
        """
        names = sorted({k for rule in self.rules if rule.covers(model) for k in rule.keys})
        usable = [self.keys[n] for n in names if n in self.keys]
        allowed = [key.public_key for key in usable if not key.revoked]
        if not allowed:
            why = (
                "every key its rules name is revoked or unusable" if names else "no rule covers it"
            )
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
    """The public key in ``pem`` (PEM SubjectPublicKeyInfo): the one rule for which keys
    packager accepts, which is exactly the keys it verifies signatures with (ECDSA on
    P-256, P-384 or P-521).

    Raises:
        UsageError: not a PEM public key, not an ECDSA key, or on another curve (named).
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except UnsupportedAlgorithm as e:
        raise UsageError(f"{where}: a key packager cannot verify with ({e}); {_USE}") from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"{where}: not a PEM public key ({e})") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        kind = type(key).__name__.removesuffix("PublicKey")
        raise UsageError(f"{where}: the {kind} key is not an ECDSA public key; {_USE}")
    if key.curve.name not in SUPPORTED_CURVES:
        raise UsageError(
            f"{where}: an ECDSA key on curve {key.curve.name}, which packager cannot verify "
            f"with; {_USE}"
        )
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
    unusable: dict[str, UnusableKey] = {}
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
        try:
            keys[name] = TrustedKey(name, pem, load_pem_public_key(pem, where=where), revoked)
        except UsageError as e:
            # One key packager cannot verify with must not stop the others: it signs nothing.
            unusable[name] = UnusableKey(name, pem, revoked, str(e))
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
        missing = [n for n in names if n not in keys and n not in unusable]
        if missing:
            raise UsageError(f"{where} names unknown key {missing[0]!r}")
        rules.append(Rule(models, tuple(names)))
    minimum: dict[str, str] = {}
    for model, version in _table(doc.get("minimum", {}), f"{source}: [minimum]").items():
        if not NAME_RE.fullmatch(model) or not isinstance(version, str):
            raise UsageError(f'{source}: [minimum] {model!r} must be a model name = "VERSION"')
        if not SEMVER_RE.fullmatch(version):
            raise UsageError(f"{source}: [minimum] {model} = {version!r} is not a SemVer version")
        minimum[model] = version
    return TrustPolicy(keys, tuple(rules), minimum, source, unusable)


def render_policy(policy: TrustPolicy) -> str:
    """TOML text for a policy; ``parse_policy(render_policy(p))`` gives ``p`` back."""
    import tomli_w  # deferred: only `packager trust` writes policies

    every: list[TrustedKey | UnusableKey] = [*policy.keys.values(), *policy.unusable.values()]
    doc: dict[str, Any] = {
        "keys": {
            key.name: {"pem": key.pem.decode().strip() + "\n", "revoked": key.revoked}
            for key in sorted(every, key=lambda k: k.name)
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
