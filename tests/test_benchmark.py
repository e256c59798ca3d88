"""Benchmarks: quality, latency and size on the build side and the instance; table, JSON, chart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge

from packager._io.table import Table, from_mapping, read_table
from packager.build.benchmark import (
    EngineFigures,
    Latency,
    Report,
    benchmark_conversion,
    benchmark_reference,
    slower_than_recorded,
    spread,
    write_chart,
)
from packager.build.bundle import package
from packager.build.convert import convert
from packager.build.options import BenchmarkData, PackageOptions, Settings
from packager.cli import main
from packager.core.manifest import parse_manifest
from packager.errors import UsageError

from .conftest import KeyPair
from .core.test_manifest import assert_round_trips

QUICK = Settings(budget_seconds=0.05)
ROOT = Path(__file__).resolve().parents[1]


def labelled_iris(tmp_path: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    path = tmp_path / "iris.csv"
    lines = ["a,b,c,d,species"] + [
        ",".join(f"{v:g}" for v in row) + f",{names[label]}"
        for row, label in zip(x, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def iris_model() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    return LogisticRegression(max_iter=500).fit(x, names[y])


def test_classifier_on_the_build_side(iris_model: LogisticRegression, tmp_path: Path) -> None:
    data = read_table(labelled_iris(tmp_path))
    features = Table(data.columns[:4], data.values[:4], named=False)
    conversion = convert(iris_model, features)
    bench = BenchmarkData(data, "species", QUICK, original_size=1234)
    report = benchmark_conversion(conversion, bench)
    assert report.task == "classification"
    assert (report.rows, report.batch_rows) == (150, 150)
    original, runtime = report.engines
    assert original.engine.startswith("scikit-learn ")
    assert original.threads is None
    assert runtime.engine.startswith("onnxruntime ")
    assert runtime.threads == 1
    expected = float(np.mean(iris_model.predict(features_as_array(features)) == data.values[4]))
    for engine in report.engines:
        assert engine.quality["accuracy"] == pytest.approx(expected)
        for latency in (engine.one_row, engine.batch):
            assert 0 < latency.p50_us <= latency.p95_us
            assert latency.runs >= 10
    assert report.agreement == {"labelAgreement": 1.0}
    assert report.sizes["original"] == 1234
    assert report.sizes["onnx"] > 0
    doc = report.to_json()
    assert doc["engines"][1]["threads"] == 1
    assert doc["engines"][0]["accuracy"] == pytest.approx(expected)
    text = report.table()
    assert "accuracy" in text and "onnxruntime" in text and "labelAgreement 100.0%" in text
    columns = ["engine", "threads", "load", "1 row p50", "p95", "p99", "batch p50", "p95"]
    columns += ["p99", "rows/s", *sorted(runtime.quality)]
    header, *rows = text.splitlines()[1:4]
    assert re.split(r" {2,}", header.strip()) == columns
    cells = re.split(r" {2,}", rows[1].strip())
    assert cells[:2] == [runtime.engine, "1"] and cells[3] == spread(runtime.one_row)


def features_as_array(features: Table) -> np.ndarray:
    return np.column_stack(features.values)


def test_regressor_reports_mae_and_rmse() -> None:
    x, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(x, y)
    columns = {f"x{i}": x[:, i] for i in range(x.shape[1])}
    data = from_mapping({**columns, "y": y})
    features = from_mapping(columns, named=False)
    quick = Settings(budget_seconds=0.05, batch_rows=64)
    report = benchmark_conversion(convert(model, features), BenchmarkData(data, "y", quick))
    assert report.task == "regression"
    assert report.batch_rows == 64
    error = model.predict(x) - y
    for engine in report.engines:
        assert engine.quality["mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-4)
        assert engine.quality["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-4)
    assert report.agreement["maxAbsDiff"] < 1e-3


def test_cli_on_a_model_file_a_bundle_and_an_installed_model(
    iris_model: LogisticRegression,
    tmp_path: Path,
    keypair: KeyPair,
    home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = labelled_iris(tmp_path)
    joblib.dump(iris_model, tmp_path / "model.joblib")
    chart = tmp_path / "bench.png"
    args = ["--data", str(data), "--target", "species"]
    code = main(
        ["benchmark", str(tmp_path / "model.joblib"), *args, "--json", "--chart", str(chart)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert [e["engine"].split()[0] for e in doc["engines"]] == ["scikit-learn", "onnxruntime"]
    assert doc["sizes"]["original"] == (tmp_path / "model.joblib").stat().st_size
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # package --benchmark records the same figures in the manifest.
    sample = tmp_path / "sample.csv"
    lines = data.read_text().splitlines()
    sample.write_text("\n".join(",".join(line.split(",")[:4]) for line in lines[::10]) + "\n")
    code = main(
        [
            "package",
            str(tmp_path / "model.joblib"),
            "--name",
            "iris",
            "--version",
            "1.0.0",
            "--sample",
            str(sample),
            "--key",
            str(keypair.key_path),
            "-o",
            str(tmp_path / "dist"),
            "--benchmark",
            str(data),
            "--target",
            "species",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    manifest = assert_round_trips((bundle / "manifest.json").read_bytes())
    assert manifest.metrics is not None
    metrics = manifest.metrics["benchmark"]
    assert metrics["target"] == "species"
    assert metrics["engines"][0]["accuracy"] == pytest.approx(doc["engines"][0]["accuracy"])
    assert "labelAgreement" in metrics

    # A bundle directory, then the installed model: onnxruntime only.
    code = main(["benchmark", str(bundle), *args, "--json", "--threads", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (engine,) = json.loads(out)["engines"]
    assert engine["engine"].startswith("onnxruntime") and engine["threads"] == 2
    assert engine["accuracy"] == pytest.approx(doc["engines"][1]["accuracy"])
    assert main(["publish", str(bundle)]) == 0
    assert main(["install", "iris", "--key", str(keypair.pub_path)]) == 0
    capsys.readouterr()
    code = main(["benchmark", "iris@1.0.0", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("iris@1.0.0 (classification): 150 rows")
    assert "accuracy" in out

    assert main(["benchmark", "iris", "--data", str(data), "--target", "colour"]) == 2
    assert "no column 'colour'" in capsys.readouterr().err
    # Not installed here (and no such file): a usage error, as for predict.
    assert main(["benchmark", "nosuchmodel", "--data", str(data)]) == 2


def test_chart_needs_the_plot_extra(
    monkeypatch: pytest.MonkeyPatch, iris_model: LogisticRegression, tmp_path: Path
) -> None:
    data = read_table(labelled_iris(tmp_path))
    features = Table(data.columns[:4], data.values[:4], named=False)
    # No target column: latency and size only.
    report = benchmark_conversion(
        convert(iris_model, features), BenchmarkData(features, None, QUICK)
    )
    assert all(not e.quality for e in report.engines)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"pip install 'onnx-packager\[plot\]'"):
        write_chart(report, tmp_path / "chart.png")


def test_package_benchmark_through_the_api(
    iris_model: LogisticRegression, tmp_path: Path, keypair: KeyPair
) -> None:
    data = read_table(labelled_iris(tmp_path))
    features = Table(data.columns[:4], data.values[:4], named=False)
    bundle = package(
        iris_model,
        sample=features,
        name="iris",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "dist",
        options=PackageOptions(benchmark=BenchmarkData(data, "species", QUICK)),
    )
    metrics = parse_manifest((bundle / "manifest.json").read_bytes()).metrics
    assert metrics is not None
    assert [e["engine"].split()[0] for e in metrics["benchmark"]["engines"]] == [
        "scikit-learn",
        "onnxruntime",
    ]
    with pytest.raises(UsageError, match="no column 'label'"):
        benchmark_reference(str(bundle), data, target="label", settings=QUICK)

    # On the instance: the same bundle on its own test vectors, compared with the figures
    # recorded at packaging; measured here, now, it is not much slower than there.
    here = benchmark_reference(str(bundle), None, target=None, settings=QUICK)
    assert here.rows == features.rows and here.slower == ()
    assert here.engines[0].load_ms is not None and here.engines[0].load_ms > 0

    # Recorded on a machine 10 000 times faster: the instance says how much slower it is.
    doc = json.loads((bundle / "manifest.json").read_text())
    (recorded,) = [e for e in doc["metrics"]["benchmark"]["engines"] if "threads" in e]
    recorded["oneRow"]["p50Us"] = here.engines[0].one_row.p50_us / 10_000
    doc["metrics"]["benchmark"]["machine"]["cpu"] = "Packaging CPU 9000"
    (bundle / "manifest.json").chmod(0o644)
    (bundle / "manifest.json").write_text(json.dumps(doc))
    slower = benchmark_reference(str(bundle), None, target=None, settings=QUICK).slower
    assert len(slower) == 1
    assert "iris@1.0.0: one-row median" in slower[0]
    assert "where it was packaged" in slower[0] and "Packaging CPU 9000" in slower[0]
    factor = float(slower[0].split("(")[1].split("x slower")[0])
    assert factor > 1000
    joblib.dump(iris_model, tmp_path / "model.joblib")
    with pytest.raises(UsageError, match="give --data"):
        benchmark_reference(str(tmp_path / "model.joblib"), None, target=None)


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        [],
        {"engines": "x"},
        {"engines": [{"engine": "onnxruntime", "oneRow": "fast"}]},
        {"engines": [{"engine": "onnxruntime", "oneRow": {"p50Us": -1}}]},
    ],
)
def test_unreadable_recorded_figures_give_no_warning(recorded: object) -> None:
    report = Report(
        model="m@1.0.0",
        task="regression",
        rows=1,
        batch_rows=1,
        target=None,
        engines=(
            EngineFigures("onnxruntime 1", 1, Latency(9e9, 9e9, 1), Latency(9e9, 9e9, 1), {}),
        ),
        sizes={},
    )
    assert slower_than_recorded(report, recorded) == ()


def test_instance_side_benchmark_imports_no_training_library() -> None:
    code = (
        "import sys, packager.build.benchmark;"
        "print(sorted({'sklearn', 'skl2onnx', 'torch', 'xgboost', 'lightgbm', 'matplotlib'}"
        " & set(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert run.stdout.strip() == "[]"


def test_latency_is_percentiles_and_spread_in_microseconds() -> None:
    latency = Latency.of([3_000, 1_000, 2_000, 4_000, 5_000])
    assert (latency.p50_us, latency.p95_us, latency.runs) == (3.0, pytest.approx(4.8), 5)
    assert latency.p99_us == pytest.approx(4.96)
    assert latency.iqr_us == pytest.approx(2.0)  # 4 - 2
    assert latency.to_json() == {"p50Us": 3.0, "p95Us": 4.8, "p99Us": 5.0, "iqrUs": 2.0, "runs": 5}


def test_outlier_detector_and_clustering_benchmarks() -> None:
    """An IsolationForest on rows whose true outliers are known, and a KMeans on three
    groups: agreement with the original, and figures that fit each kind of model."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import adjusted_rand_score, recall_score

    x, groups = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
    rng = np.random.default_rng(0)
    outliers = rng.uniform(-30, 30, size=(20, 4))
    rows = np.vstack([x, outliers])
    truth = np.r_[np.ones(len(x), dtype=np.int64), -np.ones(20, dtype=np.int64)]
    columns = {f"x{i}": rows[:, i] for i in range(4)}
    features = from_mapping(columns, named=False)
    forest = IsolationForest(n_estimators=30, random_state=0).fit(x)
    data = from_mapping({**columns, "outlier": truth}, named=False)
    report = benchmark_conversion(convert(forest, features), BenchmarkData(data, "outlier", QUICK))
    assert report.task == "anomaly"
    assert report.agreement == {"labelAgreement": 1.0}
    expected = recall_score(truth, forest.predict(rows), pos_label=-1)
    for engine in report.engines:
        assert engine.quality["outlierRecall"] == pytest.approx(expected)
        assert set(engine.quality) >= {"outlierPrecision", "outlierF1", "accuracy"}

    kmeans = KMeans(n_clusters=3, n_init=3, random_state=0).fit(x)
    columns = {f"x{i}": x[:, i] for i in range(4)}
    data = from_mapping({**columns, "group": groups}, named=False)
    report = benchmark_conversion(
        convert(kmeans, from_mapping(columns, named=False)), BenchmarkData(data, "group", QUICK)
    )
    assert report.task == "clustering"
    assert report.agreement == {"labelAgreement": 1.0}
    ari = adjusted_rand_score(groups, kmeans.predict(x))
    assert [e.quality for e in report.engines] == [{"adjustedRand": pytest.approx(ari)}] * 2
