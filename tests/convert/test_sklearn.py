"""Converting scikit-learn models and checking .onnx files: parity, inputs, determinism, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import skl2onnx
from onnx import TensorProto, helper
from sklearn.cluster import AgglomerativeClustering
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from packager._io.table import Table, from_mapping
from packager.build.convert import Conversion, convert, load_model_file
from packager.build.convert.base import Options
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, ParityError, UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def iris_with_gaps(iris: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Iris with a tenth of the values missing: HistGradientBoosting learns where NaN goes."""
    x = iris[0].copy()
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    return x


def positional(x: np.ndarray) -> Table:
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


def frame_table(frame: pd.DataFrame) -> Table:
    return from_mapping({str(c): frame[c].to_numpy() for c in frame.columns})


def check_with_onnxruntime(conversion: Conversion) -> dict[str, np.ndarray]:
    """Independently re-run the graph and check it reproduces ``expected`` within tolerance."""
    onnx.checker.check_model(conversion.model, full_check=True)
    session = ort.InferenceSession(
        conversion.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    actual = dict(zip(names, session.run(None, conversion.feeds), strict=True))
    for name, expected in conversion.expected.items():
        if name in conversion.label_outputs:
            np.testing.assert_array_equal(actual[name].astype(expected.dtype), expected)
        else:
            np.testing.assert_allclose(
                actual[name], expected, rtol=conversion.rtol, atol=conversion.atol
            )
    assert conversion.comparison.ok
    assert conversion.comparison.rows == len(next(iter(conversion.feeds.values())))
    return actual


def test_pipeline_on_iris(iris: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = iris
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    conversion = convert(model, positional(x))
    assert conversion.inputs == (TensorSpec("input", "float32", (None, 4)),)
    assert conversion.outputs == (
        TensorSpec("label", "int64", (None,)),
        TensorSpec("probabilities", "float32", (None, 3)),
    )
    assert conversion.feeds["input"].dtype == np.float32
    assert conversion.task == "classification"
    assert conversion.reference == "original"
    assert conversion.label_outputs == ("label",)
    assert (conversion.rtol, conversion.atol) == (1e-3, 1e-4)
    assert conversion.source == {
        "framework": "scikit-learn",
        "frameworkVersion": __import__("sklearn").__version__,
        "estimator": "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
        "converter": "skl2onnx",
        "converterVersion": skl2onnx.__version__,
    }
    # The original ran on the values ONNX sees: the float32 sample, widened.
    seen = conversion.feeds["input"].astype(np.float64)
    np.testing.assert_array_equal(conversion.expected["label"], model.predict(seen))
    np.testing.assert_array_equal(conversion.expected["probabilities"], model.predict_proba(seen))
    check_with_onnxruntime(conversion)
    assert conversion.comparison.label_agreement == 1.0
    assert conversion.comparison.max_abs_diff < 1e-6
    # One opset per domain: skl2onnx alone lists the default domain twice.
    domains = [o.domain for o in conversion.model.opset_import]
    assert domains == sorted(set(domains))


def test_random_forest(iris: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = iris
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    conversion = convert(model, positional(x))
    check_with_onnxruntime(conversion)
    assert conversion.source["estimator"] == "sklearn.ensemble.RandomForestClassifier"
    assert conversion.comparison.max_abs_diff < 1e-6


def test_gradient_boosting_regressor() -> None:
    x, y = load_diabetes(return_X_y=True)
    x, y = x[:200], y[:200]
    model = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x, y)
    conversion = convert(model, positional(x))
    assert conversion.task == "regression"
    assert conversion.label_outputs == ()
    assert conversion.outputs == (TensorSpec("variable", "float32", (None, 1)),)
    assert conversion.expected["variable"].shape == (200, 1)  # shaped like the ONNX output
    predictions = model.predict(conversion.feeds["input"].astype(np.float64))
    assert conversion.atol == pytest.approx(1e-4 * np.abs(predictions).max())
    check_with_onnxruntime(conversion)
    assert conversion.comparison.max_abs_diff < conversion.atol


def test_hist_gradient_boosting_classifier_with_missing_values(
    iris: tuple[np.ndarray, np.ndarray], iris_with_gaps: np.ndarray
) -> None:
    # skl2onnx 1.20 + scikit-learn 1.9 alone fail here ("Expected an int, got a boolean").
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(iris_with_gaps, iris[1])
    conversion = convert(model, positional(iris_with_gaps))
    check_with_onnxruntime(conversion)
    assert conversion.comparison.label_agreement == 1.0
    assert conversion.comparison.max_abs_diff < 1e-6
    assert conversion.source["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    (tree,) = [n for n in conversion.model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    tracks = next(a for a in tree.attribute if a.name == "nodes_missing_value_tracks_true")
    assert set(tracks.ints) == {0, 1}  # NaN goes left in some splits and right in others
    assert conversion.accepts_missing is True


def test_hist_gradient_boosting_regressor_in_a_pipeline(
    iris: tuple[np.ndarray, np.ndarray], iris_with_gaps: np.ndarray
) -> None:
    target = iris[0][:, 0] * 3
    model = make_pipeline(
        StandardScaler(), HistGradientBoostingRegressor(max_iter=10, random_state=0)
    ).fit(iris_with_gaps, target)
    conversion = convert(model, positional(iris_with_gaps))
    check_with_onnxruntime(conversion)
    assert conversion.comparison.max_abs_diff < 1e-4


def test_hist_gradient_boosting_fix_leaves_skl2onnx_alone(
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = iris
    model = HistGradientBoostingClassifier(max_iter=3).fit(x, y)

    def plain_skl2onnx() -> str:
        try:
            skl2onnx.to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
        except Exception as e:
            return type(e).__name__
        return "ok"

    before = plain_skl2onnx()
    convert(model, positional(x))
    assert plain_skl2onnx() == before  # no global registration changed behind anyone's back


def test_hist_gradient_boosting_with_categorical_splits_is_refused() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 4, 200), rng.normal(size=200)]).astype(np.float64)
    y = (x[:, 0] == 2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(x, y)
    with pytest.raises(ConversionError, match="categorical"):
        convert(model, positional(x))


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 80
    return pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size (cm)": rng.normal(10, 3, n),
            "count": rng.integers(0, 5, n),
        }
    )


