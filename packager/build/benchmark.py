"""Benchmarks: quality on labelled data, latency and size, for the original model and onnxruntime.

Quality is accuracy for classifiers and MAE/RMSE for regressors, measured on a
table whose ``target`` column holds the true answers. Latency is the median and
95th percentile of repeated calls, for one row and for a batch, after a
warm-up; onnxruntime's intra-op thread count is recorded with its figures.

On the build side (a model file or estimator) the original framework is
measured too, through :class:`packager.build.convert.Original`; on the instance (a
bundle directory or an installed model) only onnxruntime is, and nothing here
imports more than numpy and onnxruntime. The chart needs matplotlib
(``onnx-packager[plot]``), imported only to draw it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from packager._io.table import Table, to_feeds
from packager.build.convert.base import install_hint
from packager.build.options import BenchmarkData, ConvertOptions, Settings
from packager.core.benchstats import Truth, label_text, metrics, summarize
from packager.core.manifest import TensorSpec
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.build.convert import Conversion
    from packager.runtime import Model

MIN_RUNS = 10
MAX_RUNS = 2000
WARMUP_RUNS = 3
# Adaptive repetitions: every CHECK_EVERY calls, stop once there are STABLE_RUNS and the
# median's standard error is within STABLE_MEDIAN of it (else the budget decides).
CHECK_EVERY = 100
STABLE_RUNS = 200
STABLE_MEDIAN = 0.005


@dataclass(frozen=True)
class Latency:
    """Wall time of one call, in microseconds, over ``runs`` calls (warm-up excluded):
    percentiles and the interquartile range ``iqr_us``. ``durations_us`` keeps every
    measured call for confidence intervals; it is not part of the JSON."""

    p50_us: float
    p95_us: float
    runs: int
    p99_us: float = 0.0
    iqr_us: float = 0.0
    durations_us: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)

    @classmethod
    def of(cls, durations_ns: Sequence[int]) -> Latency:
        """The percentiles and spread of call durations measured in nanoseconds."""
        microseconds = np.asarray(durations_ns, dtype=np.float64) / 1000.0
        s = summarize(microseconds)
        return cls(s.p50_us, s.p95_us, s.runs, s.p99_us, s.iqr_us, microseconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "p50Us": round(self.p50_us, 1),
            "p95Us": round(self.p95_us, 1),
            "p99Us": round(self.p99_us, 1),
            "iqrUs": round(self.iqr_us, 1),
            "runs": self.runs,
        }


@dataclass(frozen=True)
class EngineFigures:
    """One engine's figures. ``threads`` is onnxruntime's intra-op thread count (None
    for the original framework); ``quality`` is empty without a target column.
    ``load_ms`` is the time to load the model (None when it was loaded elsewhere);
    ``peak_rss_bytes`` the process's peak resident memory while the engine was measured
    (None where the system cannot tell); ``throughput`` rows per second at the batch
    median. ``answers`` holds the predictions and the truth for comparisons (not JSON)."""

    engine: str
    threads: int | None
    one_row: Latency
    batch: Latency
    quality: Mapping[str, float]
    throughput: float = 0.0
    load_ms: float | None = None
    peak_rss_bytes: int | None = None
    answers: Truth | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "engine": self.engine,
            "oneRow": self.one_row.to_json(),
            "batch": self.batch.to_json(),
            "rowsPerSecond": round(self.throughput, 1),
        }
        if self.threads is not None:
            doc["threads"] = self.threads
        if self.load_ms is not None:
            doc["loadMs"] = round(self.load_ms, 2)
        if self.peak_rss_bytes is not None:
            doc["peakRssBytes"] = self.peak_rss_bytes
        doc.update({k: float(v) for k, v in self.quality.items()})
        return doc


@dataclass(frozen=True)
class Report:
    """A benchmark: what was measured, on what data, and each engine's figures.

    ``agreement`` compares the engines with each other (label agreement for
    classifiers, max abs diff of the predictions for regressors); ``sizes``
    are bytes on disk (``onnx``: graph and weights; ``original``: the model
    file, when there was one).
    """

    model: str
    task: str
    rows: int
    batch_rows: int
    target: str | None
    engines: tuple[EngineFigures, ...]
    sizes: Mapping[str, int]
    agreement: Mapping[str, float] = field(default_factory=dict)
    machine: Mapping[str, Any] = field(default_factory=dict)
    slower: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "model": self.model,
            "task": self.task,
            "rows": self.rows,
            "batchRows": self.batch_rows,
            "engines": [e.to_json() for e in self.engines],
            "sizes": dict(self.sizes),
        }
        if self.machine:
            doc["machine"] = dict(self.machine)
        if self.slower:
            doc["warnings"] = list(self.slower)
        if self.target is not None:
            doc["target"] = self.target
        doc.update({k: float(v) for k, v in self.agreement.items()})
        return doc

    def table(self) -> str:
        """The report as aligned text lines."""
        quality_keys = sorted({k for e in self.engines for k in e.quality})
        header = ["engine", "threads", *LATENCY_HEADER, "p99", "rows/s", *quality_keys]
        rows = [header]
        for e in self.engines:
            row = [
                e.engine,
                "-" if e.threads is None else str(e.threads),
                *latency_cells(e),
                us_text(e.batch.p99_us),
                f"{e.throughput:.4g}",
            ]
            row += [f"{e.quality[k]:.4g}" if k in e.quality else "-" for k in quality_keys]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            f"{self.model} ({self.task}): {self.rows} rows, batch of {self.batch_rows}"
            + (f", target {self.target!r}" if self.target else ", no target column")
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        sizes = ", ".join(f"{k} {bytes_text(v)}" for k, v in sorted(self.sizes.items()))
        extra = ", ".join(
            f"{k} {v:.1%}" if k == "labelAgreement" else f"{k} {v:.3g}"
            for k, v in sorted(self.agreement.items())
        )
        lines.append(f"sizes: {sizes}" + (f"; {extra}" if extra else ""))
        if self.machine:
            lines.append(machine_line(self.machine))
        return "\n".join(lines)


@dataclass(frozen=True)
class Engine:
    """Something to measure: ``prepare`` (untimed) turns ONNX feeds into its input,
    ``run`` is the timed call, ``outputs`` gives answers keyed like the ONNX outputs."""

    name: str
    threads: int | None
    prepare: Callable[[Mapping[str, np.ndarray]], Any]
    run: Callable[[Any], Any]
    outputs: Callable[[Any], Mapping[str, np.ndarray]]
    load_ms: float | None = None


def split_target(data: Table, target: str | None) -> tuple[Table, np.ndarray | None]:
    """The feature columns and the target column (None without one).

    Raises:
        UsageError: the target column is not in the table, or is its only column.
    """
    if target is None:
        return data, None
    if target not in data.columns:
        raise UsageError(
            f"the data has no column {target!r}; its columns are {', '.join(data.columns)}"
        )
    if len(data.columns) == 1:
        raise UsageError(f"the data has only the target column {target!r}")
    index = data.columns.index(target)
    features = Table(
        data.columns[:index] + data.columns[index + 1 :],
        data.values[:index] + data.values[index + 1 :],
        data.named,
    )
    return features, data.values[index]


def benchmark_conversion(conversion: Conversion, bench: BenchmarkData) -> Report:
    """Benchmark a converted model (build side) on ``bench``: the original, when there is
    one, and onnxruntime.

    Raises:
        UsageError: the data does not fit the model, or the target column is
            missing or not comparable with the model's answers.
        ConversionError: onnxruntime cannot load the model.
    """
    import onnxruntime

    from packager.build.convert.onnxfile import make_session, save_onnx

    data, target, settings = bench.data, bench.target, bench.settings
    engines = []
    if conversion.original is not None:
        original = conversion.original
        engines.append(
            Engine(original.framework, None, original.prepare, original.predict, original.outputs)
        )
    start = time.perf_counter()
    session = make_session(conversion.model, threads=settings.threads)
    load_ms = (time.perf_counter() - start) * 1000
    engine = _onnxruntime_engine(session, str(onnxruntime.__version__), settings.threads)
    engines.append(replace(engine, load_ms=load_ms))
    with tempfile.TemporaryDirectory(prefix="packager-size-") as tmp:
        written = save_onnx(
            conversion.model, Path(tmp), "model.onnx", external_data=conversion.external_data
        )
        onnx_size = sum((Path(tmp) / n).stat().st_size for n in ("model.onnx", *written))
    sizes = {"onnx": onnx_size}
    if bench.original_size is not None:
        sizes["original"] = bench.original_size
    return run_benchmark(
        model=conversion.source["estimator"],
        engines=engines,
        inputs=conversion.inputs,
        task=conversion.task,
        label_outputs=conversion.label_outputs,
        data=data,
        target=target,
        settings=settings,
        sizes=sizes,
    )


def benchmark_model(
    model: Model,
    data: Table,
    *,
    target: str | None,
    settings: Settings | None = None,
    load_ms: float | None = None,
) -> Report:
    """Benchmark a bundle or installed model with onnxruntime alone (instance side).

    ``model`` should have been opened with ``threads=settings.threads``, taking
    ``load_ms`` milliseconds when the caller measured it.

    Raises:
        UsageError: the data does not fit the model, or the target column is
            missing or not comparable with the model's answers.
    """
    from packager.runtime import runtime_version

    settings = settings or Settings()
    manifest = model.manifest
    validation = manifest.validation
    engine = Engine(
        f"onnxruntime {runtime_version()}",
        settings.threads,
        dict,
        model.run,
        model.run,
        load_ms,
    )
    weights = {manifest.model.path} | {f.path for f in manifest.files if f.role == "weights"}
    return run_benchmark(
        model=manifest.ref,
        engines=[engine],
        inputs=manifest.model.inputs,
        task=validation.task or "unknown",
        label_outputs=validation.label_outputs or (),
        data=data,
        target=target,
        settings=settings,
        sizes={"onnx": sum(f.size for f in manifest.files if f.path in weights)},
    )


def _onnxruntime_engine(session: Any, version: str, threads: int) -> Engine:
    names = [o.name for o in session.get_outputs()]

    def outputs(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(names, dict(feeds))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    return Engine(
        f"onnxruntime {version}",
        threads,
        dict,
        lambda feeds: session.run(names, feeds),
        outputs,
    )


def run_benchmark(
    *,
    model: str,
    engines: Sequence[Engine],
    inputs: Sequence[TensorSpec],
    task: str,
    label_outputs: Sequence[str],
    data: Table,
    target: str | None,
    settings: Settings,
    sizes: Mapping[str, int],
) -> Report:
    """Measure every engine on ``data``.

    Raises:
        UsageError: the data does not fit the inputs, or the target column is
            not comparable with the answers.
    """
    features, truth = split_target(data, target)
    feeds = to_feeds(features, inputs)
    rows = features.rows
    batch_rows = min(rows, settings.batch_rows)
    one = {k: v[:1] for k, v in feeds.items()}
    batch = {k: v[:batch_rows] for k, v in feeds.items()}
    figures = []
    predictions: list[np.ndarray] = []
    kind = task
    for engine in engines:
        _reset_peak_memory()
        answers = engine.outputs(engine.prepare(feeds))
        kind, predicted = _predictions(answers, task, label_outputs)
        predictions.append(predicted)
        truth_of = None if truth is None else _truth(kind, predicted, answers, truth, target or "")
        batch_latency = _time(engine.run, engine.prepare(batch), settings.budget_seconds)
        figures.append(
            EngineFigures(
                engine=engine.name,
                threads=engine.threads,
                one_row=_time(engine.run, engine.prepare(one), settings.budget_seconds),
                batch=batch_latency,
                quality={} if truth_of is None else metrics(kind, truth_of),
                throughput=batch_rows / (batch_latency.p50_us / 1e6),
                load_ms=engine.load_ms,
                peak_rss_bytes=_peak_memory(),
                answers=truth_of,
            )
        )
    return Report(
        model=model,
        task=kind,
        rows=rows,
        batch_rows=batch_rows,
        target=target,
        engines=tuple(figures),
        sizes=dict(sizes),
        agreement=_agreement(kind, predictions),
        machine=machine(settings.threads),
    )


def _agreement(kind: str, predictions: Sequence[np.ndarray]) -> dict[str, float]:
    """How the first engine's predictions (the original's) compare with the last's
    (onnxruntime's): label agreement, or the largest difference; nothing for one engine."""
    if len(predictions) < 2:
        return {}
    first, last = predictions[0], predictions[-1]
    if kind != "regression":
        return {"labelAgreement": float(np.mean(label_text(first) == label_text(last)))}
    return {"maxAbsDiff": float(np.max(np.abs(first - last))) if first.size else 0.0}


def _predictions(
    answers: Mapping[str, np.ndarray], task: str, label_outputs: Sequence[str]
) -> tuple[str, np.ndarray]:
    """(the kind of figures, one prediction per row) from a model's outputs: labels for
    classification, clustering and anomaly, else values (regression)."""
    if label_outputs and label_outputs[0] in answers:
        kind = task if task in ("clustering", "anomaly") else "classification"
        return kind, np.asarray(answers[label_outputs[0]]).reshape(-1)
    values = np.asarray(next(iter(answers.values())))
    if task == "classification" or (
        task != "regression" and values.ndim == 2 and values.shape[1] > 1
    ):
        # Class scores without a label output (e.g. a network's logits): the argmax is the class.
        return "classification", np.argmax(values.reshape(len(values), -1), axis=1)
    if values.ndim > 1 and int(np.prod(values.shape[1:])) != 1:
        raise UsageError(
            f"the model answers {values.shape[1:]} values per row; a regression benchmark needs one"
        )
    return "regression", values.reshape(-1).astype(np.float64)


def _truth(
    kind: str,
    predicted: np.ndarray,
    answers: Mapping[str, np.ndarray],
    truth: np.ndarray,
    target: str,
) -> Truth:
    """The answers and the truth for the task metrics, class probabilities included when
    one output holds a score per class whose order the labels establish."""
    if kind == "regression":
        if truth.dtype.kind not in "fiu":
            raise UsageError(f"target column {target!r} holds text; a regression needs numbers")
        return Truth(predicted, truth.astype(np.float64))
    if kind != "classification":
        return Truth(predicted, truth)
    scores, classes = _class_scores(predicted, answers, truth)
    return Truth(predicted, truth, scores, classes)


def _class_scores(
    predicted: np.ndarray, answers: Mapping[str, np.ndarray], truth: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(scores, classes) when an output has one score per class and the class order is
    the sorted order of the labels (as scikit-learn, XGBoost and LightGBM keep it), proven
    by every predicted label being its row's highest score; else (None, None)."""
    texts = np.unique(np.concatenate([label_text(predicted), label_text(truth)]))
    if all(_is_whole(t) for t in texts):
        texts = np.array(sorted(texts, key=int))
    for values in answers.values():
        scores = np.asarray(values)
        if scores.ndim != 2 or scores.dtype.kind != "f" or scores.shape[1] != len(texts):
            continue
        if len(texts) > 1 and np.array_equal(
            texts[np.argmax(scores, axis=1)], label_text(predicted)
        ):
            return scores, texts
    return None, None


def _is_whole(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _time(call: Callable[[Any], Any], argument: Any, budget: float) -> Latency:
    """Time ``call(argument)`` after :data:`WARMUP_RUNS` untimed calls: at least
    :data:`MIN_RUNS`, then until the median is stable (:func:`_stable`), the ``budget``
    seconds are spent, or :data:`MAX_RUNS` calls were made."""
    for _ in range(WARMUP_RUNS):
        call(argument)
    durations: list[int] = []
    deadline = time.perf_counter() + budget
    while len(durations) < MAX_RUNS and (
        len(durations) < MIN_RUNS or time.perf_counter() < deadline
    ):
        start = time.perf_counter_ns()
        call(argument)
        durations.append(time.perf_counter_ns() - start)
        if len(durations) % CHECK_EVERY == 0 and _stable(durations):
            break
    return Latency.of(durations)


def _stable(durations_ns: Sequence[int]) -> bool:
    """Whether the median is known to within :data:`STABLE_MEDIAN` of itself: its standard
    error, estimated from the interquartile range (1.2533 sigma / sqrt(n), sigma = IQR /
    1.349), is that small, and there are enough calls for a 99th percentile."""
    if len(durations_ns) < STABLE_RUNS:
        return False
    p25, p50, p75 = np.percentile(durations_ns, [25, 50, 75])
    error = 1.2533 * (p75 - p25) / 1.349 / np.sqrt(len(durations_ns))
    return bool(error <= STABLE_MEDIAN * p50)


def _reset_peak_memory() -> None:
    """Reset the process's peak resident memory (Linux: /proc/self/clear_refs, 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory() -> int | None:
    """The process's peak resident memory in bytes since the last reset (Linux: VmHWM)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def machine(threads: int) -> dict[str, Any]:
    """Where figures were measured: CPU model, cores (and those this process may use),
    onnxruntime's intra-op threads, the onnxruntime, numpy and Python versions, the OS."""
    import onnxruntime

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "usableCores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        "threads": threads,
        "onnxruntime": str(onnxruntime.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_line(m: Mapping[str, Any]) -> str:
    """The machine as one line of text."""
    return (
        f"machine: {m.get('cpu')}, {m.get('usableCores')}/{m.get('cores')} cores, "
        f"{m.get('threads')} onnxruntime threads, onnxruntime {m.get('onnxruntime')}, "
        f"{m.get('system')}"
    )


LATENCY_HEADER = ("load", "1 row p50", "p95", "p99", "batch p50", "p95")
"""The columns of :func:`latency_cells`, shared by the benchmark and the leaderboard."""


def latency_cells(f: EngineFigures) -> list[str]:
    """An engine's load time, one-row median (with its spread), p95 and p99, and batch
    median and p95, as text: the columns of :data:`LATENCY_HEADER`."""
    return [
        "-" if f.load_ms is None else f"{f.load_ms:.1f} ms",
        spread(f.one_row),
        us_text(f.one_row.p95_us),
        us_text(f.one_row.p99_us),
        spread(f.batch),
        us_text(f.batch.p95_us),
    ]


def spread(latency: Latency) -> str:
    """A median with its interquartile range, e.g. "120 us ±8"."""
    return f"{us_text(latency.p50_us)} ±{us_text(latency.iqr_us).split()[0]}"


def us_text(value: float) -> str:
    return f"{value:.0f} us" if value < 10_000 else f"{value / 1000:.1f} ms"


def bytes_text(value: int) -> str:
    if value < 1024:
        return f"{value} B"
    if value < 1 << 20:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1 << 20):.1f} MiB"


def write_chart(report: Report, path: Path) -> None:
    """Draw the report as a PNG: latency per engine (median, with the 95th percentile
    marked) for one row and for the batch, and quality when there was a target.

    Raises:
        UsageError: matplotlib is not installed (``pip install 'onnx-packager[plot]'``),
            or the file cannot be written.
    """
    plt = pyplot()
    quality_keys = sorted({k for e in report.engines for k in e.quality})
    panels = 2 + (1 if quality_keys else 0)
    figure, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4), squeeze=False)
    _latency_panel(axes[0][0], report, "one_row", "1 row")
    _latency_panel(axes[0][1], report, "batch", f"batch of {report.batch_rows}")
    if quality_keys:
        _quality_panel(axes[0][2], report, quality_keys)
    figure.suptitle(f"{report.model} — {report.rows} rows", fontsize=10)
    save_figure(plt, figure, path)


