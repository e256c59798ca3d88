"""XGBoost and LightGBM through their scikit-learn API: plain, in pipelines, and missing extras."""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import load_diabetes, load_iris
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from packager._io.table import Table, from_mapping
from packager.build.convert import convert, load_model_file
from packager.build.convert.base import Options
from packager.errors import ConversionError, ParityError


def positional(x: np.ndarray) -> Table:
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x[:150], y[:150]


def registry_state() -> tuple[int, int, int]:
    from skl2onnx._parse import sklearn_parsers_map
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import _converter_pool

    return len(sklearn_operator_name_map), len(sklearn_parsers_map), len(_converter_pool)


@pytest.mark.parametrize(
    "make",
    [
        lambda: XGBClassifier(n_estimators=8, max_depth=3),
        lambda: make_pipeline(SimpleImputer(), XGBClassifier(n_estimators=8, max_depth=3)),
        lambda: LGBMClassifier(n_estimators=8, verbose=-1),
        lambda: make_pipeline(SimpleImputer(), LGBMClassifier(n_estimators=8, verbose=-1)),
    ],
    ids=["xgb", "xgb-pipeline", "lgbm", "lgbm-pipeline"],
)
def test_classifiers(make: object, iris: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = iris
    model = make().fit(x, y)  # type: ignore[operator]
    before = registry_state()
    conversion = convert(model, positional(x))
    assert registry_state() == before  # registered for the call only
    assert [o.name for o in conversion.outputs] == ["label", "probabilities"]
    assert conversion.task == "classification"
    assert conversion.comparison.label_agreement == 1.0
    assert conversion.comparison.max_abs_diff < 1e-6
    seen = conversion.feeds["input"].astype(np.float64)
    np.testing.assert_array_equal(conversion.expected["label"], model.predict(seen))
    assert conversion.source["converter"] == "skl2onnx+onnxmltools"
    assert conversion.source["framework"] in ("xgboost", "lightgbm")
    assert conversion.accepts_missing is True  # NaN has a branch in every tree, as in ONNX
    # onnxmltools' tree converters stop at these opsets.
    opsets = {o.domain: o.version for o in conversion.model.opset_import}
    assert opsets["ai.onnx.ml"] == 3
    assert opsets[""] <= 15


@pytest.mark.parametrize(
    "make",
    [
        lambda: XGBRegressor(n_estimators=8, max_depth=3),
        lambda: make_pipeline(SimpleImputer(), LGBMRegressor(n_estimators=8, verbose=-1)),
    ],
    ids=["xgb", "lgbm-pipeline"],
)
def test_regressors(make: object, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = diabetes
    model = make().fit(x, y)  # type: ignore[operator]
    conversion = convert(model, positional(x))
    assert conversion.task == "regression"
    assert conversion.comparison.ok
    # Relative to targets of a few hundred: float32 trees.
    assert conversion.comparison.max_abs_diff < 1e-4 * np.abs(y).max()


def test_xgboost_trained_on_named_columns(iris: tuple[np.ndarray, np.ndarray]) -> None:
    frame = pd.DataFrame(iris[0], columns=["sepal length", "sepal width", "petal", "width"])
    model = XGBClassifier(n_estimators=5).fit(frame, iris[1])
    conversion = convert(model, from_mapping({c: frame[c].to_numpy() for c in frame.columns}))
    assert [s.name for s in conversion.inputs] == list(frame.columns)
    assert conversion.comparison.label_agreement == 1.0
    # The caller's model still has its feature names.
    assert model.get_booster().feature_names == list(frame.columns)


def test_scaled_features_before_xgboost_fail_parity(iris: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = iris
    model = make_pipeline(StandardScaler(), XGBClassifier(n_estimators=20, max_depth=3)).fit(x, y)
    with pytest.raises(ParityError, match=r"label agreement 9\d\.\d%.*Labels must agree exactly"):
        convert(model, positional(x))


def test_float64_falls_back_to_a_recorded_cast(iris: tuple[np.ndarray, np.ndarray]) -> None:
    model = LGBMClassifier(n_estimators=5, verbose=-1).fit(*iris)
    conversion = convert(model, positional(iris[0]), Options(precision="float64"))
    assert conversion.inputs[0].dtype == "float32"
    assert conversion.input_cast == "float64->float32"
    assert conversion.notes and "no float64 graph" in conversion.notes[0]


@pytest.mark.parametrize(("library", "extra"), [("xgboost", "xgboost"), ("lightgbm", "lightgbm")])
def test_missing_converter_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    iris: tuple[np.ndarray, np.ndarray],
    library: str,
    extra: str,
) -> None:
    model = (
        XGBClassifier(n_estimators=3) if library == "xgboost" else LGBMClassifier(n_estimators=3)
    ).fit(*iris)
    # A None entry makes `import onnxmltools` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "onnxmltools", None)
    with pytest.raises(ConversionError, match=rf"needs onnxmltools.*packager\[{extra}\]") as info:
        convert(model, positional(iris[0]))
    assert info.value.exit_code == 5


def test_pickle_of_a_missing_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    joblib.dump(XGBClassifier(n_estimators=3).fit(*iris), tmp_path / "model.joblib")
    for name in [m for m in sys.modules if m == "xgboost" or m.startswith("xgboost.")]:
        monkeypatch.setitem(sys.modules, name, None)
    hint = r"needs xgboost.*pip install 'onnx-packager\[xgboost\]'"
    with pytest.raises(ConversionError, match=hint):
        load_model_file(tmp_path / "model.joblib")
