"""Models side by side and the benchmark gate: real models trained here, the verdicts judged
against what was done to them, the JUnit file read by junitparser and the OpenMetrics file
by prometheus_client's parser."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from junitparser import Failure, JUnitXml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from packager.cli import main

from .conftest import KeyPair

QUICK = ("--time-budget", "0.2")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test set and model files: a forest, the same forest retrained with the same seed,
    a degraded one (trained on labels with 35% flipped), a slow one (a network two million
    weights wide: one row takes many times a small forest's time) and a logistic
    regression."""
    out = tmp_path_factory.mktemp("gate")
    x, y = make_classification(n_samples=1400, n_features=8, n_informative=5, random_state=0)
    train, test = slice(0, 800), slice(800, None)
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(800) < 0.35, 1 - y[train], y[train])
    trained = {
        "forest": RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
        "same": RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
        "degraded": RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
        "slow": MLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=30, random_state=0),
        "linear": LogisticRegression(max_iter=500),
    }
    paths = {}
    for name, model in trained.items():
        model.fit(x[train], noisy if name == "degraded" else y[train])
        paths[name] = out / f"{name}.joblib"
        joblib.dump(model, paths[name])
    lines = [",".join(f"f{i}" for i in range(8)) + ",y"]
    lines += [
        ",".join(f"{v:.17g}" for v in row) + f",{t}"
        for row, t in zip(x[test], y[test], strict=True)
    ]
    paths["data"] = out / "test.csv"
    paths["data"].write_text("\n".join(lines) + "\n")
    return paths


def bench(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["benchmark", *map(str, args), *QUICK])
    out, err = capsys.readouterr()
    return code, out, err


