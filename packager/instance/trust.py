"""Finding, reading and editing the trust policy file (trust.toml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from packager._io.fs import atomic_write
from packager.core.policy import (
    ApprovalRule,
    LicenseRule,
    Rule,
    TrustedKey,
    TrustPolicy,
    UnusableKey,
    adhoc_policy,
    check_key_name,
    load_pem_public_key,
    parse_policy,
    render_policy,
    with_keys,
)
from packager.core.verify import check_not_revoked
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.core.x509 import TrustedCA
    from packager.instance.store import Store

SYSTEM_POLICY = Path("/etc/packager/trust.toml")
FILENAME = "trust.toml"


def policy_path(*, home: Path, explicit: Path | None = None) -> Path | None:
    """``explicit``, else $PACKAGER_HOME/trust.toml, else /etc/packager/trust.toml, if it exists."""
    if explicit is not None:
        return explicit
    for candidate in (home / FILENAME, SYSTEM_POLICY):
        if candidate.is_file():
            return candidate
    return None


def read_policy(path: Path) -> TrustPolicy:
    """Raises UsageError when the file cannot be read or is not a valid policy."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read trust policy {path}: {e.strerror}") from e
    return parse_policy(text, source=str(path))


def resolve_policy(
    *,
    home: Path,
    trust_file: Path | None = None,
    key_paths: Sequence[Path] = (),
    refusing: str = "refusing to install unverified models",
    keys_only: bool = False,
) -> TrustPolicy:
    """The policy an install (or verify, pull, mirror) uses: the trust policy file, with
    the ``--key`` files added as keys trusted for every model (its revocations, required
    approvals, licence rules and minimums still apply to them); the keys alone when there
    is no policy file, or with ``keys_only`` (``verify``: did one of these keys sign?).
    ``refusing`` ends the message when there is neither.

    Raises:
        UsageError: no key and no policy (fail closed), an unreadable policy or key file.
    """
    from packager._io.keys import load_public_key

    keys = [load_public_key(p) for p in key_paths]
    if keys and keys_only:
        return adhoc_policy(keys, [str(p) for p in key_paths])
    path = policy_path(home=home, explicit=trust_file)
    if path is None:
        if keys:
            return adhoc_policy(keys, [str(p) for p in key_paths])
        raise UsageError(
            "no trusted keys: run `packager trust add-key NAME cosign.pub` "
            f"(or pass --key cosign.pub); {refusing}"
        )
    policy = read_policy(path)
    return with_keys(policy, keys) if keys else policy


def revoked_in_policy(
    signer: str | None, *, home: Path, trust_file: Path | None = None
) -> tuple[str, str] | None:
    """(key name, policy file) when the trust policy that applies without ``--key`` revokes
    the key of hint ``signer``; None when it does not, or there is no readable policy."""
    from packager.core.verify import revoked_name

    path = policy_path(home=home, explicit=trust_file)
    if path is None:
        return None
    try:
        name = revoked_name(signer, read_policy(path))
    except UsageError:
        return None
    return (name, str(path)) if name is not None else None


def _load_or_empty(path: Path) -> TrustPolicy:
    return read_policy(path) if path.exists() else TrustPolicy({}, (), {}, str(path))


