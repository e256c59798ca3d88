"""Benchmark statistics: task metrics, latency summaries, bootstrap intervals, gate decisions.

Pure numpy: answers and durations in, figures and verdicts out. The same rules serve a
leaderboard on the build side and a benchmark on an instance. Every random draw comes
from a generator seeded with :data:`SEED`, so two runs on the same answers give the same
figures and the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from packager.errors import UsageError

SEED = 20240601
RESAMPLES = 1000
CONFIDENCE = 0.95

# Quality metrics where a smaller figure is better; every other quality metric is
# better when larger. Latency, size, memory and load time are always better smaller.
LOWER_IS_BETTER = frozenset({"logLoss", "mae", "rmse"})


@dataclass(frozen=True)
class Truth:
    """What a quality metric is computed from: the answers and the true values of the same
    rows. ``scores`` holds class probabilities (rows x classes, columns in ``classes``
    order) when the model gives them, else None."""

    predicted: np.ndarray
    truth: np.ndarray
    scores: np.ndarray | None = None
    classes: np.ndarray | None = None


def label_text(values: np.ndarray) -> np.ndarray:
    """Labels as text, whole numbers without a decimal point, so 1, 1.0 and "1" agree."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
        if whole.all():
            return values.astype(np.int64).astype(str)
    return values.astype(str)


def classification_metrics(t: Truth) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1; log loss and ROC AUC (one-vs-rest macro
    average for more than two classes) when ``t.scores`` is given."""
    predicted, truth = label_text(t.predicted), label_text(t.truth)
    classes = np.unique(np.concatenate([predicted, truth]))
    recalls, f1s = [], []
    for c in classes:
        tp = float(np.sum((predicted == c) & (truth == c)))
        positives, called = float(np.sum(truth == c)), float(np.sum(predicted == c))
        if positives:
            recalls.append(tp / positives)
        f1s.append(2 * tp / (positives + called) if positives + called else 0.0)
    figures = {
        "accuracy": float(np.mean(predicted == truth)),
        "balancedAccuracy": float(np.mean(recalls)) if recalls else 0.0,
        "macroF1": float(np.mean(f1s)),
    }
    if t.scores is not None and t.classes is not None:
        figures.update(_probability_metrics(t.scores, label_text(t.classes), truth))
    return figures


def _probability_metrics(
    scores: np.ndarray, classes: np.ndarray, truth: np.ndarray
) -> dict[str, float]:
    known = np.isin(truth, classes)
    if not known.all():
        return {}  # a true class the model never gives: no probability for it
    column = np.searchsorted(classes, truth) if _is_sorted(classes) else _index(classes, truth)
    probs = np.clip(scores.astype(np.float64), 1e-15, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    figures = {"logLoss": float(-np.mean(np.log(probs[np.arange(len(truth)), column])))}
    aucs = [
        _auc(scores[:, j], column == j)
        for j in range(len(classes))
        if 0 < np.sum(column == j) < len(truth)
    ]
    if len(classes) == 2 and aucs:
        figures["rocAuc"] = aucs[1] if len(aucs) > 1 else aucs[0]
    elif aucs:
        figures["rocAuc"] = float(np.mean(aucs))
    return figures


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[:-1] <= values[1:]))


def _index(classes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes.tolist())}
    return np.array([position[c] for c in truth.tolist()], dtype=np.int64)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic, ties counted half."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    n_pos = float(np.sum(positive))
    n_neg = float(len(score) - n_pos)
    return float((np.sum(ranks[positive]) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(t: Truth) -> dict[str, float]:
    """MAE, RMSE and R² (R² is 0 when the truth is constant and predicted exactly, else
    negative infinity is avoided by leaving it out)."""
    truth = t.truth.astype(np.float64)
    error = t.predicted.astype(np.float64) - truth
    figures = {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error * error))),
    }
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total > 0:
        figures["r2"] = 1.0 - float(np.sum(error * error)) / total
    return figures


def anomaly_metrics(t: Truth) -> dict[str, float]:
    """Outlier detection against true labels in scikit-learn's convention (-1 outlier,
    1 inlier), at the model's own threshold (its labels): precision, recall and F1 of the
    outliers, and accuracy.

    Raises:
        UsageError: the true labels are not -1 and 1.
    """
    truth, predicted = label_text(t.truth), label_text(t.predicted)
    if not set(np.unique(truth)) <= {"-1", "1"}:
        raise UsageError("an outlier detector's target column holds -1 (outlier) and 1 (inlier)")
    hit = float(np.sum((predicted == "-1") & (truth == "-1")))
    called, actual = float(np.sum(predicted == "-1")), float(np.sum(truth == "-1"))
    precision = hit / called if called else 0.0
    recall = hit / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "outlierPrecision": precision,
        "outlierRecall": recall,
        "outlierF1": f1,
    }


def clustering_metrics(t: Truth) -> dict[str, float]:
    """Cluster labels against true groups: the adjusted Rand index (1 the same partition,
    about 0 a random one), whatever the clusters are numbered."""
    _, a = np.unique(label_text(t.predicted), return_inverse=True)
    _, b = np.unique(label_text(t.truth), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.float64)
    np.add.at(table, (a, b), 1.0)

    def pairs(n: np.ndarray) -> float:
        return float(np.sum(n * (n - 1) / 2))

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = pairs(np.array([float(len(a))]))
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return {"adjustedRand": 1.0}
    return {"adjustedRand": (index - expected) / (maximum - expected)}


_METRICS = {
    "classification": classification_metrics,
    "regression": regression_metrics,
    "anomaly": anomaly_metrics,
    "clustering": clustering_metrics,
}


def metrics(kind: str, t: Truth) -> dict[str, float]:
    """The task metrics of ``kind`` ("classification", "regression", "anomaly" or
    "clustering")."""
    return _METRICS.get(kind, regression_metrics)(t)


@dataclass(frozen=True)
class Summary:
    """Durations of repeated calls in microseconds: percentiles and the interquartile
    range (``iqr_us``, the spread of the middle half)."""

    p50_us: float
    p95_us: float
    p99_us: float
    iqr_us: float
    runs: int


def summarize(durations_us: np.ndarray) -> Summary:
    """Percentiles (linear interpolation) and spread of ``durations_us``."""
    p25, p50, p75, p95, p99 = np.percentile(durations_us, [25, 50, 75, 95, 99])
    return Summary(float(p50), float(p95), float(p99), float(p75 - p25), len(durations_us))


@dataclass(frozen=True)
class Interval:
    """A figure and its bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float