def save_figure(plt: Any, figure: Any, path: Path) -> None:
    """Write ``figure`` as a PNG and close it.

    Raises:
        UsageError: the file cannot be written.
    """
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    finally:
        plt.close(figure)


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers; only files
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError(
            f"--chart needs matplotlib, which is not installed: {install_hint('plot')}"
        ) from e
    return plt


def _latency_panel(ax: Any, report: Report, attr: str, title: str) -> None:
    """Bars of each engine's median latency, its 95th percentile marked."""
    names = [e.engine for e in report.engines]
    positions = np.arange(len(names))
    p50 = [getattr(e, attr).p50_us for e in report.engines]
    p95 = [getattr(e, attr).p95_us for e in report.engines]
    ax.bar(positions, p50, color="#4c72b0", label="median")
    ax.scatter(positions, p95, color="#c44e52", marker="_", s=400, label="95th percentile")
    ax.set_xticks(positions, names, rotation=15, ha="right", fontsize=8)
    # Engines differ by orders of magnitude (a forest: milliseconds against microseconds).
    ax.set_yscale("log")
    ax.set_ylabel("microseconds per call (log scale)")
    ax.set_title(f"latency, {title}")
    ax.legend(fontsize=8)


def _quality_panel(ax: Any, report: Report, quality_keys: Sequence[str]) -> None:
    """Grouped bars of each engine's quality figures on the target column."""
    names = [e.engine for e in report.engines]
    positions = np.arange(len(names))
    width = 0.8 / len(quality_keys)
    for i, key in enumerate(quality_keys):
        values = [e.quality.get(key, float("nan")) for e in report.engines]
        ax.bar(positions + i * width, values, width, label=key)
    ax.set_xticks(
        positions + width * (len(quality_keys) - 1) / 2,
        names,
        rotation=15,
        ha="right",
        fontsize=8,
    )
    ax.set_title(f"quality on {report.target!r}")
    ax.legend(fontsize=8)