def _write(
    path: Path, policy: TrustPolicy, change: str, details: dict[str, str], store: Store | None
) -> None:
    """Write the policy, then (with a ``store``) record the change in its audit log: the
    detail is ``field=value`` pairs, the file first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render_policy(policy).encode(), mode=0o644)
    if store is not None:
        fields = {"file": str(path.absolute()), **details}
        store.audit(
            action="trust",
            outcome=change,
            now=datetime.now(UTC),
            name=details.get("model"),
            version=details.get("minimum"),
            detail=" ".join(f"{k}={v}" for k, v in fields.items()),
        )


def add_key(
    path: Path,
    name: str,
    pub: Path,
    *,
    models: str | None = "*",
    roles: Sequence[str] = (),
    store: Store | None = None,
) -> TrustPolicy:
    """Add (or replace) key ``name`` from a PEM public key file, trusted to sign ``models``
    (None: none) and to approve in ``roles`` (added to those it holds).

    The key is stored as packager serialises the parsed key (PEM SubjectPublicKeyInfo),
    never as the file's bytes: text around the PEM block does not reach the policy. A
    revoked key stays revoked. With ``store``, the change is written to its audit log.

    Raises:
        UsageError: bad name, role or key file (not a key packager verifies with: the
            message names its type or curve), the name is already a different key, or the
            key is revoked (under any name).
    """
    check_key_name(name)
    from packager.core.approval import check_role  # here: most policies name no role

    for role in roles:
        check_role(role)
    try:
        data = pub.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {pub}: {e.strerror}") from e
    public_key = load_pem_public_key(data, where=str(pub))
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    policy = _load_or_empty(path)
    held = policy.keys[name].roles if name in policy.keys else ()
    key = TrustedKey(name, pem, public_key, roles=tuple(sorted({*held, *roles})))
    if name in policy.cas:
        raise UsageError(f"{path} already has a CA named {name!r}; pick another name")
    existing = policy.keys.get(name)
    if name in policy.unusable or (existing is not None and existing.hint != key.hint):
        raise UsageError(f"{path} already has a different key named {name!r}; pick another name")
    check_not_revoked(policy, hint=key.hint)
    keys = {**policy.keys, name: key}
    rules = list(policy.rules)
    if models is not None and Rule(models, (name,)) not in rules:
        rules.append(Rule(models, (name,)))
    updated = replace(policy, keys=keys, rules=tuple(rules))
    _write(
        path,
        updated,
        "add-key",
        _key_details(key, models),
        store,
    )
    return updated


def _key_details(key: TrustedKey, models: str | None) -> dict[str, str]:
    """The audit fields of a key added: which, for which models, in which roles."""
    details = {"key": key.name, "sha256": key.hint}
    if models is not None:
        details["models"] = models
    if key.roles:
        details["roles"] = ",".join(key.roles)
    return details


def add_ca(
    path: Path,
    name: str,
    certificate: Path,
    *,
    models: str = "*",
    identities: Sequence[str] = (),
    store: Store | None = None,
) -> TrustPolicy:
    """Add (or replace) CA ``name`` from a PEM CA certificate file, trusted to certify
    signers of ``models`` whose certificate matches one of ``identities`` (none: any).
    Stored re-serialised from the parsed certificate; a revoked CA stays revoked. With
    ``store``, the change is written to its audit log.

    Raises:
        UsageError: bad name, certificate file or identity, the name is already a key
            or a different CA, or the CA is revoked (under any name).
    """
    check_key_name(name)
    try:
        data = certificate.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {certificate}: {e.strerror}") from e
    from packager.core.x509 import Identity, TrustedCA, load_ca_certificate

    parsed = tuple(Identity.parse(i) for i in identities)
    loaded = load_ca_certificate(data, where=str(certificate))
    pem = loaded.public_bytes(serialization.Encoding.PEM)
    ca = TrustedCA(name, pem, loaded, parsed)
    policy = _load_or_empty(path)
    if name in policy.keys or name in policy.unusable:
        raise UsageError(f"{path} already has a key named {name!r}; pick another name")
    existing = policy.cas.get(name)
    if existing is not None and existing.fingerprint != ca.fingerprint:
        raise UsageError(f"{path} already has a different CA named {name!r}; pick another name")
    check_not_revoked(policy, fingerprint=ca.fingerprint)
    rules = list(policy.rules)
    if Rule(models, (), (name,)) not in rules:
        rules.append(Rule(models, (), (name,)))
    updated = replace(policy, cas={**policy.cas, name: ca}, rules=tuple(rules))
    details = {"ca": name, "sha256": ca.fingerprint, "models": models}
    details.update({"identities": ",".join(identities)} if identities else {})
    _write(path, updated, "add-ca", details, store)
    return updated


def revoke_key(path: Path, name: str, *, store: Store | None = None) -> TrustPolicy:
    """Mark key or CA ``name`` revoked: it is refused even where a rule lists it.

    Raises:
        UsageError: no such key or CA.
    """
    return _set_revoked(path, name, revoked=True, store=store)


def unrevoke_key(path: Path, name: str, *, store: Store | None = None) -> TrustPolicy:
    """Trust revoked key or CA ``name`` again, where the rules list it.

    Raises:
        UsageError: no such key or CA, or it is not revoked.
    """
    return _set_revoked(path, name, revoked=False, store=store)


def _set_revoked(path: Path, name: str, *, revoked: bool, store: Store | None) -> TrustPolicy:
    from packager.core.x509 import TrustedCA  # here: most policies trust keys only

    policy = _load_or_empty(path)
    entry: TrustedKey | TrustedCA | UnusableKey
    if name in policy.cas:
        entry, kind = policy.cas[name], "ca"
    elif name in policy.unusable:
        entry, kind = policy.unusable[name], "key"
    elif name in policy.keys:
        entry, kind = policy.keys[name], "key"
    else:
        raise UsageError(f"{path} has no key or CA named {name!r}; see `packager trust list`")
    if not revoked and not entry.revoked:
        raise UsageError(f"{name!r} is not revoked in {path}; nothing to do")
    changed = replace(entry, revoked=revoked)
    if isinstance(changed, TrustedCA):
        updated = replace(policy, cas={**policy.cas, name: changed})
        sha256 = changed.fingerprint
    elif isinstance(changed, UnusableKey):
        updated = replace(policy, unusable={**policy.unusable, name: changed})
        sha256 = "-"
    else:
        updated = replace(policy, keys={**policy.keys, name: changed})
        sha256 = changed.hint
    change = "revoke" if revoked else "unrevoke"
    _write(path, updated, change, {kind: name, "sha256": sha256}, store)
    return updated


def require_approvals(
    path: Path, models: str, requirements: Sequence[str], *, store: Store | None = None
) -> ApprovalRule:
    """Require, for models matching ``models``, the approvals ``requirements`` name
    (``ROLE`` or ``ROLE=COUNT``), replacing an earlier rule for the same glob.

    Raises:
        UsageError: a malformed role or count.
    """
    from packager.core.approval import check_role  # here: most policies name no role

    require: dict[str, int] = {}
    for text in requirements:
        role, sep, count = text.partition("=")
        check_role(role)
        if sep and not (count.isdigit() and 1 <= int(count) <= 16):
            raise UsageError(f"invalid count in {text!r}: use ROLE=N with N from 1 to 16")
        require[role] = int(count) if sep else 1
    rule = ApprovalRule(models, require)
    policy = _load_or_empty(path)
    kept = tuple(r for r in policy.approvals if r.models != models)
    required = ",".join(f"{role}={count}" for role, count in require.items())
    details = {"models": models, "require": required}
    _write(path, replace(policy, approvals=(*kept, rule)), "require", details, store)
    return rule


def allow_licenses(
    path: Path,
    models: str,
    licenses: Sequence[str],
    *,
    training_data: bool = False,
    store: Store | None = None,
) -> LicenseRule:
    """Install models matching ``models`` only under an SPDX expression ``licenses`` allow
    (and, with ``training_data``, only with every training data file's licence allowed),
    replacing an earlier licence rule for the same glob.

    Raises:
        UsageError: an entry that is not one SPDX licence (or ``LICENCE WITH EXCEPTION``).
    """
    from packager.core.spdx import check_allow_entry

    allow = tuple(dict.fromkeys(check_allow_entry(item) for item in licenses))
    rule = LicenseRule(models, allow, training_data)
    policy = _load_or_empty(path)
    kept = tuple(r for r in policy.licenses if r.models != models)
    details = {"models": models, "allow": ",".join(allow), "trainingData": str(training_data)}
    _write(path, replace(policy, licenses=(*kept, rule)), "allow-licenses", details, store)
    return rule


def set_minimum(path: Path, model: str, version: str, *, store: Store | None = None) -> TrustPolicy:
    """Never install ``model`` below ``version`` on this instance."""
    from packager.core.manifest import check_name, check_version

    policy = _load_or_empty(path)
    minimum = {**policy.minimum, check_name(model): check_version(version)}
    updated = replace(policy, minimum=minimum)
    previous = policy.minimum.get(model, "-")
    details = {"model": model, "minimum": version, "previous": previous}
    _write(path, updated, "minimum", details, store)
    return updated
