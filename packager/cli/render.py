"""All output of the commands: each result has one JSON rendering (``--json``, on stdout)
and one text rendering (results on stdout, notes on stderr unless ``--quiet``).

Only modules needed to print are imported here; result types are for annotations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import click

from packager._io.fs import atomic_write
from packager.cli.options import Context
from packager.core.text import printable
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.build.benchmark import Report
    from packager.core.manifest import Manifest, TensorSpec
    from packager.core.policy import TrustedKey, TrustPolicy
    from packager.distribution.mirror import MirrorReport
    from packager.distribution.promote import Promotion
    from packager.distribution.root import Published as TrustPublished
    from packager.instance.install import InstallResult
    from packager.instance.retention import Pruned
    from packager.instance.status import ModelStatus, Status
    from packager.instance.store import AuditEntry, Installed
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
    else:
        rendering.text(ctx, result)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def line(text: str, *, err: bool = False) -> None:
    """Print one line of text output: what it quotes from registries, bundles or the audit
    log is shown as data (escaped), never as terminal control or a line break."""
    click.echo(printable(text, limit=None), err=err)


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
    }


def _packaged_text(ctx: Context, result: Packaged) -> None:
    validation = result.manifest.validation
    ctx.say(
        f"packaged {result.manifest.ref} -> {result.bundle} "
        f"(max abs diff {validation.max_abs_diff:.3g}, {validation.rows} test vectors)"
    )
    line(str(result.bundle))


PACKAGED = Rendering(_packaged_json, _packaged_text)


VERIFIED: Rendering[Manifest] = Rendering(
    json=lambda manifest: {
        "verified": True,
        "name": manifest.name,
        "version": manifest.version,
        "files": [f.to_dict() for f in manifest.files],
    },
    text=lambda _ctx, manifest: line(
        f"OK: {manifest.ref} verified ({len(manifest.files) + 1} files)"
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
        ("outputs", ", ".join(_tensor(t) for t in manifest.model.outputs)),
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
    line("files:")
    for f in manifest.files:
        line(f"  {f.path:<24} {f.role:<12} {f.size:>12}  sha256:{f.digest.hex[:16]}…")


MANIFEST: Rendering[Manifest] = Rendering(
    json=lambda manifest: manifest.to_dict(), text=_manifest_text
)

BENCHMARK: Rendering[Report] = Rendering(
    json=lambda report: report.to_json(),
    text=lambda _ctx, report: click.echo(report.table()),
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


def _catalog_text(ctx: Context, catalog: Catalog) -> None:
    if not any(catalog.models.values()):
        ctx.say(f"no models in {catalog.location}; publish one with `packager publish BUNDLE`")
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


def _installed_json(result: InstallResult) -> dict[str, Any]:
    smoke, channel = result.smoke_test, result.channel
    return {
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
        line(f"{result.name}@{result.version} is already current -> {result.directory}")
    else:
        line(f"installed {result.name}@{result.version} -> {result.directory}")


INSTALLED = Rendering(_installed_json, _installed_text)


def _updated_text(ctx: Context, report: UpdateReport) -> None:
    if not report.models:
        ctx.say("no model follows a channel; install one with `packager install NAME@CHANNEL`")
    for m in report.models:
        what = {
            "updated": f"{m.previous or '-'} -> {m.version}",
            "current": m.version,
            "refused": str(m.error),
        }[m.status]
        line(f"{m.status:<8} {m.name}@{m.channel}  {what}")


UPDATED: Rendering[UpdateReport] = Rendering(json=lambda r: r.to_json(), text=_updated_text)


def _listed_text(ctx: Context, installed: Sequence[Installed]) -> None:
    if not installed:
        ctx.say("no models installed; run `packager install NAME --key cosign.pub`")
    for i in installed:
        line(f"{'*' if i.current else ' '} {i.name}  {i.version}")


LISTED: Rendering[Sequence[Installed]] = Rendering(
    json=lambda installed: [
        {"name": i.name, "version": i.version, "current": i.current, "path": str(i.directory)}
        for i in installed
    ],
    text=_listed_text,
)


def _status_json(status: Status) -> dict[str, Any]:
    return {"at": status.at.isoformat(), "models": [_model_json(status, m) for m in status.models]}


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
)


def status_openmetrics(status: Status) -> str:
    """``status`` as an OpenMetrics exposition (ending in ``# EOF``)."""
    samples: dict[str, list[str]] = {name: [] for name, _ in _GAUGES}
    for m in status.models:
        _model_samples(samples, m)
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
class RolledBack:
    name: str
    current: str


ROLLED_BACK: Rendering[RolledBack] = Rendering(
    json=lambda r: {"name": r.name, "current": r.current},
    text=lambda _ctx, r: line(f"{r.name} current -> {r.current}"),
)


def removed(ctx: Context, name: str, version: str) -> None:
    ctx.say(f"removed {name}@{version}")


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


AUDIT_LOG: Rendering[Sequence[AuditEntry]] = Rendering(
    json=lambda entries: [e.__dict__ for e in entries], text=_log_text
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
        "keys": [{"name": k.name, "hint": k.hint, "revoked": k.revoked} for k in result.keys],
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
    }


def _policy_text(_ctx: Context, result: Policy) -> None:
    line(f"policy: {result.path}")
    for k in result.keys:
        line(f"key  {k.name:<20} {k.hint[:16]}{'  REVOKED' if k.revoked else ''}")
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


POLICY = Rendering(_policy_json, _policy_text)


def unusable_keys(policy: TrustPolicy) -> None:
    """Warn about each key of ``policy`` that trusts nothing because packager cannot use it."""
    for _, key in sorted(policy.unusable.items()):
        warn(f"key {key.name} is skipped: {key.reason}")


def key_trusted(ctx: Context, path: Path, name: str, models: str) -> None:
    ctx.say(f"{path}: key {name} trusted for models {models!r}")


def ca_trusted(ctx: Context, path: Path, name: str, models: str, identities: Sequence[str]) -> None:
    who = f" for signers {', '.join(identities)}" if identities else " for any signer it certifies"
    ctx.say(f"{path}: CA {name} trusted for models {models!r}{who}")


def key_revoked(ctx: Context, path: Path, name: str) -> None:
    ctx.say(f"{path}: {name} revoked")


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
