"""All output of the commands: each result has one JSON rendering (``--json``, on stdout)
and one text rendering (results on stdout, notes on stderr unless ``--quiet``).

Only modules needed to print are imported here; result types are for annotations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import click

from packager._io.fs import atomic_write
from packager.cli.options import Context, now
from packager.core.expiry import EXPIRY_WARNING, days_left, expires_soon, expiry_note
from packager.core.text import printable
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.build.benchmark import Report
    from packager.build.leaderboard import Leaderboard
    from packager.build.resign import Resigned
    from packager.core.approval import Approval
    from packager.core.benchrecord import History
    from packager.core.manifest import Manifest, TensorSpec
    from packager.core.policy import ApprovalRule, LicenseRule, TrustedKey, TrustPolicy
    from packager.core.provenance import ProvenanceSummary
    from packager.distribution.approve import Approved, Listed
    from packager.distribution.mirror import MirrorReport
    from packager.distribution.promote import Promotion
    from packager.distribution.root import Published as TrustPublished
    from packager.instance.install import InstallResult, RolledBack
    from packager.instance.retention import Pruned
    from packager.instance.serve.served import Loaded
    from packager.instance.status import ModelStatus, Status
    from packager.instance.store import AuditEntry, Followed, Installed
    from packager.instance.update import UpdateReport
    from packager.registry.base import Artifact
    from packager.registry.layout import Garbage

T = TypeVar("T")


@dataclass(frozen=True)
class Rendering(Generic[T]):
    """How one kind of result is shown: as JSON data, or as text through the context."""

    json: Callable[[T], Any]
    text: Callable[[Context, T], None]


def show(ctx: Context, rendering: Rendering[T], result: T, *, as_json: bool) -> None:
    if as_json:
        emit(rendering.json(result))
        ctx.json_written = True
    else:
        rendering.text(ctx, result)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def line(text: str, *, err: bool = False) -> None:
    """Print one line of text output: what it quotes from registries, bundles or the audit
    log is shown as data (escaped), never as terminal control or a line break."""
    click.echo(printable(text, limit=None), err=err)


def line_err(text: str) -> None:
    """One line on stderr, even with --quiet (a server's events)."""
    line(f"packager: {text}", err=True)


def warn(message: str) -> None:
    """A warning the user must see: on stderr even with --quiet."""
    line(f"packager: WARNING: {message}", err=True)


SKIPPING_VERIFICATION = (
    "--insecure-skip-verify: the model's signature will NOT be checked; anyone who can "
    "write to the registry can choose what runs here"
)
MIRRORING_UNVERIFIED = (
    "--no-verify: signatures will NOT be checked; DST will serve whatever SRC holds, "
    "signed or not (digests are still checked)"
)


# Build side


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


KEYS: Rendering[KeyPair] = Rendering(
    json=lambda keys: {"privateKey": str(keys.private), "publicKey": str(keys.public)},
    text=lambda ctx, keys: ctx.say(
        f"wrote {keys.private} (keep it secret) and {keys.public} (give it to installers)"
    ),
)


@dataclass(frozen=True)
class Packaged:
    bundle: Path
    manifest: Manifest


def _packaged_json(result: Packaged) -> dict[str, Any]:
    return {
        "bundle": str(result.bundle),
        "name": result.manifest.name,
        "version": result.manifest.version,
        "validation": result.manifest.validation.to_dict(),
        "metrics": dict(result.manifest.metrics or {}),
        "outputs": [t.name for t in result.manifest.model.outputs],
    }


def _packaged_text(ctx: Context, result: Packaged) -> None:
    validation = result.manifest.validation
    ctx.say(
        f"packaged {result.manifest.ref} -> {result.bundle} "
        f"(max abs diff {validation.max_abs_diff:.3g}, {validation.rows} test vectors)"
    )
    if _scores(result.manifest):
        warn(f"{result.manifest.ref}: {SCORES_NOTE}")
    line(str(result.bundle))


# A classifier without predict_proba: what its second output is (packager.build.convert).
SCORES_NOTE = "output 'scores' holds decision scores, not probabilities"


def _scores(manifest: Manifest) -> bool:
    return any(t.name == "scores" for t in manifest.model.outputs)


def bundle_files(manifest: Manifest) -> int:
    """Files in a bundle directory: those manifest.json lists, itself and model.sig."""
    return len(manifest.files) + 2


PACKAGED = Rendering(_packaged_json, _packaged_text)


def _resigned_json(result: Resigned) -> dict[str, Any]:
    return {
        "bundle": str(result.bundle),
        "name": result.manifest.name,
        "version": result.manifest.version,
        "signer": result.signer,
        "serialization": "files" if result.shard_size is None else "shards",
        "shardSize": result.shard_size,
    }


def _resigned_text(ctx: Context, result: Resigned) -> None:
    how = "whole files" if result.shard_size is None else f"shards of {result.shard_size} bytes"
    ctx.say(f"signed {result.manifest.ref} again with key {result.signer[:16]} ({how})")
    line(str(result.bundle))


RESIGNED = Rendering(_resigned_json, _resigned_text)


VERIFIED: Rendering[Manifest] = Rendering(
    json=lambda manifest: {
        "verified": True,
        "name": manifest.name,
        "version": manifest.version,
        "files": [f.to_dict() for f in manifest.files],
    },
    text=lambda _ctx, manifest: line(
        f"OK: {manifest.ref} verified ({bundle_files(manifest)} files)"
    ),
)


def _tensor(spec: TensorSpec) -> str:
    return f"{spec.name}:{spec.dtype}{list(spec.shape or [])}"


def _manifest_text(_ctx: Context, manifest: Manifest) -> None:
    source = manifest.model.source
    val = manifest.validation
    rows = [
        ("name", manifest.name),
        ("version", manifest.version),
        ("created", manifest.created),
        ("source", f"{source.framework} {source.framework_version}: {source.estimator}"),
        ("converter", f"{source.converter} {source.converter_version}"),
        ("opsets", ", ".join(f"{k}={v}" for k, v in sorted(manifest.model.opsets.items()))),
        ("onnxruntime", f">= {manifest.runtime.onnxruntime}"),
        ("inputs", ", ".join(_tensor(t) for t in manifest.model.inputs)),
        (
            "outputs",
            ", ".join(_tensor(t) for t in manifest.model.outputs)
            + (f" ({SCORES_NOTE})" if _scores(manifest) else ""),
        ),
        (
            "validation",
            f"{val.rows} rows, max abs diff {val.max_abs_diff:.3g}, "
            f"rtol {val.rtol:g}, atol {val.atol:g}",
        ),
    ]
    if manifest.license:
        rows.append(("license", manifest.license))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        line(f"{k:<{width}}  {v}")
    line(f"files: {bundle_files(manifest)} (manifest.json, model.sig and these)")
    for f in manifest.files:
        line(f"  {f.path:<24} {f.role:<12} {f.size:>12}  sha256:{f.digest.hex[:16]}…")


MANIFEST: Rendering[Manifest] = Rendering(
    json=lambda manifest: manifest.to_dict(), text=_manifest_text
)


def _provenance_text(_ctx: Context, summary: ProvenanceSummary) -> None:
    line("SLSA provenance (provenance.intoto.json)")
    line(f"  builder      {summary.builder}")
    if summary.invocation:
        line(f"  invocation   {summary.invocation}")
    line(f"  built        {summary.built or '-'}")
    for name, digest in summary.subjects:
        line(f"  subject      {name}  {digest}")
    for key, value in sorted(summary.parameters.items()):
        line(f"  parameter    {key} = {json.dumps(value, sort_keys=True)}")
    for name, ref in summary.dependencies:
        line(f"  depends on   {name}  {ref}")
    line("CycloneDX ML-BOM (sbom.cdx.json)")
    for key, value in summary.model:
        line(f"  {key:<12} {value}")
    for kind, name, version, licences in summary.components:
        line(f"  component    {kind:<8} {name} {version}  licence {licences}")
    for metric, value in summary.metrics:
        line(f"  metric       {metric} = {value}")


PROVENANCE: Rendering[ProvenanceSummary] = Rendering(
    json=lambda s: {
        "builder": s.builder,
        "invocation": s.invocation,
        "built": s.built,
        "subjects": dict(s.subjects),
        "parameters": dict(s.parameters),
        "dependencies": [{"name": n, "ref": r} for n, r in s.dependencies],
        "model": dict(s.model),
        "components": [
            {"type": t, "name": n, "version": v, "licence": lic} for t, n, v, lic in s.components
        ],
        "metrics": dict(s.metrics),
    },
    text=_provenance_text,
)

BENCHMARK: Rendering[Report] = Rendering(
    json=lambda report: report.to_json(),
    text=lambda _ctx, report: click.echo(report.table()),
)


def _lines(_ctx: Context, result: History) -> None:
    for text in result.table().splitlines():
        line(text)


HISTORY: Rendering[History] = Rendering(json=lambda past: past.to_json(), text=_lines)
LEADERBOARD: Rendering[Leaderboard] = Rendering(
    json=lambda board: board.to_json(),
    text=lambda _ctx, board: click.echo(board.table()),
)


# Distribution side


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


# Instance side


def unfollowed(name: str, channel: str | None, version: str) -> None:
    """Say that a model installed or rolled back by version no longer follows its channel."""
    if channel is not None:
        warn(
            f"{name} no longer follows channel {channel}: `packager update` keeps {version}; "
            f"`packager install {name}@{channel}` to follow it again"
        )


def expiring(followed: dict[str, Followed], now: datetime) -> None:
    """Warn about every followed channel whose document expires within EXPIRY_WARNING
    (an expired one is shown by `list` and reported once by `update`, not warned about)."""
    for name, f in followed.items():
        if f.expires is not None and f.expires > now and expires_soon(f.expires, now):
            warn(
                f"channel {name}@{f.channel} {expiry_note(f.expires, now)} "
                f"({f.expires.isoformat()}; warned {EXPIRY_WARNING.days} days ahead): the "
                "publisher must promote it again before then, or updates will be refused"
            )


def _installed_json(result: InstallResult) -> dict[str, Any]:
    # Deferred like the types above: loaded by the install that produced ``result``.
    from packager.registry.verified import FETCHED, REHASHED, UNCHANGED

    smoke, channel = result.smoke_test, result.channel
    files = None
    if result.sources is not None:
        files = {
            "fetched": list(result.files(FETCHED)),
            "reusedByFingerprint": list(result.files(UNCHANGED)),
            "reusedHashed": list(result.files(REHASHED)),
        }
    return {
        "alreadyCurrent": smoke is None,
        "unfollowed": result.unfollowed,
        "name": result.name,
        "version": result.version,
        "path": str(result.directory),
        "manifestSha256": result.manifest_sha256,
        "previous": result.previous,
        "installed": smoke is not None,
        "testVectors": None if smoke is None else smoke.rows,
        "maxAbsDiff": None if smoke is None else smoke.max_abs_diff,
        "smokeTestSeconds": result.smoke_seconds,
        "smokeTestPeakRss": result.smoke_peak_rss,
        "files": files,
        "channel": None
        if channel is None
        else {
            "channel": channel.channel,
            "sequence": channel.sequence,
            "expires": channel.expires.isoformat(),
        },
    }


def _installed_text(_ctx: Context, result: InstallResult) -> None:
    if result.smoke_test is None:
        line(
            f"{result.name}@{result.version} is already current (nothing installed; --force "
            f"installs it again) -> {result.directory}"
        )
    else:
        line(f"installed {result.name}@{result.version} -> {result.directory}")


INSTALLED = Rendering(_installed_json, _installed_text)


def _updated_text(ctx: Context, report: UpdateReport) -> None:
    if not report.models:
        ctx.say("no model follows a channel; install one with `packager install NAME@CHANNEL`")
    when = now()
    for m in report.models:
        what = {
            "updated": f"{m.previous or '-'} -> {m.version}",
            "current": str(m.version),
            "refused": str(m.error),
            "expired": f"{m.version} (stays current)",
        }[m.status]
        if m.expires is not None and m.status in ("updated", "current"):
            what += f"  ({expiry_note(m.expires, when)})"
        line(f"{m.status:<8} {m.name}@{m.channel}  {what}")


UPDATED: Rendering[UpdateReport] = Rendering(json=lambda r: r.to_json(), text=_updated_text)


@dataclass(frozen=True)
class Listing:
    """Installed versions, the channel each model follows, and the time they are shown at."""

    installed: Sequence[Installed]
    followed: dict[str, Followed]
    now: datetime


def _following(listing: Listing, i: Installed) -> Followed | None:
    return listing.followed.get(i.name) if i.current else None


def _listed_text(ctx: Context, listing: Listing) -> None:
    if not listing.installed:
        ctx.say(
            "no models installed; install one with `packager install NAME --registry REF` "
            "(trusting the keys of `packager trust add-key`, or --key cosign.pub)"
        )
    for i in listing.installed:
        text = f"{'*' if i.current else ' '} {i.name}  {i.version}"
        f = _following(listing, i)
        if f is not None:
            text += f"  follows {f.channel}"
            if f.expires is not None:
                text += f" ({expiry_note(f.expires, listing.now)})"
        line(text)


def _listed_json(listing: Listing) -> list[dict[str, Any]]:
    rows = []
    for i in listing.installed:
        f = _following(listing, i)
        rows.append(
            {
                "name": i.name,
                "version": i.version,
                "current": i.current,
                "path": str(i.directory),
                "channel": None
                if f is None
                else {
                    "channel": f.channel,
                    "expires": None if f.expires is None else f.expires.isoformat(),
                    "daysLeft": None if f.expires is None else days_left(f.expires, listing.now),
                },
            }
        )
    return rows


LISTED: Rendering[Listing] = Rendering(json=_listed_json, text=_listed_text)


ROLLED_BACK: Rendering[RolledBack] = Rendering(
    json=lambda r: {
        "name": r.name,
        "current": r.version,
        "previous": r.previous,
        "unfollowed": r.unfollowed,
    },
    text=lambda _ctx, r: line(f"{r.name} current -> {r.version}"),
)


def _status_json(status: Status) -> dict[str, Any]:
    return {
        "at": status.at.isoformat(),
        "models": [_model_json(status, m) for m in status.models],
        "servers": [
            {
                "pid": s.pid,
                "address": s.address,
                "models": [{"name": m.name, "version": m.version} for m in s.models],
            }
            for s in status.servers
        ],
    }


def _model_json(status: Status, m: ModelStatus) -> dict[str, Any]:
    attempt, refusal = m.last_attempt, m.last_refusal
    days = status.days_left(m)
    return {
        "name": m.name,
        "current": m.current,
        "versions": list(m.versions),
        "pinned": list(m.pinned),
        "channel": m.channel,
        "registry": m.registry,
        "channelExpires": None if m.channel_expires is None else m.channel_expires.isoformat(),
        "daysUntilExpiry": None if days is None else round(days, 2),
        "lastUpdate": None
        if attempt is None
        else {
            "at": attempt.at.isoformat(),
            "outcome": attempt.outcome,
            "version": attempt.version,
            "exitCode": attempt.exit_code,
            "detail": attempt.detail,
        },
        "lastRefusal": None
        if refusal is None
        else {
            "at": refusal.at,
            "action": refusal.action,
            "version": refusal.version,
            "reason": refusal.detail,
        },
        "diskBytes": m.disk_bytes,
        "served": [
            {"address": s.address, "pid": s.pid, "version": v} for s, v in status.served(m.name)
        ],
    }


def _status_text(ctx: Context, status: Status) -> None:
    if not status.models:
        ctx.say("no models on this instance; run `packager install NAME@CHANNEL --key cosign.pub`")
    for m in status.models:
        days = status.days_left(m)
        follows = "by version" if m.channel is None else f"follows {m.channel}"
        expiry = "" if days is None else f", expires in {days:.1f} days"
        line(f"{m.name}  {m.current or '-'}  ({follows}{expiry}; {m.disk_bytes} bytes on disk)")
        if m.last_attempt is not None:
            a = m.last_attempt
            line(f"  last update {a.at.isoformat()}: {a.outcome} {a.detail}".rstrip())
        if m.last_refusal is not None:
            r = m.last_refusal
            line(f"  last refusal {r.at}: {r.action} {r.detail}")
        for server, version in status.served(m.name):
            line(f"  served {version} at {server.address} (pid {server.pid})")


STATUS: Rendering[Status] = Rendering(json=_status_json, text=_status_text)


def show_status(
    ctx: Context, status: Status, *, as_json: bool, openmetrics: bool, output: Path | None
) -> None:
    """Print ``status``, or write it to ``output`` in one rename (a textfile collector
    never reads half a file).

    Raises:
        UsageError: ``output`` cannot be written.
    """
    if output is None and not openmetrics:
        show(ctx, STATUS, status, as_json=as_json)
        return
    if openmetrics:
        text = status_openmetrics(status)
    elif as_json:
        text = json.dumps(_status_json(status), indent=2, sort_keys=True) + "\n"
    else:
        raise UsageError("--output needs --json or --openmetrics")
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        atomic_write(output, text.encode())
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from e
    ctx.say(f"wrote {output}")


# OpenMetrics text for node_exporter's textfile collector, which reads the Prometheus text
# format: gauges only (no info or stateset types) so that both parsers accept the file.
_GAUGES = (
    ("packager_model_info", "Installed model: its current version and the channel it follows."),
    ("packager_model_versions", "Versions of the model installed."),
    ("packager_model_disk_usage_bytes", "Bytes of the model's installed files."),
    ("packager_channel_expiry_timestamp_seconds", "When the followed channel's document expires."),
    ("packager_update_last_timestamp_seconds", "When `packager update` last tried the model."),
    ("packager_update_last_success", "1 when the last update installed or found the version."),
    ("packager_update_last_exit_code", "Exit code of the last update of the model (0: ok)."),
    ("packager_refusal_last_timestamp_seconds", "When the model was last refused, and why."),
    ("packager_served_info", "A running `packager serve`: the model version it answers with."),
)


def status_openmetrics(status: Status) -> str:
    """``status`` as an OpenMetrics exposition (ending in ``# EOF``)."""
    samples: dict[str, list[str]] = {name: [] for name, _ in _GAUGES}
    for m in status.models:
        _model_samples(samples, m)
    for server in status.servers:
        for served in server.models:
            labels = {"model": served.name, "version": served.version, "address": server.address}
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            samples["packager_served_info"].append(f"packager_served_info{{{text}}} 1")
    out: list[str] = []
    for name, help_text in _GAUGES:
        if not samples[name]:
            continue
        out.append(f"# TYPE {name} gauge")
        if name.endswith(("_bytes", "_seconds")):
            out.append(f"# UNIT {name} {name.rsplit('_', 1)[1]}")
        out.append(f"# HELP {name} {help_text}")
        out.extend(samples[name])
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _model_samples(samples: dict[str, list[str]], m: ModelStatus) -> None:
    def add(metric: str, value: float, **labels: str) -> None:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in {"model": m.name, **labels}.items())
        samples[metric].append(f"{metric}{{{text}}} {value!r}")

    if m.current is not None:
        add("packager_model_info", 1, version=m.current, channel=m.channel or "")
    add("packager_model_versions", len(m.versions))
    add("packager_model_disk_usage_bytes", m.disk_bytes)
    if m.channel is not None and m.channel_expires is not None:
        add(
            "packager_channel_expiry_timestamp_seconds",
            m.channel_expires.timestamp(),
            channel=m.channel,
        )
    if m.last_attempt is not None:
        a = m.last_attempt
        add("packager_update_last_timestamp_seconds", a.at.timestamp(), outcome=a.outcome)
        add("packager_update_last_success", int(a.exit_code == 0))
        add("packager_update_last_exit_code", a.exit_code)
    if m.last_refusal is not None:
        r = m.last_refusal
        # The error's class ("ExpiredError"), not its message: labels must stay few.
        kind = _ERROR_KIND.search(r.detail)
        add(
            "packager_refusal_last_timestamp_seconds",
            datetime.fromisoformat(r.at).timestamp(),
            action=r.action,
            reason=kind.group(0) if kind else "other",
        )