def benchmark_reference(
    ref: str,
    data: Table | None,
    *,
    target: str | None,
    settings: Settings | None = None,
    conversion: ConvertOptions | None = None,
) -> Report:
    """Benchmark what ``ref`` names: a model file (converted here, on the build side),
    or a bundle directory (onnxruntime only; an installed model is its directory).

    A bundle directory's signature is not checked; its graph is still checked
    against its manifest before onnxruntime loads it. Without ``data``, a bundle runs
    on its test vectors; its latency is compared with the figures its manifest
    recorded at packaging (``Report.slower``).

    Raises:
        UsageError: bad data or target, no data for a model file, or ``ref`` names nothing.
        ConversionError, ParityError: a model file cannot be converted faithfully.
        IncompatibleModelError: onnxruntime cannot run the model.
        TamperedError: the bundle's graph does not match its manifest.
        SmokeTestError: the bundle's test vectors cannot be read.
    """
    settings = settings or Settings()
    path = Path(ref)
    if path.is_dir():
        return _benchmark_bundle(path, data, target, settings)
    if path.is_file():
        from packager.build.convert import Options, convert, load_model_file

        if data is None:
            raise UsageError(f"{ref} is a model file: give --data to benchmark it on")
        features, _ = split_target(data, target)
        bench = BenchmarkData(data, target, settings, original_size=path.stat().st_size)
        model = load_model_file(path)
        options = Options.of(conversion)
        if "torch" not in {cls.__module__.partition(".")[0] for cls in type(model).__mro__}:
            # Side by side with PyTorch modules: their --task and --input-shape are theirs.
            options = replace(options, task=None, input_shape=None)
        return benchmark_conversion(convert(model, features, options), bench)
    raise UsageError(f"{ref} is neither a model file nor a bundle directory")


