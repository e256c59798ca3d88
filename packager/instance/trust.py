"""Finding, reading and editing the trust policy file (trust.toml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from packager._io.fs import atomic_write
from packager.core.approval import check_role
from packager.core.policy import (
    ApprovalRule,
    LicenseRule,
    Rule,
    TrustedKey,
    TrustPolicy,
    adhoc_policy,
    check_key_name,
    load_pem_public_key,
    parse_policy,
    render_policy,
)
from packager.core.x509 import Identity, TrustedCA, load_ca_certificate
from packager.errors import UsageError

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
) -> TrustPolicy:
    """The policy an install (or verify, pull, mirror) uses: ``--key`` files if given,
    else the trust policy file. ``refusing`` ends the message when there is neither.

    Raises:
        UsageError: no key and no policy (fail closed), or an unreadable policy.
    """
    if key_paths:
        from packager._io.keys import load_public_key

        return adhoc_policy([load_public_key(p) for p in key_paths])
    path = policy_path(home=home, explicit=trust_file)
    if path is None:
        raise UsageError(
            "no trusted keys: run `packager trust add-key NAME cosign.pub` "
            f"(or pass --key cosign.pub); {refusing}"
        )
    return read_policy(path)


def _load_or_empty(path: Path) -> TrustPolicy:
    return read_policy(path) if path.exists() else TrustPolicy({}, (), {}, str(path))


def _write(path: Path, policy: TrustPolicy) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render_policy(policy).encode(), mode=0o644)


def add_key(
    path: Path, name: str, pub: Path, *, models: str | None = "*", roles: Sequence[str] = ()
) -> TrustPolicy:
    """Add (or replace) key ``name`` from a PEM public key file, trusted to sign ``models``
    (None: none) and to approve in ``roles`` (added to those it holds).

    Raises:
        UsageError: bad name, role or key file (not a key packager verifies with: the
            message names its type or curve), or the name is already a different key.
    """
    check_key_name(name)
    for role in roles:
        check_role(role)
    try:
        pem = pub.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {pub}: {e.strerror}") from e
    policy = _load_or_empty(path)
    held = policy.keys[name].roles if name in policy.keys else ()
    key = TrustedKey(
        name, pem, load_pem_public_key(pem, where=str(pub)), roles=tuple(sorted({*held, *roles}))
    )
    if name in policy.cas:
        raise UsageError(f"{path} already has a CA named {name!r}; pick another name")
    existing = policy.keys.get(name)
    if name in policy.unusable or (existing is not None and existing.hint != key.hint):
        raise UsageError(f"{path} already has a different key named {name!r}; pick another name")
    keys = {**policy.keys, name: key}
    rules = list(policy.rules)
    if models is not None and Rule(models, (name,)) not in rules:
        rules.append(Rule(models, (name,)))
    updated = replace(policy, keys=keys, rules=tuple(rules))
    _write(path, updated)
    return updated


def add_ca(
    path: Path, name: str, certificate: Path, *, models: str = "*", identities: Sequence[str] = ()
) -> TrustPolicy:
    """Add (or replace) CA ``name`` from a PEM CA certificate file, trusted to certify
    signers of ``models`` whose certificate matches one of ``identities`` (none: any).

    Raises:
        UsageError: bad name, certificate file or identity, or the name is already a key
            or a different CA.
    """
    check_key_name(name)
    try:
        pem = certificate.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {certificate}: {e.strerror}") from e
    parsed = tuple(Identity.parse(i) for i in identities)
    ca = TrustedCA(name, pem, load_ca_certificate(pem, where=str(certificate)), parsed)
    policy = _load_or_empty(path)
    if name in policy.keys or name in policy.unusable:
        raise UsageError(f"{path} already has a key named {name!r}; pick another name")
    existing = policy.cas.get(name)
    if existing is not None and existing.fingerprint != ca.fingerprint:
        raise UsageError(f"{path} already has a different CA named {name!r}; pick another name")
    rules = list(policy.rules)
    if Rule(models, (), (name,)) not in rules:
        rules.append(Rule(models, (), (name,)))
    updated = replace(policy, cas={**policy.cas, name: ca}, rules=tuple(rules))
    _write(path, updated)
    return updated


def revoke_key(path: Path, name: str) -> TrustPolicy:
    """Mark key or CA ``name`` revoked: it is refused even where a rule lists it.

    Raises:
        UsageError: no such key or CA.
    """
    policy = _load_or_empty(path)
    if name in policy.cas:
        updated = replace(policy, cas={**policy.cas, name: replace(policy.cas[name], revoked=True)})
    elif name in policy.unusable:
        unusable = {**policy.unusable, name: replace(policy.unusable[name], revoked=True)}
        updated = replace(policy, unusable=unusable)
    elif name in policy.keys:
        updated = replace(
            policy, keys={**policy.keys, name: replace(policy.keys[name], revoked=True)}
        )
    else:
        raise UsageError(f"{path} has no key or CA named {name!r}; see `packager trust list`")
    _write(path, updated)
    return updated


def require_approvals(path: Path, models: str, requirements: Sequence[str]) -> ApprovalRule:
    """Require, for models matching ``models``, the approvals ``requirements`` name
    (``ROLE`` or ``ROLE=COUNT``), replacing an earlier rule for the same glob.

    Raises:
        UsageError: a malformed role or count.
    """
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
    _write(path, replace(policy, approvals=(*kept, rule)))
    return rule


def allow_licenses(
    path: Path, models: str, licenses: Sequence[str], *, training_data: bool = False
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
    _write(path, replace(policy, licenses=(*kept, rule)))
    return rule


def set_minimum(path: Path, model: str, version: str) -> TrustPolicy:
    """Never install ``model`` below ``version`` on this instance."""
    from packager.core.manifest import check_name, check_version

    policy = _load_or_empty(path)
    minimum = {**policy.minimum, check_name(model): check_version(version)}
    updated = replace(policy, minimum=minimum)
    _write(path, updated)
    return updated