def test_column_transformer_on_a_dataframe(shop: pd.DataFrame) -> None:
    labels = np.where(shop["size (cm)"] + 3 * (shop["color"] == "red") > 11, "big", "small")
    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("scale", StandardScaler(), ["size (cm)", "count"]),
        ]
    )
    model = Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(shop, labels)
    # The sample's columns come in another order than training: they map by name.
    sample = frame_table(shop[["count", "color", "size (cm)"]])
    conversion = convert(model, sample)
    assert conversion.inputs == (
        TensorSpec("color", "string", (None, 1)),
        TensorSpec("size (cm)", "float32", (None, 1)),  # the name as the column has it
        TensorSpec("count", "int64", (None, 1)),
    )
    assert conversion.outputs[0] == TensorSpec("label", "string", (None,))
    assert conversion.feeds["color"].dtype.kind == "U"  # never an object array
    assert conversion.expected["label"].dtype.kind == "U"
    np.testing.assert_array_equal(conversion.expected["label"], model.predict(shop))
    check_with_onnxruntime(conversion)
    assert conversion.source["estimator"] == (
        "sklearn.pipeline.Pipeline(ColumnTransformer(OneHotEncoder, StandardScaler), "
        "LogisticRegression)"
    )


def test_dataframe_model_without_column_transformer(iris: tuple[np.ndarray, np.ndarray]) -> None:
    frame, y = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(frame, y)
    conversion = convert(model, frame_table(frame))
    assert [s.name for s in conversion.inputs] == list(frame.columns)
    assert all(s.shape == (None, 1) and s.dtype == "float32" for s in conversion.inputs)
    check_with_onnxruntime(conversion)
    # A bare array sample is taken in training column order, as scikit-learn does.
    assert convert(model, positional(iris[0])).comparison.ok


