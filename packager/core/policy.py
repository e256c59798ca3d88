"""Trust policy: which keys and CAs may sign which models, revocations, minimum versions (pure).

The policy is parsed from TOML text by :func:`parse_policy`; files are read by
:mod:`packager.instance.trust`. It fails closed: a model no rule covers has no trusted key,
and a revoked key is never trusted, whatever the rules say.

::

    [keys.platform]
    pem = '''-----BEGIN PUBLIC KEY----- ...'''
    revoked = false

    [cas.corp]                     # a CA certifying signers (see packager.core.x509)
    pem = '''-----BEGIN CERTIFICATE----- ...'''
    identities = ["email:ml-release@example.com"]   # the leaf must match one; [] = any
    revoked = false

    [[rules]]
    models = "security-*"          # glob over model names
    keys = ["platform"]
    cas = ["corp"]                 # optional; a rule names keys, CAs or both

    [minimum]
    spam-filter = "2.0.0"          # never install below this version

    [keys.alice]                   # a reviewer: may approve, in these roles
    pem = '''-----BEGIN PUBLIC KEY----- ...'''
    roles = ["security-review"]

    [[approvals]]                  # install only with these approvals (m of the role's keys)
    models = "security-*"
    require = { security-review = 1, legal = 1 }

    [[licenses]]                   # install only bundles whose SPDX licence these allow
    models = "security-*"
    allow = ["MIT", "Apache-2.0"]
    training-data = true           # and the licence recorded for every training data file

Whether to verify at all is one explicit value, a :data:`VerifyMode`: :class:`Trusted`
(check every signature against a policy) or :class:`Unverified` (check none, only digests;
made by ``--insecure-skip-verify`` and ``mirror --no-verify``, and always audited with its
reason), like sigstore's ``UnsafeNoOp``. There is no third spelling (no ``None``, no flag).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.manifest import NAME_RE, is_version
from packager.core.signature import SUPPORTED_CURVES, key_hint
from packager.errors import UntrustedError, UsageError

if TYPE_CHECKING:
    from packager.core.x509 import TrustedCA

_USE = "use an ECDSA P-256, P-384 or P-521 key (`packager keygen` makes one)"
KEY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class TrustedKey:
    name: str
    pem: bytes
    public_key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    revoked: bool = False
    roles: tuple[str, ...] = ()

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
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    models: str
    keys: tuple[str, ...]
    cas: tuple[str, ...] = ()

    def covers(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.models)


# The source of the policy ``--key PATH`` makes.
ADHOC_SOURCE = "--key"


@dataclass(frozen=True)
class ApprovalRule:
    """Models matching ``models`` need, per role, that many approvals by distinct keys
    holding the role."""

    models: str
    require: Mapping[str, int] = field(hash=False)

    def covers(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.models)


@dataclass(frozen=True)
class LicenseRule:
    """Models matching ``models`` must be licensed under an expression ``allow`` allows
    (see :mod:`packager.core.spdx`); with ``training_data``, so must every training data
    file the bundle records."""

    models: str
    allow: tuple[str, ...]
    training_data: bool = False

    def covers(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.models)


@dataclass(frozen=True)
class TrustPolicy:
    keys: Mapping[str, TrustedKey]
    rules: tuple[Rule, ...]
    minimum: Mapping[str, str] = field(default_factory=dict)
    source: str = "trust policy"
    unusable: Mapping[str, UnusableKey] = field(default_factory=dict)
    cas: Mapping[str, TrustedCA] = field(default_factory=dict)
    approvals: tuple[ApprovalRule, ...] = ()
    licenses: tuple[LicenseRule, ...] = ()

    def license_rules(self, model: str) -> list[LicenseRule]:
        """The licence rules covering ``model`` (a bundle must satisfy each)."""
        return [rule for rule in self.licenses if rule.covers(model)]

    def required_approvals(self, model: str) -> dict[str, int]:
        """Role -> how many approvals ``model`` needs (the highest any covering rule
        asks); empty when no rule covers it."""
        needed: dict[str, int] = {}
        for rule in self.approvals:
            if rule.covers(model):
                for role, count in rule.require.items():
                    needed[role] = max(count, needed.get(role, 0))
        return dict(sorted(needed.items()))

    def reviewers(self, role: str) -> list[TrustedKey]:
        """The keys holding ``role`` that are not revoked."""
        return [
            k for _, k in sorted(self.keys.items()) if role in k.roles and not self.is_revoked(k)
        ]

    def is_revoked(self, key: TrustedKey) -> bool:
        """Whether ``key`` is revoked: a key revoked under one name is revoked under every
        name the policy gives the same public key."""
        return key.revoked or key.hint in self.revoked_hints()

    def key_named_by_hint(self) -> dict[str, str]:
        """Hint -> name of every usable key."""
        return {key.hint: key.name for key in self.keys.values()}

    def keys_for(self, model: str) -> list[ec.EllipticCurvePublicKey]:
        """Public keys allowed to sign ``model``: named by a covering rule and not revoked.

        Raises:
            UntrustedError: no rule covers the model, or every key it names is revoked or
                unusable (see :class:`UnusableKey`).
        """
        names = sorted({k for rule in self.rules if rule.covers(model) for k in rule.keys})
        usable = [self.keys[n] for n in names if n in self.keys]
        allowed = [key.public_key for key in usable if not self.is_revoked(key)]
        if not allowed:
            raise self._none_trusted(model, "key", bool(names))
        return allowed

    def cas_for(self, model: str) -> list[TrustedCA]:
        """CAs allowed to certify signers of ``model``: named by a covering rule, not revoked.

        Raises:
            UntrustedError: no rule names a CA for the model, or every one it names is revoked.
        """
        names = sorted({c for rule in self.rules if rule.covers(model) for c in rule.cas})
        allowed = [self.cas[n] for n in names if not self.cas[n].revoked]
        if not allowed:
            raise self._none_trusted(model, "CA", bool(names))
        return allowed

    def check_covered(self, model: str) -> None:
        """Fail closed: some key or CA must be trusted for ``model``.

        Raises:
            UntrustedError: none is (see :meth:`keys_for`).
        """
        try:
            self.cas_for(model)
        except UntrustedError:
            self.keys_for(model)

    def revoked_cas(self) -> list[TrustedCA]:
        return [ca for ca in self.cas.values() if ca.revoked]

    def _none_trusted(self, model: str, kind: str, named: bool) -> UntrustedError:
        if named:
            why = f"every {kind} its rules name is revoked" + (
                " or unusable" if kind == "key" else ""
            )
        elif any(rule.covers(model) for rule in self.rules):
            why = f"its rules name no {kind}"
        else:
            why = "no rule covers it"
        how = (
            self.add_command(f"add-key NAME cosign.pub --models '{model}'")
            if kind == "key"
            else self.add_command(f"add-ca NAME ca.pem --models '{model}'")
        )
        return UntrustedError(
            f"no trusted {kind} for {model} in {self.source} ({why}); add one with {how}"
        )

    def add_command(self, args: str) -> str:
        """The `packager trust` command line that edits this policy's file."""
        where = f"--trust {self.source} " if self.source.endswith(".toml") else ""
        return f"`packager trust {where}{args}`"

    def trust_advice(self, model: str) -> str:
        """What to do when no key this policy allows for ``model`` made a signature."""
        if self.source == ADHOC_SOURCE:
            return "pass --key PATH to the publisher's cosign.pub"
        add = self.add_command(f"add-key NAME cosign.pub --models '{model}'")
        return f"add the publisher's key with {add}"

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
        UsageError: malformed TOML, unknown fields, bad keys or CAs, a name used twice,
            rules naming unknown keys or CAs.
    """
    import tomllib  # here: an instance trusting --key alone never reads TOML

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source} is not valid TOML: {e}") from e
    unknown = set(doc) - {"keys", "cas", "rules", "minimum", "approvals", "licenses"}
    if unknown:
        raise UsageError(f"{source}: unknown section {sorted(unknown)[0]!r}")
    keys: dict[str, TrustedKey] = {}
    unusable: dict[str, UnusableKey] = {}
    for name, entry in _table(doc.get("keys", {}), f"{source}: [keys]").items():
        where = f"{source}: [keys.{name}]"
        check_key_name(name)
        entry = _table(entry, where)
        if set(entry) - {"pem", "revoked", "roles"} or not isinstance(entry.get("pem"), str):
            raise UsageError(
                f"{where} needs pem = '''...''' and optionally revoked = true|false and "
                'roles = ["ROLE", ...]'
            )
        pem = entry["pem"].encode()
        revoked = _revoked(entry, where)
        roles = _roles(entry.get("roles", []), where)
        try:
            key = load_pem_public_key(pem, where=where)
            keys[name] = TrustedKey(name, pem, key, revoked, roles)
        except UsageError as e:
            # One key packager cannot verify with must not stop the others: it signs nothing.
            unusable[name] = UnusableKey(name, pem, revoked, str(e), roles)
    cas = _parse_cas(doc.get("cas", {}), source)
    both = sorted((set(keys) | set(unusable)) & set(cas))
    if both:
        raise UsageError(f"{source}: {both[0]!r} names both a key and a CA; rename one")
    rules = [
        _parse_rule(entry, f"{source}: rules[{i}]", {*keys, *unusable}, cas)
        for i, entry in enumerate(_array(doc.get("rules", []), source))
    ]
    minimum: dict[str, str] = {}
    for model, version in _table(doc.get("minimum", {}), f"{source}: [minimum]").items():
        if not NAME_RE.fullmatch(model) or not isinstance(version, str):
            raise UsageError(f'{source}: [minimum] {model!r} must be a model name = "VERSION"')
        if not is_version(version):
            raise UsageError(f"{source}: [minimum] {model} = {version!r} is not a SemVer version")
        minimum[model] = version
    approvals = tuple(
        _parse_approval_rule(entry, f"{source}: approvals[{i}]")
        for i, entry in enumerate(_array(doc.get("approvals", []), source, "approvals"))
    )
    licenses = tuple(
        _parse_license_rule(entry, f"{source}: licenses[{i}]")
        for i, entry in enumerate(_array(doc.get("licenses", []), source, "licenses"))
    )
    return TrustPolicy(keys, tuple(rules), minimum, source, unusable, cas, approvals, licenses)


def _parse_license_rule(entry: Any, where: str) -> LicenseRule:
    from packager.core.spdx import check_allow_entry  # deferred: reads the SPDX list

    entry = _table(entry, where)
    models, allow = entry.get("models"), entry.get("allow")
    data = entry.get("training-data", False)
    if (
        set(entry) - {"models", "allow", "training-data"}
        or not isinstance(models, str)
        or not _names(allow)
        or not isinstance(data, bool)
    ):
        raise UsageError(
            f'{where} needs models = "GLOB", allow = ["SPDX-ID", ...] and optionally '
            "training-data = true|false"
        )
    try:
        normal = tuple(dict.fromkeys(check_allow_entry(item) for item in allow))
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    return LicenseRule(models, normal, data)


def _roles(value: Any, where: str) -> tuple[str, ...]:
    # Imported here, as below: most policies name no approval role.
    from packager.core.approval import check_role

    if not _names(value):
        raise UsageError(f'{where}: roles must be a list of role names, e.g. ["legal"]')
    try:
        return tuple(sorted({check_role(role) for role in value}))
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def _parse_approval_rule(entry: Any, where: str) -> ApprovalRule:
    from packager.core.approval import check_role

    entry = _table(entry, where)
    models, require = entry.get("models"), entry.get("require")
    if set(entry) != {"models", "require"} or not isinstance(models, str):
        raise UsageError(f'{where} needs models = "GLOB" and require = {{ ROLE = COUNT, ... }}')
    require = _table(require, f"{where}: require")
    counts: dict[str, int] = {}
    for role, count in require.items():
        check_role(role)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 16:
            raise UsageError(f"{where}: require.{role} must be a count from 1 to 16")
        counts[role] = count
    if not counts:
        raise UsageError(f"{where}: require names no role")
    return ApprovalRule(models, counts)


def _revoked(entry: Mapping[str, Any], where: str) -> bool:
    revoked = entry.get("revoked", False)
    if not isinstance(revoked, bool):
        raise UsageError(f"{where}: revoked must be true or false")
    return revoked


def _array(value: Any, source: str, section: str = "rules") -> list[Any]:
    if not isinstance(value, list):
        raise UsageError(f"{source}: {section} must be an array of tables ([[{section}]])")
    return value


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(n, str) for n in value)


def _parse_cas(section: Any, source: str) -> dict[str, TrustedCA]:
    # Imported here: most policies trust keys only, and certificates need these.
    from packager.core.x509 import Identity, TrustedCA, load_ca_certificate

    cas: dict[str, TrustedCA] = {}
    for name, entry in _table(section, f"{source}: [cas]").items():
        where = f"{source}: [cas.{name}]"
        check_key_name(name)
        entry = _table(entry, where)
        identities = entry.get("identities", [])
        if (
            set(entry) - {"pem", "identities", "revoked"}
            or not isinstance(entry.get("pem"), str)
            or not _names(identities)
        ):
            raise UsageError(
                f"{where} needs pem = '''...''' and optionally identities = "
                '["email:ADDRESS" | "uri:URI" | "subject:DN", ...] and revoked = true|false'
            )
        pem = entry["pem"].encode()
        certificate = load_ca_certificate(pem, where=where)
        parsed = tuple(Identity.parse(i) for i in identities)
        cas[name] = TrustedCA(name, pem, certificate, parsed, _revoked(entry, where))
    return cas


def _parse_rule(
    entry: Any, where: str, keys: Collection[str], cas: Mapping[str, TrustedCA]
) -> Rule:
    entry = _table(entry, where)
    models, names, ca_names = entry.get("models"), entry.get("keys", []), entry.get("cas", [])
    if (
        set(entry) - {"models", "keys", "cas"}
        or not isinstance(models, str)
        or not _names(names)
        or not _names(ca_names)
        or not ({"keys", "cas"} & set(entry))
    ):
        raise UsageError(
            f'{where} needs models = "GLOB" and keys = ["NAME", ...] or cas = ["NAME", ...]'
        )
    missing = [n for n in names if n not in keys] + [n for n in ca_names if n not in cas]
    if missing:
        kind = "key" if missing[0] not in ca_names else "CA"
        raise UsageError(f"{where} names unknown {kind} {missing[0]!r}")
    return Rule(models, tuple(names), tuple(ca_names))


def render_policy(policy: TrustPolicy) -> str:
    """TOML text for a policy; ``parse_policy(render_policy(p))`` gives ``p`` back."""
    import tomli_w  # deferred: only `packager trust` writes policies

    every: list[TrustedKey | UnusableKey] = [*policy.keys.values(), *policy.unusable.values()]
    doc: dict[str, Any] = {
        "keys": {
            key.name: {"pem": key.pem.decode().strip() + "\n", "revoked": key.revoked}
            | ({"roles": list(key.roles)} if key.roles else {})
            for key in sorted(every, key=lambda k: k.name)
        },
    }
    if policy.cas:
        doc["cas"] = {
            ca.name: {
                "pem": ca.pem.decode().strip() + "\n",
                "identities": [str(i) for i in ca.identities],
                "revoked": ca.revoked,
            }
            for ca in sorted(policy.cas.values(), key=lambda c: c.name)
        }
    doc["rules"] = [_render_rule(rule) for rule in policy.rules]
    if policy.minimum:
        doc["minimum"] = dict(sorted(policy.minimum.items()))
    if policy.licenses:
        doc["licenses"] = [
            {"models": r.models, "allow": list(r.allow), "training-data": r.training_data}
            for r in policy.licenses
        ]
    if policy.approvals:
        doc["approvals"] = [
            {"models": rule.models, "require": dict(rule.require)} for rule in policy.approvals
        ]
    header = "# packager trust policy: which keys and CAs may sign which models.\n\n"
    return header + tomli_w.dumps(doc, multiline_strings=True)


def _render_rule(rule: Rule) -> dict[str, Any]:
    rendered: dict[str, Any] = {"models": rule.models, "keys": list(rule.keys)}
    if rule.cas:
        rendered["cas"] = list(rule.cas)
    return rendered


def adhoc_policy(
    keys: Sequence[ec.EllipticCurvePublicKey], names: Sequence[str] = ()
) -> TrustPolicy:
    """A policy trusting ``keys`` for every model, and nothing else: what ``--key PATH``
    means with no policy file, and on ``verify``. Each key is called by its entry in
    ``names`` (the file it was read from), else ``key0``, ``key1``..."""
    trusted = {}
    for i, key in enumerate(keys):
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        name = names[i] if i < len(names) else f"key{i}"
        trusted[name] = TrustedKey(name, pem, key)
    return TrustPolicy(trusted, (Rule("*", tuple(trusted)),), {}, ADHOC_SOURCE)


def with_keys(policy: TrustPolicy, keys: Sequence[ec.EllipticCurvePublicKey]) -> TrustPolicy:
    """``policy`` also trusting ``keys`` to sign every model: what ``--key PATH`` adds to
    a trust policy file. Every other rule of ``policy`` still applies: its revocations (a
    key it revokes stays revoked whichever name it is given), the approvals and licences it
    requires, its minimum versions. A key the policy already holds is trusted under its own
    name, with its roles and its revocation; the others are named ``--key 1``, ``--key 2``
    (names no policy file can give)."""
    held = policy.key_named_by_hint()
    added = dict(policy.keys)
    names: list[str] = []
    for key in keys:
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        trusted = TrustedKey(f"{ADHOC_SOURCE} {len(names) + 1}", pem, key)
        name = held.get(trusted.hint, trusted.name)
        added.setdefault(name, trusted)
        names.append(name)
    rule = Rule("*", tuple(dict.fromkeys(names)))
    return replace(policy, keys=added, rules=(*policy.rules, rule))