_ERROR_KIND = re.compile(r"\b[A-Z][A-Za-z]*Error\b")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _pruned_text(ctx: Context, pruned: Sequence[Pruned]) -> None:
    for p in pruned:
        verb = "would remove" if p.dry_run else "removed"
        gone = ", ".join(p.removed) or "nothing"
        line(f"{p.name}  {verb} {gone}; kept {', '.join(p.kept)}")
    if not pruned:
        ctx.say("no models installed")


PRUNED: Rendering[Sequence[Pruned]] = Rendering(
    json=lambda pruned: [
        {"name": p.name, "removed": list(p.removed), "kept": list(p.kept), "dryRun": p.dry_run}
        for p in pruned
    ],
    text=_pruned_text,
)


@dataclass(frozen=True)
class Removed:
    name: str
    versions: tuple[str, ...]


REMOVED: Rendering[Removed] = Rendering(
    json=lambda r: {"name": r.name, "removed": list(r.versions)},
    text=lambda ctx, r: ctx.say(
        f"removed {', '.join(f'{r.name}@{v}' for v in r.versions) or f'{r.name} (no version)'}"
    ),
)


@dataclass(frozen=True)
class Prediction:
    model: str
    outputs: dict[str, list[Any]]


def _prediction_text(_ctx: Context, prediction: Prediction) -> None:
    data = prediction.outputs
    names = list(data)
    click.echo("\t".join(["row", *(printable(n, limit=None) for n in names)]))
    rows = len(next(iter(data.values()))) if data else 0
    for i in range(rows):
        click.echo("\t".join([str(i), *(json.dumps(data[n][i]) for n in names)]))