def paired_difference(
    a: Truth, b: Truth, kind: str, metric: str, *, resamples: int = RESAMPLES
) -> Interval | None:
    """``metric`` of ``b`` minus that of ``a`` on the same rows, with a percentile bootstrap
    interval that resamples rows (the same rows for both); None when either lacks it."""
    base, other = metrics(kind, a), metrics(kind, b)
    if metric not in base or metric not in other:
        return None
    rng = np.random.default_rng(SEED)
    rows = len(a.truth)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, rows, rows)
        left, right = metrics(kind, _take(a, pick)), metrics(kind, _take(b, pick))
        if metric in left and metric in right:
            draws.append(right[metric] - left[metric])
    return _interval(other[metric] - base[metric], np.asarray(draws))


def _take(t: Truth, rows: np.ndarray) -> Truth:
    scores = None if t.scores is None else t.scores[rows]
    return Truth(t.predicted[rows], t.truth[rows], scores, t.classes)


def ratio_interval(
    baseline_us: np.ndarray,
    candidate_us: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = RESAMPLES,
) -> Interval:
    """``statistic`` of the candidate's durations over the baseline's, with a bootstrap
    interval resampling each set of durations independently."""
    rng = np.random.default_rng(SEED)
    draws = np.empty(resamples)
    for i in range(resamples):
        b = baseline_us[rng.integers(0, len(baseline_us), len(baseline_us))]
        c = candidate_us[rng.integers(0, len(candidate_us), len(candidate_us))]
        draws[i] = statistic(c) / statistic(b)
    return _interval(statistic(candidate_us) / statistic(baseline_us), draws)


def _interval(value: float, draws: np.ndarray) -> Interval:
    if not len(draws):
        return Interval(value, value, value)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(value, float(min(low, value)), float(max(high, value)))


@dataclass(frozen=True)
class Limit:
    """A gate limit: ``kind`` "drop" (the metric may worsen by at most ``bound``, in its
    own units) or "ratio" (candidate / baseline at most ``bound``)."""

    metric: str
    kind: str
    bound: float

    @property
    def text(self) -> str:
        option = "--max-drop" if self.kind == "drop" else "--max-ratio"
        return f"{option} {self.metric}={self.bound:g}"


@dataclass(frozen=True)
class Verdict:
    """One limit checked: ``observed`` is the worsening (a drop in the metric's units, or
    a ratio) with its interval; ``failed`` only when the whole interval is past the bound,
    so a difference within the noise passes."""

    limit: Limit
    baseline: float
    candidate: float
    observed: Interval

    @property
    def failed(self) -> bool:
        return self.observed.low > self.limit.bound

    @property
    def message(self) -> str:
        o, lim = self.observed, self.limit
        what = "worse by" if lim.kind == "drop" else "ratio"
        state = "exceeds" if self.failed else "within"
        return (
            f"{lim.metric}: baseline {self.baseline:.6g}, candidate {self.candidate:.6g}, "
            f"{what} {o.value:.4g} (95% interval {o.low:.4g} to {o.high:.4g}); "
            f"{state} {lim.text}"
        )


def drop_verdict(limit: Limit, difference: Interval, baseline: float, candidate: float) -> Verdict:
    """A drop limit from the candidate-minus-baseline ``difference`` of a quality metric:
    the worsening is the fall of a larger-is-better metric, the rise of another."""
    sign = 1.0 if limit.metric in LOWER_IS_BETTER else -1.0
    low, high = sorted((sign * difference.low, sign * difference.high))
    return Verdict(limit, baseline, candidate, Interval(sign * difference.value, low, high))


def ratio_verdict(limit: Limit, ratio: Interval, baseline: float, candidate: float) -> Verdict:
    """A ratio limit from a candidate/baseline ``ratio`` and its interval."""
    return Verdict(limit, baseline, candidate, ratio)


def parse_limits(drops: Sequence[str], ratios: Sequence[str]) -> tuple[Limit, ...]:
    """``METRIC=NUMBER`` texts of --max-drop and --max-ratio as limits.

    Raises:
        UsageError: a text is not METRIC=NUMBER with a number >= 0 (> 0 for a ratio).
    """
    limits = []
    for kind, texts in (("drop", drops), ("ratio", ratios)):
        for text in texts:
            metric, sep, number = text.partition("=")
            try:
                bound = float(number)
            except ValueError:
                bound = float("nan")
            if not sep or not metric or not bound >= (0 if kind == "drop" else 1e-12):
                raise UsageError(f"{text!r} is not METRIC=NUMBER (a number >= 0)")
            limits.append(Limit(metric.strip(), kind, bound))
    return tuple(limits)
