"""Output of the distribution commands (publish, search, pull, promote, approve, export,
gc, mirror); the shared helpers are in :mod:`packager.cli.render`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.cli.options import Context
from packager.cli.render import Rendering, line

if TYPE_CHECKING:
    from packager.core.approval import Approval
    from packager.distribution.approve import Approved, Listed
    from packager.distribution.mirror import MirrorReport
    from packager.distribution.promote import Promotion
    from packager.registry.base import Artifact
    from packager.registry.layout import Garbage


MIRRORING_UNVERIFIED = (
    "--no-verify: signatures will NOT be checked; DST will serve whatever SRC holds, "
    "signed or not (digests are still checked)"
)


@dataclass(frozen=True)
class Published:
    artifact: Artifact
    location: str

    @property
    def reference(self) -> str:
        return f"{self.location}/{self.artifact.name}:{self.artifact.version}"


def _published_text(ctx: Context, result: Published) -> None:
    a = result.artifact
    ctx.say(f"published {a.name}@{a.version} to {result.location}")
    line(f"{result.reference}@{a.manifest_digest}")


PUBLISHED: Rendering[Published] = Rendering(
    json=lambda result: {
        "name": result.artifact.name,
        "version": result.artifact.version,
        "digest": str(result.artifact.manifest_digest),
        "reference": result.reference,
    },
    text=_published_text,
)


@dataclass(frozen=True)
class Catalog:
    location: str
    models: dict[str, list[str]]


def _publish_hint(location: str) -> str:
    if location.startswith(("https://", "http://")):  # a static mirror: read-only
        return "publish into the registry directory it serves, then copy that again"
    return f"publish one with `packager publish BUNDLE --registry {location}`"


def _catalog_text(ctx: Context, catalog: Catalog) -> None:
    if not any(catalog.models.values()):
        ctx.say(f"no models in {catalog.location}; {_publish_hint(catalog.location)}")
    for name, versions in catalog.models.items():
        line(f"{name}  {', '.join(versions)}")


CATALOG: Rendering[Catalog] = Rendering(
    json=lambda catalog: {"registry": catalog.location, "models": catalog.models},
    text=_catalog_text,
)

PULLED: Rendering[Path] = Rendering(
    json=lambda bundle: {"bundle": str(bundle)},
    text=lambda _ctx, bundle: line(str(bundle)),
)


def _promotion_text(_ctx: Context, promotion: Promotion) -> None:
    doc = promotion.channel
    line(
        f"{doc.name}@{doc.channel} -> {doc.version}  sequence {doc.sequence}  "
        f"expires {doc.expires.isoformat()}  {doc.manifest_digest}"
    )


PROMOTED: Rendering[Promotion] = Rendering(json=lambda p: p.to_json(), text=_promotion_text)


def approval_json(approval: Approval) -> dict[str, Any]:
    return {
        "name": approval.name,
        "version": approval.version,
        "manifestDigest": str(approval.manifest_digest),
        "role": approval.role,
        "issued": approval.issued.isoformat(),
        "expires": None if approval.expires is None else approval.expires.isoformat(),
        "note": approval.note,
    }


def _approval_line(approval: Approval) -> str:
    until = "no expiry" if approval.expires is None else f"expires {approval.expires.isoformat()}"
    note = f"  note {approval.note!r}" if approval.note else ""
    return (
        f"{approval.name}@{approval.version}  {approval.role}  issued "
        f"{approval.issued.isoformat()}  {until}  {approval.manifest_digest}{note}"
    )


APPROVED: Rendering[Approved] = Rendering(
    json=lambda a: {
        **approval_json(a.approval),
        "key": a.key,
        "tag": a.tag,
        "registry": a.location,
    },
    text=lambda _ctx, a: line(_approval_line(a.approval)),
)


def _revoked_text(_ctx: Context, withdrawn: Sequence[Approval]) -> None:
    for approval in withdrawn:
        line(f"revoked: {_approval_line(approval)}")


APPROVALS_REVOKED: Rendering[Sequence[Approval]] = Rendering(
    json=lambda withdrawn: {"revoked": [approval_json(a) for a in withdrawn]},
    text=_revoked_text,
)


@dataclass(frozen=True)
class Attached:
    location: str
    name: str
    versions: Mapping[str, Sequence[Listed]]


def _attachment_json(item: Listed) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "tag": item.tag,
        "role": item.role,
        "key": item.key,
        "issued": None if item.issued is None else item.issued.isoformat(),
        "expires": None if item.expires is None else item.expires.isoformat(),
        "problem": item.problem,
        "verified": False,
    }


def _attached_text(ctx: Context, attached: Attached) -> None:
    ctx.say(f"documents attached in {attached.location}, as it claims them (not verified)")
    for version, items in attached.versions.items():
        line(f"{attached.name}@{version}" + ("" if items else "  (none)"))
        for item in items:
            if item.problem is not None:
                line(f"  {item.kind:<10} unreadable: {item.problem}")
            elif item.role is not None:
                until = "no expiry" if item.expires is None else f"expires {item.expires:%Y-%m-%d}"
                line(
                    f"  {item.kind:<10} {item.role:<18} key {str(item.key)[:16]}  "
                    f"issued {item.issued:%Y-%m-%d}  {until}"
                )
            else:
                line(f"  {item.kind:<10} {item.tag}")


ATTACHED: Rendering[Attached] = Rendering(
    json=lambda a: {
        "registry": a.location,
        "name": a.name,
        "versions": {v: [_attachment_json(i) for i in items] for v, items in a.versions.items()},
    },
    text=_attached_text,
)


@dataclass(frozen=True)
class Exported:
    archive: Path
    artifacts: Sequence[Artifact]


def _exported_json(result: Exported) -> dict[str, Any]:
    from packager.registry.archive import archive_ref

    return {
        "archive": str(result.archive),
        "models": [
            {
                "name": a.name,
                "version": a.version,
                "digest": str(a.manifest_digest),
                "reference": archive_ref(a.name, a.version),
            }
            for a in result.artifacts
        ],
    }


def _exported_text(ctx: Context, result: Exported) -> None:
    ctx.say(f"wrote {len(result.artifacts)} version(s) to {result.archive}")
    line(str(result.archive))


EXPORTED = Rendering(_exported_json, _exported_text)


def _mirrored_text(ctx: Context, report: MirrorReport) -> None:
    for label, items in (
        ("copied", report.copied),
        ("skipped", report.skipped),
        ("conflict", report.conflicts),
    ):
        for item in items:
            line(f"{label:<8}  {item.name}@{item.version}  {item.destination_digest}")
    for c in report.channels:
        line(f"{c.outcome:<8}  {c.name}@{c.channel}  {c.detail}")
    ctx.say(
        f"{len(report.copied)} copied, {len(report.skipped)} already there, "
        f"{len(report.conflicts)} conflicting"
    )


MIRRORED: Rendering[MirrorReport] = Rendering(json=lambda r: r.to_json(), text=_mirrored_text)


@dataclass(frozen=True)
class Collected:
    garbage: Sequence[Garbage]
    dry_run: bool


def _collected_text(ctx: Context, result: Collected) -> None:
    for g in result.garbage:
        line(f"{g.name}  {g.file}  {g.size}")
    verb = "would remove" if result.dry_run else "removed"
    total = sum(g.size for g in result.garbage)
    ctx.say(f"{verb} {len(result.garbage)} unreferenced blobs ({total} bytes)")


COLLECTED: Rendering[Collected] = Rendering(
    json=lambda r: {
        "dryRun": r.dry_run,
        "removed": [{"name": g.name, "file": g.file, "size": g.size} for g in r.garbage],
        "bytes": sum(g.size for g in r.garbage),
    },
    text=_collected_text,
)
