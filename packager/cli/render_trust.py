"""Output of the trust policy and signed trust documents (`packager trust`, `root`,
`delegate`); the shared helpers are in :mod:`packager.cli.render`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager.cli.options import Context
from packager.cli.render import Rendering, line, warn

if TYPE_CHECKING:
    from packager.core.policy import ApprovalRule, LicenseRule, TrustedKey, TrustPolicy
    from packager.distribution.root import Published as TrustPublished


@dataclass(frozen=True)
class Policy:
    path: Path
    policy: TrustPolicy

    @property
    def keys(self) -> list[TrustedKey]:
        return sorted(self.policy.keys.values(), key=lambda k: k.name)


def _policy_json(result: Policy) -> dict[str, Any]:
    policy = result.policy
    return {
        "policy": str(result.path),
        "keys": [
            {"name": k.name, "hint": k.hint, "revoked": k.revoked, "roles": list(k.roles)}
            for k in result.keys
        ],
        "unusable": [
            {"name": k.name, "revoked": k.revoked, "reason": k.reason}
            for _, k in sorted(policy.unusable.items())
        ],
        "cas": [
            {
                "name": ca.name,
                "subject": ca.certificate.subject.rfc4514_string(),
                "sha256": ca.fingerprint,
                "identities": [str(i) for i in ca.identities],
                "revoked": ca.revoked,
            }
            for ca in sorted(policy.cas.values(), key=lambda c: c.name)
        ],
        "rules": [
            {"models": r.models, "keys": list(r.keys), "cas": list(r.cas)} for r in policy.rules
        ],
        "minimum": dict(policy.minimum),
        "approvals": [{"models": r.models, "require": dict(r.require)} for r in policy.approvals],
        "licenses": [
            {"models": r.models, "allow": list(r.allow), "trainingData": r.training_data}
            for r in policy.licenses
        ],
    }


def _policy_text(_ctx: Context, result: Policy) -> None:
    line(f"policy: {result.path}")
    for k in result.keys:
        roles = f"  roles {', '.join(k.roles)}" if k.roles else ""
        line(f"key  {k.name:<20} {k.hint[:16]}{roles}{'  REVOKED' if k.revoked else ''}")
    for _, u in sorted(result.policy.unusable.items()):
        line(f"key  {u.name:<20} UNUSABLE{'  REVOKED' if u.revoked else ''}  {u.reason}")
    for ca in sorted(result.policy.cas.values(), key=lambda c: c.name):
        who = ", ".join(str(i) for i in ca.identities) or "any identity"
        revoked = "  REVOKED" if ca.revoked else ""
        line(f"ca   {ca.name:<20} {ca.fingerprint[:16]} ({who}){revoked}")
    for r in result.policy.rules:
        line(f"rule {r.models:<20} {', '.join((*r.keys, *r.cas))}")
    for model, version in sorted(result.policy.minimum.items()):
        line(f"min  {model:<20} {version}")
    for lic in result.policy.licenses:
        data = " (and training data)" if lic.training_data else ""
        line(f"lic  {lic.models:<20} {', '.join(lic.allow)}{data}")
    for a in result.policy.approvals:
        line(f"need {a.models:<20} {', '.join(f'{n} {role}' for role, n in a.require.items())}")


POLICY = Rendering(_policy_json, _policy_text)


def unusable_keys(policy: TrustPolicy) -> None:
    """Warn about each key of ``policy`` that trusts nothing because packager cannot use it."""
    for _, key in sorted(policy.unusable.items()):
        warn(f"key {key.name} is skipped: {key.reason}")


def key_trusted(
    ctx: Context, path: Path, name: str, models: str | None, roles: Sequence[str] = ()
) -> None:
    if models is not None:
        ctx.say(f"{path}: key {name} trusted for models {models!r}")
    if roles:
        ctx.say(f"{path}: key {name} may approve as {', '.join(roles)}")


def licenses_allowed(ctx: Context, path: Path, rule: LicenseRule) -> None:
    data = " (and training data)" if rule.training_data else ""
    ctx.say(f"{path}: models {rule.models!r} only under {', '.join(rule.allow)}{data}")


def approvals_required(ctx: Context, path: Path, rule: ApprovalRule) -> None:
    wanted = ", ".join(f"{count} {role}" for role, count in rule.require.items())
    ctx.say(f"{path}: models {rule.models!r} need approvals: {wanted}")


def ca_trusted(ctx: Context, path: Path, name: str, models: str, identities: Sequence[str]) -> None:
    who = f" for signers {', '.join(identities)}" if identities else " for any signer it certifies"
    ctx.say(f"{path}: CA {name} trusted for models {models!r}{who}")


def key_revoked(ctx: Context, path: Path, name: str) -> None:
    ctx.say(f"{path}: {name} revoked")


def key_unrevoked(ctx: Context, path: Path, name: str) -> None:
    ctx.say(f"{name} is trusted again in {path}, where its rules allow")


def minimum_set(ctx: Context, path: Path, name: str, version: str) -> None:
    ctx.say(f"{path}: {name} >= {version}")


def _trust_document_text(ctx: Context, result: TrustPublished) -> None:
    data = result.to_json()
    click.echo(data["reference"])
    ctx.say(f"{result.kind} version {result.version}, expires {data['expires']}")


TRUST_PUBLISHED: Rendering[TrustPublished] = Rendering(
    json=lambda p: p.to_json(), text=_trust_document_text
)


def root_written(ctx: Context, path: Path, version: int, signatures: int) -> None:
    ctx.say(f"{path}: root version {version}, {signatures} signature(s)")


def root_pinned(ctx: Context, version: int) -> None:
    ctx.say(f"root version {version} pinned: installs now follow its delegations")
