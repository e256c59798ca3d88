"""A leaderboard as the files CI systems show: JUnit XML, OpenMetrics text, a PNG chart.

JUnit XML has one test case per gate limit (a failure when the limit is exceeded beyond
the noise); OpenMetrics text carries every figure of every model, labelled by model and
engine, and one 0/1 sample per limit. GitLab shows both in merge requests
(``artifacts:reports:junit`` and ``artifacts:reports:metrics``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from packager.build.leaderboard import PRIMARY, Leaderboard
from packager.core.benchrecord import History

SUITE = "packager benchmark gate"


def junit_xml(board: Leaderboard) -> bytes:
    """One ``testsuite`` with a ``testcase`` per limit; an exceeded limit is a ``failure``
    whose message says which metric failed by how much."""
    failures = len(board.failed)
    suite = ET.Element(
        "testsuite",
        name=SUITE,
        tests=str(len(board.verdicts)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for v in board.verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"benchmark.{board.candidate}",
            name=f"{v.limit.text} against {board.baseline}",
            time="0",
        )
        if v.failed:
            failure = ET.SubElement(case, "failure", message=v.message, type="LimitExceeded")
            failure.text = v.message
        else:
            ET.SubElement(case, "system-out").text = v.message
    suites = ET.Element(
        "testsuites", name=SUITE, tests=str(len(board.verdicts)), failures=str(failures)
    )
    suites.append(suite)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def openmetrics(board: Leaderboard) -> str:
    """The leaderboard as OpenMetrics text (gauges), ending with ``# EOF``."""
    lines: list[str] = []
    families: dict[str, list[str]] = {}
    for name, labels, value in _samples(board):
        families.setdefault(name, []).append(f"{name}{{{_labels(labels)}}} {_number(value)}")
    for name, samples in families.items():
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"# HELP {name} {_HELP[name]}")
        lines += samples
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


_HELP = {
    "packager_benchmark_quality": "Task metric on the labelled rows (metric label).",
    "packager_benchmark_latency_seconds": "Latency of one call (shape: one_row or batch).",
    "packager_benchmark_latency_iqr_seconds": "Interquartile range of the call latencies.",
    "packager_benchmark_throughput_rows_per_second": "Rows per second at the batch median.",
    "packager_benchmark_model_size_bytes": "ONNX graph and weights on disk.",
    "packager_benchmark_load_seconds": "Time to load the model.",
    "packager_benchmark_peak_rss_bytes": "Process peak resident memory while measured.",
    "packager_benchmark_gate_passed": "1 when the limit holds (beyond noise), else 0.",
    "packager_benchmark_gate_observed": "Observed drop or ratio of the limit's metric.",
}


def _samples(board: Leaderboard) -> Iterator[tuple[str, dict[str, str], float]]:
    for e in board.entries:
        f = e.figures
        ids = {"model": e.label, "engine": f.engine}
        for metric, value in sorted(f.quality.items()):
            yield "packager_benchmark_quality", {**ids, "metric": metric}, value
        for shape, latency in (("one_row", f.one_row), ("batch", f.batch)):
            for percentile, us in (("50", latency.p50_us), ("95", latency.p95_us)):
                yield (
                    "packager_benchmark_latency_seconds",
                    {**ids, "shape": shape, "percentile": percentile},
                    us / 1e6,
                )
            yield (
                "packager_benchmark_latency_seconds",
                {**ids, "shape": shape, "percentile": "99"},
                latency.p99_us / 1e6,
            )
            yield (
                "packager_benchmark_latency_iqr_seconds",
                {**ids, "shape": shape},
                (latency.iqr_us / 1e6),
            )
        yield "packager_benchmark_throughput_rows_per_second", ids, f.throughput
        yield "packager_benchmark_model_size_bytes", ids, float(e.size)
        if f.load_ms is not None:
            yield "packager_benchmark_load_seconds", ids, f.load_ms / 1000
        if f.peak_rss_bytes is not None:
            yield "packager_benchmark_peak_rss_bytes", ids, float(f.peak_rss_bytes)
    for v in board.verdicts:
        ids = {"metric": v.limit.metric, "kind": v.limit.kind}
        yield "packager_benchmark_gate_passed", ids, 0.0 if v.failed else 1.0
        yield "packager_benchmark_gate_observed", ids, v.observed.value


_ESCAPE = re.compile(r'[\\"\n]')


def _labels(labels: dict[str, str]) -> str:
    def escape(text: str) -> str:
        return _ESCAPE.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group()], text)

    return ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items())


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def write_leaderboard_chart(board: Leaderboard, path: Path) -> None:
    """One figure read at a glance: each model's quality (the task's main metric) against
    its one-row median latency, the bar across the point spanning the interquartile
    range; without a target, model size stands in for quality.

    Raises:
        UsageError: matplotlib is not installed, or the file cannot be written.
    """
    from packager.build.benchmark import pyplot, save_figure

    plt = pyplot()
    metric = PRIMARY.get(board.task, "")
    has_quality = all(metric in e.figures.quality for e in board.entries)
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for e in board.entries:
        f = e.figures
        y = f.quality[metric] if has_quality else e.size
        half = f.one_row.iqr_us / 2
        ax.errorbar([f.one_row.p50_us], [y], xerr=[[half], [half]], fmt="o", capsize=4)
        ax.annotate(e.label, (f.one_row.p50_us, y), textcoords="offset points", xytext=(6, 6))
    ax.set_xscale("log")
    ax.set_xlabel("one-row median latency, microseconds (log scale)")
    better = "lower" if metric == "mae" else "higher"
    ax.set_ylabel(f"{metric} ({better} is better)" if has_quality else "ONNX size, bytes")
    ax.set_title(f"{board.rows} rows: quality against latency")
    values = [e.figures.one_row.p50_us for e in board.entries]
    ax.set_xlim(min(values) / 2, max(values) * 2 if np.isfinite(max(values)) else None)
    save_figure(plt, figure, path)


def write_history_chart(past: History, path: Path) -> None:
    """Quality and one-row median latency of each verified result, version by version.

    Raises:
        UsageError: matplotlib is not installed, or the file cannot be written.
    """
    from packager.build.benchmark import pyplot, save_figure

    plt = pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    labels = [f"{p.version}\n{p.measured:%m-%d %H:%M}" for p in past.points]
    x = list(range(len(labels)))
    top.plot(x, [np.nan if p.quality is None else p.quality for p in past.points], "o-")
    top.set_ylabel(past.metric or "quality")
    top.set_title(f"{past.name}: benchmark results by version")
    bottom.plot(x, [np.nan if p.p50_us is None else p.p50_us for p in past.points], "o-")
    bottom.set_ylabel("one-row median, microseconds")
    bottom.set_xticks(x, labels, fontsize=7)
    save_figure(plt, figure, path)