PREDICTION: Rendering[Prediction] = Rendering(
    json=lambda p: {"model": p.model, "outputs": p.outputs}, text=_prediction_text
)


def _log_text(_ctx: Context, entries: Sequence[AuditEntry]) -> None:
    for e in entries:
        what = f"{e.name}@{e.version}" if e.version else (e.name or "-")
        line(f"{e.at}  {e.action:<8} {e.outcome:<8} {what}  {e.detail}")


def _log_entry_json(e: AuditEntry) -> dict[str, Any]:
    facts = e.facts
    return {
        "at": e.at,
        "action": e.action,
        "name": e.name,
        "version": e.version,
        "outcome": e.outcome,
        "detail": e.detail,
        "key": facts.key,
        "digest": facts.digest,
        "source": facts.source,
        "channel": facts.channel,
        "sequence": facts.sequence,
        "previous": facts.previous,
    }


AUDIT_LOG: Rendering[Sequence[AuditEntry]] = Rendering(
    json=lambda entries: [_log_entry_json(e) for e in entries], text=_log_text
)


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


def failure(ctx: Context, message: str, exit_code: int) -> int:
    """Report a failure: one line on stderr, and with ``--json`` an object on stdout;
    returns ``exit_code``. Messages quote what registries sent: shown as data, never as
    terminal control."""
    text = printable(message, limit=None)
    click.echo(f"packager: error: {text}", err=True)
    # A command that printed its JSON result and then failed (mirror's conflicts) has
    # said it all on stdout already: one JSON document there, never two.
    if ctx.json_errors and not ctx.json_written:
        emit({"error": text, "exitCode": exit_code})
    return exit_code


def serving(ctx: Context, address: str, loaded: Sequence[Loaded]) -> None:
    """The line ``packager serve`` prints once it listens: where, and which versions."""
    models = ", ".join(f"{m.name}@{m.version}" for m in loaded)
    line(f"serving {models} on {address}")
