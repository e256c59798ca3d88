"""Several models side by side on the same rows, and a gate against a baseline.

Every model given to ``packager benchmark`` is measured by :mod:`packager.build.benchmark`
with the same data and settings; here their figures become one leaderboard. Quality
differences against the first entry carry a paired bootstrap interval (same rows); the
gate checks the candidate (the first model, run by onnxruntime) against the baseline
with the noise-aware rules of :mod:`packager.core.benchstats`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from packager.build.benchmark import (
    LATENCY_HEADER,
    EngineFigures,
    Report,
    bytes_text,
    latency_cells,
    machine_line,
)
from packager.core.benchstats import (
    Interval,
    Limit,
    Verdict,
    drop_verdict,
    paired_difference,
    ratio_interval,
    ratio_verdict,
)
from packager.errors import UsageError

PRIMARY = {
    "classification": "accuracy",
    "regression": "mae",
    "anomaly": "outlierF1",
    "clustering": "adjustedRand",
}
# Ratio limits: what each measures on an engine's figures.
_PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}


@dataclass(frozen=True)
class Entry:
    """One row of the leaderboard: a model run by one engine."""

    label: str
    report: Report
    figures: EngineFigures

    @property
    def size(self) -> int:
        return int(self.report.sizes.get("onnx", 0))


@dataclass(frozen=True)
class Difference:
    """``metric`` of ``label`` minus that of the first entry, with its interval."""

    label: str
    metric: str
    interval: Interval


@dataclass(frozen=True)
class Leaderboard:
    """Entries in the order given (the first is the reference of the differences), the
    differences, and the verdicts of the gate (empty without a baseline)."""

    task: str
    rows: int
    batch_rows: int
    target: str | None
    entries: tuple[Entry, ...]
    differences: tuple[Difference, ...]
    verdicts: tuple[Verdict, ...]
    machine: Mapping[str, Any]
    candidate: str | None = None
    baseline: str | None = None

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.failed)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "task": self.task,
            "rows": self.rows,
            "batchRows": self.batch_rows,
            "machine": dict(self.machine),
            "models": [
                {"label": e.label, "model": e.report.model, "sizeBytes": e.size}
                | e.figures.to_json()
                for e in self.entries
            ],
            "differences": [
                {
                    "model": d.label,
                    "against": self.entries[0].label,
                    "metric": d.metric,
                    "difference": d.interval.value,
                    "low": d.interval.low,
                    "high": d.interval.high,
                }
                for d in self.differences
            ],
        }
        if self.target is not None:
            doc["target"] = self.target
        if self.baseline is not None:
            doc["gate"] = {
                "candidate": self.candidate,
                "baseline": self.baseline,
                "passed": not self.failed,
                "limits": [_verdict_json(v) for v in self.verdicts],
            }
        return doc

    def table(self) -> str:
        """The leaderboard as aligned text lines, then differences, gate and machine."""
        quality = sorted({k for e in self.entries for k in e.figures.quality})
        header = ["model", *LATENCY_HEADER, "rows/s", "size", "peak RSS", *quality]
        rows = [header] + [_row(e, quality) for e in self.entries]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            f"{len(self.entries)} models ({self.task}): {self.rows} rows, batch of "
            f"{self.batch_rows}" + (f", target {self.target!r}" if self.target else "")
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        for d in self.differences:
            i = d.interval
            lines.append(
                f"{d.metric} of {d.label} - {self.entries[0].label}: {i.value:+.4g} "
                f"(95% interval {i.low:+.4g} to {i.high:+.4g})"
            )
        if self.baseline is not None:
            state = "FAILED" if self.failed else "passed"
            lines.append(f"gate {state}: {self.candidate} against {self.baseline}")
            lines += [("  FAIL " if v.failed else "  ok   ") + v.message for v in self.verdicts]
        lines.append(machine_line(self.machine))
        return "\n".join(lines)


def _row(e: Entry, quality: Sequence[str]) -> list[str]:
    f = e.figures
    row = [
        e.label,
        *latency_cells(f),
        f"{f.throughput:.4g}",
        bytes_text(e.size),
        "-" if f.peak_rss_bytes is None else bytes_text(f.peak_rss_bytes),
    ]
    return row + [f"{f.quality[k]:.4g}" if k in f.quality else "-" for k in quality]


def _verdict_json(v: Verdict) -> dict[str, Any]:
    return {
        "metric": v.limit.metric,
        "kind": v.limit.kind,
        "bound": v.limit.bound,
        "baseline": v.baseline,
        "candidate": v.candidate,
        "observed": v.observed.value,
        "low": v.observed.low,
        "high": v.observed.high,
        "passed": not v.failed,
    }


def entries_of(report: Report) -> list[Entry]:
    """A report's engines as entries, labelled by the model (and the engine's framework
    when the report has more than one)."""
    if len(report.engines) == 1:
        return [Entry(report.model, report, report.engines[0])]
    return [Entry(f"{report.model} [{e.engine.split()[0]}]", report, e) for e in report.engines]


def leaderboard(
    reports: Sequence[Report],
    *,
    baseline: Report | None = None,
    limits: Sequence[Limit] = (),
) -> Leaderboard:
    """Reports of the same data as one leaderboard; with ``baseline``, the gate's verdict
    on ``limits`` for the first report's onnxruntime engine (its last) against the
    baseline's.

    Raises:
        UsageError: the reports are of different tasks or rows, or a limit names a
            metric the models do not have.
    """
    every = [*reports, *([] if baseline is None else [baseline])]
    first = every[0]
    if any(r.task != first.task or r.rows != first.rows for r in every):
        tasks = ", ".join(f"{r.model}: {r.task}, {r.rows} rows" for r in every)
        raise UsageError(f"models of different tasks or rows cannot be compared ({tasks})")
    entries = [e for r in every for e in entries_of(r)]
    verdicts: tuple[Verdict, ...] = ()
    if baseline is not None:
        verdicts = tuple(
            gate(first.engines[-1], baseline.engines[-1], first, baseline, limit, first.task)
            for limit in limits
        )
    elif limits:
        raise UsageError("--max-drop and --max-ratio need --baseline")
    return Leaderboard(
        task=first.task,
        rows=first.rows,
        batch_rows=first.batch_rows,
        target=first.target,
        entries=tuple(entries),
        differences=_differences(entries, first.task),
        verdicts=verdicts,
        machine=first.machine,
        candidate=None if baseline is None else first.model,
        baseline=None if baseline is None else baseline.model,
    )


def _differences(entries: Sequence[Entry], task: str) -> tuple[Difference, ...]:
    reference = entries[0].figures.answers
    metric = PRIMARY.get(task)
    if reference is None or metric is None:
        return ()
    found = []
    for e in entries[1:]:
        answers = e.figures.answers
        if answers is None:
            continue
        interval = paired_difference(reference, answers, task, metric)
        if interval is not None:
            found.append(Difference(e.label, metric, interval))
    return tuple(found)


RATIO_METRICS = (
    *(f"latency_{p}" for p in _PERCENTILES),
    *(f"batch_latency_{p}" for p in _PERCENTILES),
    "size",
)


def _ratio_input(metric: str, f: EngineFigures, r: Report) -> tuple[np.ndarray, float | None]:
    """What a ratio limit compares: call durations and the percentile, or a size."""
    if metric == "size":
        return np.array([float(r.sizes.get("onnx", 0))]), None
    shape, _, p = metric.rpartition("_")
    latency = f.batch if shape == "batch_latency" else f.one_row
    return latency.durations_us, _PERCENTILES[p]


def gate(
    candidate: EngineFigures,
    baseline: EngineFigures,
    candidate_report: Report,
    baseline_report: Report,
    limit: Limit,
    task: str,
) -> Verdict:
    """One limit's verdict: a quality drop on the same rows (paired bootstrap), or a
    ratio of latency percentiles (bootstrap over each set of calls) or of sizes.

    Raises:
        UsageError: the limit names a metric the models do not have.
    """
    if limit.kind == "drop":
        if candidate.answers is None or baseline.answers is None:
            raise UsageError(f"{limit.text} needs --target: quality needs the true answers")
        interval = paired_difference(baseline.answers, candidate.answers, task, limit.metric)
        if interval is None:
            known = ", ".join(sorted(set(candidate.quality) & set(baseline.quality)))
            raise UsageError(f"{limit.text}: no such quality metric here; there are {known}")
        return drop_verdict(
            limit, interval, baseline.quality[limit.metric], candidate.quality[limit.metric]
        )
    if limit.metric not in RATIO_METRICS:
        raise UsageError(f"{limit.text}: ratio limits are on {', '.join(RATIO_METRICS)}")
    base, q = _ratio_input(limit.metric, baseline, baseline_report)
    cand, _ = _ratio_input(limit.metric, candidate, candidate_report)
    if q is None:
        value = float(cand[0] / base[0])
        return ratio_verdict(limit, Interval(value, value, value), float(base[0]), float(cand[0]))

    def statistic(d: np.ndarray) -> float:
        return float(np.percentile(d, q))

    return ratio_verdict(
        limit, ratio_interval(base, cand, statistic), statistic(base), statistic(cand)
    )
