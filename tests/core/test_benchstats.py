"""Benchmark statistics: task metrics agree with scikit-learn's; intervals and gate verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from packager.core.benchstats import (
    Interval,
    Limit,
    Truth,
    anomaly_metrics,
    classification_metrics,
    clustering_metrics,
    drop_verdict,
    paired_difference,
    parse_limits,
    ratio_interval,
    regression_metrics,
    summarize,
)
from packager.errors import UsageError


def _classes(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.dirichlet(np.ones(k), size=n)
    truth = np.array([rng.choice(k, p=p) for p in scores])
    return scores, truth


@pytest.mark.parametrize("k", [2, 3, 5])
def test_classification_metrics_match_scikit_learn(k: int) -> None:
    rng = np.random.default_rng(k)
    scores, truth = _classes(rng, 300, k)
    predicted = np.argmax(scores, axis=1)
    figures = classification_metrics(Truth(predicted, truth, scores, np.arange(k)))
    assert figures["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert figures["balancedAccuracy"] == pytest.approx(
        skm.balanced_accuracy_score(truth, predicted)
    )
    assert figures["macroF1"] == pytest.approx(skm.f1_score(truth, predicted, average="macro"))
    assert figures["logLoss"] == pytest.approx(skm.log_loss(truth, scores), rel=1e-6)
    expected_auc = (
        skm.roc_auc_score(truth, scores[:, 1])
        if k == 2
        else skm.roc_auc_score(truth, scores, multi_class="ovr", average="macro")
    )
    assert figures["rocAuc"] == pytest.approx(expected_auc)


def test_text_labels_and_no_scores() -> None:
    truth = np.array(["a", "b", "b", "c"])
    predicted = np.array(["a", "b", "c", "c"])
    figures = classification_metrics(Truth(predicted, truth))
    assert set(figures) == {"accuracy", "balancedAccuracy", "macroF1"}
    assert figures["accuracy"] == 0.75
    assert figures["macroF1"] == pytest.approx(skm.f1_score(truth, predicted, average="macro"))


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=200)
    predicted = truth + rng.normal(scale=0.3, size=200)
    figures = regression_metrics(Truth(predicted, truth))
    assert figures["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    assert figures["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(truth, predicted)))
    assert figures["r2"] == pytest.approx(skm.r2_score(truth, predicted))


def test_summary_percentiles_and_spread() -> None:
    s = summarize(np.arange(1.0, 101.0))
    assert (s.p50_us, s.p95_us, s.p99_us, s.runs) == (50.5, 95.05, 99.01, 100)
    assert s.iqr_us == pytest.approx(49.5)


def test_a_paired_interval_covers_the_difference_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.9, truth, 1 - truth)
    worse = np.where(rng.random(400) < 0.7, truth, 1 - truth)
    a, b = Truth(good, truth), Truth(worse, truth)
    first = paired_difference(a, b, "classification", "accuracy")
    assert first is not None
    assert first == paired_difference(a, b, "classification", "accuracy")
    assert first.low <= first.value <= first.high < 0
    same = paired_difference(a, a, "classification", "accuracy")
    assert same == Interval(0.0, 0.0, 0.0)
    assert paired_difference(a, b, "classification", "rocAuc") is None


def test_a_drop_fails_only_beyond_the_noise() -> None:
    limit = Limit("accuracy", "drop", 0.01)
    # Candidate 3 points worse, interval -0.05..-0.01: the whole interval is a drop > 0.01.
    failed = drop_verdict(limit, Interval(-0.03, -0.05, -0.015), 0.9, 0.87)
    assert failed.failed
    assert failed.observed.value == pytest.approx(0.03)
    assert "exceeds --max-drop accuracy=0.01" in failed.message
    # Same figure, but the interval reaches 0.005: within the noise.
    assert not drop_verdict(limit, Interval(-0.03, -0.06, 0.005), 0.9, 0.87).failed
    # For an error metric a rise is the worsening.
    mae = drop_verdict(Limit("mae", "drop", 0.1), Interval(0.5, 0.3, 0.7), 1.0, 1.5)
    assert mae.failed and mae.observed.low == pytest.approx(0.3)


def test_a_latency_ratio_interval() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(100, 5, 300)
    slow = rng.normal(200, 10, 300)
    ratio = ratio_interval(base, slow, lambda d: float(np.percentile(d, 95)))
    assert 1.8 < ratio.low <= ratio.value <= ratio.high < 2.2
    same = ratio_interval(base, base.copy(), lambda d: float(np.percentile(d, 95)))
    assert same.low < 1.0 < same.high


def test_limits_parse() -> None:
    assert parse_limits(["accuracy=0.01"], ["latency_p95=1.2"]) == (
        Limit("accuracy", "drop", 0.01),
        Limit("latency_p95", "ratio", 1.2),
    )
    for bad in (["accuracy"], ["accuracy=x"], ["=1"], ["accuracy=-1"]):
        with pytest.raises(UsageError, match="METRIC=NUMBER"):
            parse_limits(bad, [])
    with pytest.raises(UsageError):
        parse_limits([], ["latency_p95=0"])


def test_anomaly_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(7)
    truth = np.where(rng.random(300) < 0.1, -1, 1)
    predicted = np.where(rng.random(300) < 0.85, truth, -truth)
    figures = anomaly_metrics(Truth(predicted, truth))
    assert figures["outlierPrecision"] == pytest.approx(
        skm.precision_score(truth, predicted, pos_label=-1)
    )
    assert figures["outlierRecall"] == pytest.approx(
        skm.recall_score(truth, predicted, pos_label=-1)
    )
    assert figures["outlierF1"] == pytest.approx(skm.f1_score(truth, predicted, pos_label=-1))
    assert figures["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    with pytest.raises(UsageError, match="-1 \\(outlier\\) and 1"):
        anomaly_metrics(Truth(predicted, np.where(truth == -1, 0, 1)))


def test_adjusted_rand_index_matches_scikit_learn() -> None:
    rng = np.random.default_rng(8)
    truth = rng.integers(0, 3, 200)
    # The same partition under other cluster numbers, then with 20% of rows moved.
    renamed = (truth + 1) % 3
    assert clustering_metrics(Truth(renamed, truth))["adjustedRand"] == pytest.approx(1.0)
    moved = np.where(rng.random(200) < 0.2, rng.integers(0, 4, 200), renamed)
    assert clustering_metrics(Truth(moved, truth))["adjustedRand"] == pytest.approx(
        skm.adjusted_rand_score(truth, moved)
    )