def _benchmark_bundle(
    path: Path, data: Table | None, target: str | None, settings: Settings
) -> Report:
    from packager._io.bundledir import read_manifest_unverified
    from packager.runtime import Model, check_compatible

    manifest = read_manifest_unverified(path)
    check_compatible(manifest)
    start = time.perf_counter()
    model = Model(path, manifest, threads=settings.threads)
    load_ms = (time.perf_counter() - start) * 1000
    if data is None:
        data = _vectors_table(path / manifest.validation.testvectors, manifest.model.inputs)
    report = benchmark_model(model, data, target=target, settings=settings, load_ms=load_ms)
    recorded = (manifest.metrics or {}).get("benchmark")
    return replace(report, slower=slower_than_recorded(report, recorded))


def _vectors_table(path: Path, inputs: Sequence[TensorSpec]) -> Table:
    """A bundle's test vector inputs as a table :func:`to_feeds` turns back into them."""
    from packager._io.testvectors import read_testvectors

    feeds, _ = read_testvectors(path)
    if len(inputs) == 1 and inputs[0].name in feeds:
        values = feeds[inputs[0].name]
        flat = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
        columns = tuple(f"x{i}" for i in range(flat.shape[1]))
        return Table(columns, tuple(_column(flat[:, i]) for i in range(flat.shape[1])), False)
    names = tuple(spec.name for spec in inputs if spec.name in feeds)
    return Table(
        names, tuple(_column(feeds[n].reshape(len(feeds[n]), -1)[:, 0]) for n in names), True
    )