def test_side_by_side_leaderboard(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ("--data", models["data"], "--target", "y")
    chart = tmp_path / "board.png"
    code, out, err = bench(
        capsys, models["forest"], models["linear"], *data, "--json", "--chart", chart
    )
    assert code == 0, err
    doc = json.loads(out)
    labels = [m["label"] for m in doc["models"]]
    assert labels == [
        f"{models['forest']} [scikit-learn]",
        f"{models['forest']} [onnxruntime]",
        f"{models['linear']} [scikit-learn]",
        f"{models['linear']} [onnxruntime]",
    ]
    for m in doc["models"]:
        for key in ("accuracy", "balancedAccuracy", "macroF1", "logLoss", "rocAuc"):
            assert 0 <= m[key] <= (10 if key == "logLoss" else 1), key
        for shape in ("oneRow", "batch"):
            figures = m[shape]
            assert 0 < figures["p50Us"] <= figures["p95Us"] <= figures["p99Us"]
            assert figures["iqrUs"] >= 0 and figures["runs"] >= 10
        assert m["rowsPerSecond"] > 0 and m["sizeBytes"] > 0
    assert doc["models"][1]["loadMs"] > 0
    machine = doc["machine"]
    assert machine["threads"] == 1 and machine["cores"] >= 1 and machine["onnxruntime"]
    # Each model against the first, on the same rows, with an interval around the difference.
    diffs = {d["model"]: d for d in doc["differences"]}
    linear = diffs[labels[3]]
    accuracies = [m["accuracy"] for m in doc["models"]]
    assert linear["difference"] == pytest.approx(accuracies[3] - accuracies[0])
    assert linear["low"] <= linear["difference"] <= linear["high"]
    assert chart.read_bytes().startswith(b"\x89PNG")
    # Quality figures are the same from one run to the next (fixed seeds, same rows).
    code, again, _ = bench(capsys, models["forest"], models["linear"], *data, "--json")
    assert code == 0
    second = json.loads(again)
    assert [m["accuracy"] for m in second["models"]] == accuracies
    assert second["differences"] == doc["differences"]


def gate(
    capsys: pytest.CaptureFixture[str],
    models: dict[str, Path],
    candidate: str,
    tmp_path: Path,
    *limits: str,
    baseline: str | Path | None = None,
) -> tuple[int, str, str, Path, Path]:
    junit, metrics = tmp_path / f"{candidate}.xml", tmp_path / f"{candidate}.txt"
    code, out, err = bench(
        capsys,
        models[candidate],
        "--baseline",
        baseline or models["forest"],
        "--data",
        models["data"],
        "--target",
        "y",
        *limits,
        "--junit",
        junit,
        "--metrics",
        metrics,
    )
    return code, out, err, junit, metrics


def cases(junit: Path) -> dict[str, bool]:
    """Test case name -> passed, as a JUnit parser reads the file."""
    xml = JUnitXml.fromfile(str(junit))
    found = {}
    for suite in xml:
        for case in suite:
            found[case.name] = not any(isinstance(r, Failure) for r in case.result)
    return found


def families(metrics: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    parsed = text_string_to_metric_families(metrics.read_text())
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in parsed}


def test_an_equal_model_passes_the_gate(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = ("--max-drop", "accuracy=0", "--max-drop", "logLoss=0", "--max-ratio", "size=1")
    code, out, err, junit, metrics = gate(
        capsys, models, "same", tmp_path, *limits, "--max-ratio", "latency_p50=3"
    )
    assert code == 0, err
    assert "gate passed" in out
    assert all(cases(junit).values()) and len(cases(junit)) == 4
    found = families(metrics)
    assert [v for _, v in found["packager_benchmark_gate_passed"]] == [1.0] * 4
    quality = {
        (labels["model"], labels["metric"]): v for labels, v in found["packager_benchmark_quality"]
    }
    assert (
        quality[(str(models["same"]) + " [onnxruntime]", "accuracy")]
        == quality[(str(models["forest"]) + " [onnxruntime]", "accuracy")]
    )


def test_a_degraded_model_fails_on_quality(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, junit, metrics = gate(
        capsys,
        models,
        "degraded",
        tmp_path,
        "--max-drop",
        "accuracy=0.01",
        "--max-ratio",
        "size=10",
    )
    assert code == 6, err
    assert "benchmark gate failed: accuracy: baseline" in err
    assert "exceeds --max-drop accuracy=0.01" in err
    assert "gate FAILED" in out
    assert cases(junit) == {
        f"--max-drop accuracy=0.01 against {models['forest']}": False,
        f"--max-ratio size=10 against {models['forest']}": True,
    }
    passed = dict(
        (labels["metric"], v) for labels, v in families(metrics)["packager_benchmark_gate_passed"]
    )
    assert passed == {"accuracy": 0.0, "size": 1.0}


def test_a_slowed_model_fails_on_latency(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err, junit, _ = gate(
        capsys, models, "slow", tmp_path, "--max-ratio", "latency_p50=1.5"
    )
    assert code == 6, err
    assert "latency_p50: baseline" in err and "exceeds --max-ratio latency_p50=1.5" in err
    assert list(cases(junit).values()) == [False]


def test_gate_usage_errors(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ("--data", models["data"], "--target", "y")
    code, _, err = bench(capsys, models["forest"], *data, "--max-drop", "accuracy=0.01")
    assert code == 2 and "need --baseline" in err
    code, _, err = bench(
        capsys, models["forest"], *data, "--baseline", models["same"], "--max-drop", "speed=1"
    )
    assert code == 2 and "no such quality metric" in err
    code, _, err = bench(
        capsys, models["forest"], *data, "--baseline", models["same"], "--max-ratio", "x=2"
    )
    assert code == 2 and "ratio limits are on latency_p50" in err
    code, _, err = bench(capsys, models["forest"], *data, "--max-ratio", "latency_p50")
    assert code == 2 and "METRIC=NUMBER" in err
    assert "Traceback" not in err


def test_baseline_from_a_registry_channel(
    models: dict[str, Path],
    tmp_path: Path,
    keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--baseline NAME@stable with --registry: the version the channel names, fetched and
    verified; an unknown channel is a registry error."""
    sample = tmp_path / "sample.csv"
    sample.write_text("\n".join(models["data"].read_text().splitlines()[:20]) + "\n")
    features = tmp_path / "features.csv"
    features.write_text(
        "\n".join(",".join(line.split(",")[:8]) for line in sample.read_text().splitlines()) + "\n"
    )
    registry = tmp_path / "registry"
    package = ["package", str(models["forest"]), "--name", "gate", "--version", "1.0.0"]
    package += ["--sample", str(features), "--key", str(keypair.key_path), "-o", str(tmp_path)]
    assert main(package) == 0
    assert main(["publish", str(tmp_path / "gate-1.0.0"), "--registry", str(registry)]) == 0
    promote = ["promote", "gate@1.0.0", "--channel", "stable", "--key", str(keypair.key_path)]
    assert main([*promote, "--registry", str(registry)]) == 0
    capsys.readouterr()
    remote = ("--registry", registry, "--key", keypair.pub_path)
    code, out, err, junit, _ = gate(
        capsys,
        models,
        "same",
        tmp_path,
        "--max-drop",
        "accuracy=0",
        *remote,
        baseline="gate@stable",
    )
    assert code == 0, err
    assert "against gate@stable" in out
    assert cases(junit) == {"--max-drop accuracy=0 against gate@stable": True}
    code, _, err, _, _ = gate(capsys, models, "same", tmp_path, *remote, baseline="gate@canary")
    assert code == 4 and "no channel canary" in err
