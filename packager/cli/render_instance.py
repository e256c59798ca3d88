"""Output of the instance commands (install, update, list, rollback, remove, prune,
predict, serve, log, status); the shared helpers are in :mod:`packager.cli.render`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager._io.fs import atomic_write
from packager.cli.options import Context, now
from packager.cli.render import Rendering, line, show, warn
from packager.core.expiry import EXPIRY_WARNING, days_left, expires_soon, expiry_note
from packager.core.text import printable
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.instance.install import InstallResult, RolledBack
    from packager.instance.retention import Pruned
    from packager.instance.serve.served import Loaded
    from packager.instance.status import ModelStatus, Status
    from packager.instance.store import AuditEntry, Followed, Installed
    from packager.instance.update import UpdateReport


SKIPPING_VERIFICATION = (
    "--insecure-skip-verify: the model's signature will NOT be checked; anyone who can "
    "write to the registry can choose what runs here"
)


def unfollowed(name: str, channel: str | None, version: str) -> None:
    """Say that a model installed or rolled back by version no longer follows its channel."""
    if channel is not None:
        warn(
            f"{name} no longer follows channel {channel}: `packager update` keeps {version}; "
            f"`packager install {name}@{channel}` to follow it again"
        )


def expiring(followed: dict[str, Followed], now: datetime) -> None:
    """Warn about every followed channel whose document expires within EXPIRY_WARNING
    (an expired one is shown by `list` and refused by `update`, not warned about)."""
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
        "daysUntilExpiry": None if days is None else _days_json(days),
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
        expiry = ""
        if m.channel_expires is not None and days is not None:
            # Once expired, as `list` says it ("expired today"), never "in -0.0 days".
            note = expiry_note(m.channel_expires, status.at)
            expiry = f", {note}" if days <= 0 else f", expires in {days:.1f} days"
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


def _days_json(days: float) -> float:
    """``daysUntilExpiry``: hundredths of a day rounded down, so that it is negative exactly
    when the document has expired (never -0.0, never 0.0 once expired)."""
    hundredths = math.floor(days * 100) / 100
    return hundredths if days > 0 else min(hundredths, -0.01)


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
    """``value`` as an OpenMetrics label value. The format escapes only a backslash, a quote
    and a newline, and a parser takes any other line break (a CR in a unix socket's path)
    as the end of the sample: each character that is not printable is first written as a
    visible escape (``\\r``, as :func:`printable` shows it everywhere), then escaped."""
    return printable(value, limit=None).replace("\\", "\\\\").replace('"', '\\"')


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
    """The entry's columns, each of its facts a key of its own beside them."""
    columns = asdict(e)
    facts: dict[str, Any] = columns.pop("facts")
    return columns | facts


AUDIT_LOG: Rendering[Sequence[AuditEntry]] = Rendering(
    json=lambda entries: [_log_entry_json(e) for e in entries], text=_log_text
)


def serving(ctx: Context, address: str, loaded: Sequence[Loaded]) -> None:
    """The line ``packager serve`` prints once it listens: where, and which versions."""
    models = ", ".join(f"{m.name}@{m.version}" for m in loaded)
    line(f"serving {models} on {address}")