def test_sample_must_have_the_model_columns(shop: pd.DataFrame) -> None:
    model = make_pipeline(
        ColumnTransformer([("scale", StandardScaler(), ["size (cm)", "count"])]),
        LogisticRegression(),
    ).fit(shop, shop["count"] > 2)
    sample = from_mapping({"size (cm)": [1.0], "weight": [2.0]})
    with pytest.raises(
        UsageError, match=r"missing column\(s\) 'color', 'count'; unexpected column\(s\) 'weight'"
    ):
        convert(model, sample)


def test_sample_width_must_match_an_unnamed_model(iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    with pytest.raises(UsageError, match="takes 4 features, the sample has 3"):
        convert(model, positional(iris[0][:, :3]))


def test_transformer(iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = StandardScaler().fit(iris[0])
    conversion = convert(model, positional(iris[0]))
    assert conversion.task == "transform"
    seen = conversion.feeds["input"].astype(np.float64)
    np.testing.assert_array_equal(conversion.expected["variable"], model.transform(seen))
    check_with_onnxruntime(conversion)


def test_tolerances_given_override_the_defaults(iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    conversion = convert(model, positional(iris[0]), Options(rtol=0.01, atol=0.5))
    assert (conversion.rtol, conversion.atol) == (0.01, 0.5)
    with pytest.raises(UsageError, match="atol must be a finite number"):
        convert(model, positional(iris[0]), Options(atol=-1))


def test_parity_failure_names_the_model_and_the_worst_rows(
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    # float32 ONNX arithmetic cannot reproduce float64 probabilities to the last bit.
    model = LogisticRegression(max_iter=500).fit(*iris)
    subject = r"the original sklearn\.linear_model\.LogisticRegression \(scikit-learn [\d.]+\)"
    with pytest.raises(
        ParityError, match=subject + r" beyond rtol=0, atol=0 .*output 'probabilities' row \d+"
    ):
        convert(model, positional(iris[0]), Options(rtol=0, atol=0))


def test_conversion_is_deterministic(
    iris: tuple[np.ndarray, np.ndarray], shop: pd.DataFrame
) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*iris)
    first = convert(model, positional(iris[0])).model.SerializeToString()
    assert convert(model, positional(iris[0])).model.SerializeToString() == first


def test_conversion_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Python's string hashing changes per process; the ONNX bytes must not."""
    script = tmp_path / "convert_twice.py"
    script.write_text(
        textwrap.dedent(
            """
            import hashlib
            import numpy as np, pandas as pd
            from sklearn.compose import ColumnTransformer
            from sklearn.ensemble import HistGradientBoostingClassifier
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import OneHotEncoder, StandardScaler
            from packager.build.convert import convert
            from packager._io.table import from_mapping

            rng = np.random.default_rng(0)
            frame = pd.DataFrame({"c": rng.choice(["a", "b"], 60), "x": rng.normal(size=60)})
            model = make_pipeline(
                ColumnTransformer([("o", OneHotEncoder(), ["c"]), ("s", StandardScaler(), ["x"])]),
                HistGradientBoostingClassifier(max_iter=3, random_state=0),
            ).fit(frame, frame["x"] > 0)
            table = from_mapping({c: frame[c].to_numpy() for c in frame.columns})
            onnx_bytes = convert(model, table).model.SerializeToString()
            print(hashlib.sha256(onnx_bytes).hexdigest())
            """
        )
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1


def test_existing_onnx_file(tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*iris)
    path = tmp_path / "model.onnx"
    path.write_bytes(convert(model, positional(iris[0])).model.SerializeToString())
    loaded = load_model_file(path)
    conversion = convert(loaded, positional(iris[0]))
    assert conversion.reference == "onnxruntime"
    assert conversion.task == "unknown"
    assert conversion.label_outputs == ("label",)  # an int64 output is a label
    assert conversion.source["framework"] == "onnx"
    assert conversion.source["converter"] == "skl2onnx"
    assert (conversion.rtol, conversion.atol) == (1e-3, 1e-4)
    actual = check_with_onnxruntime(conversion)
    np.testing.assert_array_equal(actual["probabilities"], conversion.expected["probabilities"])
    np.testing.assert_array_equal(conversion.expected["label"], model.predict(iris[0]))


def test_onnx_file_with_external_data(tmp_path: Path) -> None:
    weights = np.arange(8, dtype=np.float32).reshape(4, 2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "model.onnx.data").exists()
    x = np.ones((3, 4))
    conversion = convert(load_model_file(path), positional(x))
    assert conversion.inputs == (TensorSpec("x", "float32", ("N", 4)),)
    np.testing.assert_array_equal(conversion.expected["y"], np.ones((3, 4)) @ weights)
    assert conversion.label_outputs == ()


def test_onnx_whose_answers_change_between_runs_fails_parity() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("RandomUniformLike", ["x"], ["noise"]),
            helper.make_node("Add", ["x", "noise"], ["y"]),
        ],
        "noisy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ParityError, match="different answers on two runs"):
        convert(model, positional(np.zeros((5, 2))))


def test_onnx_classifier_with_zipmap_is_refused(iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    with_zipmap = skl2onnx.to_onnx(model, iris[0][:1].astype(np.float32))
    with pytest.raises(ConversionError, match="zipmap"):
        convert(with_zipmap, positional(iris[0]))


def test_invalid_onnx_is_a_conversion_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match="not valid"):
        convert(model, positional(np.zeros((1, 1))))


def test_load_pickled_model(tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    loaded: Any = load_model_file(path)
    np.testing.assert_array_equal(loaded.predict(iris[0]), model.predict(iris[0]))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.h5", b"x", "unknown model format '.h5'"),
        ("model.pkl", b"not a pickle", "cannot unpickle"),
        ("model.onnx", b"\xff\xff not protobuf", "cannot read ONNX model"),
    ],
)
def test_unreadable_model_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_model_file(path)
    with pytest.raises(UsageError):
        load_model_file(tmp_path / ("absent" + path.suffix))


def test_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    joblib.dump(model, tmp_path / "model.pkl")
    # A None entry makes `import skl2onnx` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    hint = r"needs skl2onnx.*pip install 'onnx-packager\[sklearn\]'"
    with pytest.raises(ConversionError, match=hint):
        convert(model, positional(iris[0]))
    monkeypatch.setitem(sys.modules, "joblib", None)
    with pytest.raises(ConversionError, match=r"pip install 'onnx-packager\[sklearn\]'"):
        load_model_file(tmp_path / "model.pkl")


def test_unfitted_and_unsupported_models(iris: tuple[np.ndarray, np.ndarray]) -> None:
    sample = positional(iris[0])
    with pytest.raises(UsageError, match="not fitted"):
        convert(LogisticRegression(), sample)
    # A clustering that labels only the rows it was fitted on: nothing to predict with.
    with pytest.raises(ConversionError, match="classifiers, regressors, transformers"):
        convert(AgglomerativeClustering(n_clusters=2).fit(iris[0]), sample)
    with pytest.raises(ConversionError, match=r"cannot convert a builtins\.dict"):
        convert({"weights": [1, 2]}, sample)


def test_importing_convert_does_not_import_training_libraries() -> None:
    heavy = {"sklearn", "skl2onnx", "pandas", "onnx", "onnxruntime", "onnxmltools"}
    heavy |= {"xgboost", "lightgbm", "torch", "onnxscript", "matplotlib"}
    code = (
        "import sys, packager.build.convert; "
        f"print(sorted(set({sorted(heavy)!r}) & set(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert run.stdout.strip() == "[]"