def _column(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    return values.astype(str)


# An instance this many times slower than where the model was packaged gets a warning.
SLOWER_FACTOR = 2.0


def slower_than_recorded(report: Report, recorded: Any) -> tuple[str, ...]:
    """Warnings where ``report``'s onnxruntime medians are more than :data:`SLOWER_FACTOR`
    times those ``recorded`` at packaging (a manifest's ``metrics.benchmark``): one row
    always, the batch when it had as many rows. Unreadable records give no warning."""
    engine = _recorded_onnxruntime(recorded)
    if engine is None or not report.engines:
        return ()
    local = report.engines[-1]
    shapes = [("one-row", "oneRow", local.one_row)]
    if recorded.get("batchRows") == report.batch_rows:
        shapes.append((f"{report.batch_rows}-row batch", "batch", local.batch))
    warnings = []
    for label, key, latency in shapes:
        there = engine.get(key, {}).get("p50Us") if isinstance(engine.get(key), dict) else None
        if isinstance(there, int | float) and there > 0:
            factor = latency.p50_us / there
            if factor > SLOWER_FACTOR:
                warnings.append(
                    f"{report.model}: {label} median {us_text(latency.p50_us)} here, "
                    f"{us_text(there)} where it was packaged ({factor:.1f}x slower; "
                    f"{local.threads} onnxruntime threads here, {engine.get('threads')} there"
                    + _where(recorded)
                    + ")"
                )
    return tuple(warnings)


def _recorded_onnxruntime(recorded: Any) -> dict[str, Any] | None:
    if not isinstance(recorded, dict) or not isinstance(recorded.get("engines"), list):
        return None
    for engine in recorded["engines"]:
        if isinstance(engine, dict) and str(engine.get("engine", "")).startswith("onnxruntime"):
            return engine
    return None


def _where(recorded: dict[str, Any]) -> str:
    there = recorded.get("machine")
    if isinstance(there, dict) and isinstance(there.get("cpu"), str):
        return f"; measured there on {there['cpu']}"
    return ""
