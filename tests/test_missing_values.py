"""Missing values: a blank cell, a JSON null or a NaN never gets a confident answer from a model
whose original refused it.

`package` asks the original model whether it takes missing values and records the answer
(`model.acceptsMissing`); instances refuse missing values (exit 2, naming the column and row)
unless it is true, through `packager predict` and `Model.predict` alike.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packager.build.api import package
from packager.cli import main
from packager.core.manifest import MANIFEST, parse_manifest
from packager.errors import UsageError
from packager.runtime import Model

from .conftest import KeyPair

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def gaps(iris: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Iris with a tenth of the values missing."""
    x = iris[0].copy()
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    return x


@pytest.fixture(scope="module")
def hgb(iris: tuple[np.ndarray, np.ndarray], gaps: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(gaps, iris[1])


@pytest.fixture(scope="module")
def hgb_bundle(
    hgb: Any, iris: tuple[np.ndarray, np.ndarray], keypair: KeyPair, tmp_path_factory: Any
) -> Path:
    """HistGradientBoosting takes NaN; the sample has none, so only the probe can tell."""
    out = tmp_path_factory.mktemp("hgb")
    sample = {name: iris[0][::5, i] for i, name in enumerate(COLUMNS)}
    return package(
        hgb, sample=sample, name="hgb", version="1.0.0", key=keypair.private, out_dir=out
    )


@pytest.fixture(scope="module")
def shop_bundle(keypair: KeyPair, tmp_path_factory: Any) -> Path:
    """A DataFrame model with a text column (one-hot encoded) and a number column."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"color": rng.choice(["red", "blue"], 60), "size": rng.normal(10, 3, 60)})
    labels = np.where(frame["size"] + 3 * (frame["color"] == "red") > 11, 1, 0)
    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("scale", StandardScaler(), ["size"]),
        ]
    )
    model = Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(frame, labels)
    out = tmp_path_factory.mktemp("shop")
    return package(
        model, sample=frame, name="shop", version="1.0.0", key=keypair.private, out_dir=out
    )


def accepts_missing(bundle: Path) -> bool | None:
    return parse_manifest((bundle / MANIFEST).read_bytes()).model.accepts_missing


def test_package_records_whether_the_original_takes_missing_values(
    bundles: dict[str, Path], hgb_bundle: Path, shop_bundle: Path
) -> None:
    assert accepts_missing(bundles["1.0.0"]) is False  # LogisticRegression raises on NaN
    assert accepts_missing(shop_bundle) is False
    assert accepts_missing(hgb_bundle) is True
    doc = json.loads((hgb_bundle / MANIFEST).read_bytes())
    assert doc["model"]["acceptsMissing"] is True


def test_the_api_refuses_nan_and_none_naming_column_and_row(
    bundles: dict[str, Path], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    model = Model.open(bundles["1.0.0"])
    rows = iris[0][:3].astype(np.float32)
    rows[1, 2] = np.nan
    with pytest.raises(UsageError, match=r"column 2 of input 'input', row 1 is missing \(NaN\)"):
        model.predict(rows)  # the array onnxruntime takes as it is
    with pytest.raises(UsageError, match=r"row 1 is missing"):
        model.predict(rows.astype(np.float64).tolist())
    columns: dict[str, list[float | None]] = {
        name: iris[0][:3, i].tolist() for i, name in enumerate(COLUMNS)
    }
    columns["petal_width"][2] = None
    with pytest.raises(UsageError, match=r"column 'petal_width' row 2 is missing"):
        model.predict(columns)
    rows[1, 2] = 1.0
    assert model.predict(rows)["label"].shape == (3,)


def test_a_model_that_takes_missing_values_still_predicts_with_them(
    hgb: Any, hgb_bundle: Path, gaps: np.ndarray
) -> None:
    model = Model.open(hgb_bundle)
    rows = gaps[:20]
    assert np.isnan(rows).any()
    got = model.predict({name: rows[:, i] for i, name in enumerate(COLUMNS)})
    np.testing.assert_array_equal(got["label"], hgb.predict(rows))


def test_a_bundle_that_does_not_say_is_refused_missing_values(
    hgb_bundle: Path, gaps: np.ndarray, tmp_path: Path
) -> None:
    """Bundles made before acceptsMissing was recorded: unknown is refused, the safe side."""
    old = tmp_path / "old"
    shutil.copytree(hgb_bundle, old)
    doc = json.loads((old / MANIFEST).read_bytes())
    del doc["model"]["acceptsMissing"]
    (old / MANIFEST).write_text(json.dumps(doc))
    assert accepts_missing(old) is None
    with pytest.raises(UsageError, match="is missing"):
        Model.open(old).predict(gaps[:20].astype(np.float32))


def predict(capsys: pytest.CaptureFixture[str], name: str, path: Path) -> tuple[int, str]:
    code = main(["predict", name, "--input", str(path), "--json"])
    return code, capsys.readouterr().err


def test_predict_refuses_a_blank_cell_and_a_json_null_with_exit_2(
    capsys: pytest.CaptureFixture[str],
    bundles: dict[str, Path],
    shop_bundle: Path,
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    for bundle in (bundles["1.0.0"], shop_bundle):
        assert main(["-q", "publish", str(bundle)]) == 0
    for name in ("iris", "shop"):
        assert main(["-q", "install", name, "--key", str(keypair.pub_path)]) == 0

    blank = tmp_path / "blank.csv"
    blank.write_text(",".join(COLUMNS) + "\n5.1,3.5,1.4,0.2\n6.3,3.3,,2.5\n")
    code, err = predict(capsys, "iris", blank)
    assert code == 2
    assert "column 'petal_length' row 1 is missing (NaN)" in err

    null = tmp_path / "null.json"
    null.write_text(json.dumps([dict(zip(COLUMNS, [5.1, 3.5, 1.4, None], strict=True))]))
    code, err = predict(capsys, "iris", null)
    assert code == 2
    assert "column 'petal_width' row 0 is missing (NaN)" in err

    text = tmp_path / "text.csv"
    text.write_text("color,size\nred,10\n,12\n")
    code, err = predict(capsys, "shop", text)
    assert code == 2
    assert "column 'color' row 1 is missing (empty)" in err
    text_null = tmp_path / "text.json"
    text_null.write_text(json.dumps({"color": ["red", None], "size": [10, 12]}))
    code, err = predict(capsys, "shop", text_null)
    assert code == 2
    assert "column 'color' row 1 is missing (empty)" in err

    text.write_text("color,size\nred,10\nblue,12\n")
    code, err = predict(capsys, "shop", text)
    assert code == 0, err


def test_a_graph_that_answers_nan_otherwise_than_the_original_refuses_it(
    iris: tuple[np.ndarray, np.ndarray], gaps: np.ndarray
) -> None:
    """scikit-learn's own trees learn where NaN goes; skl2onnx's tree converter does not
    carry that, so the graph would answer missing values differently: recorded as refused."""
    from sklearn.tree import DecisionTreeClassifier

    from packager._io.table import from_mapping
    from packager.build.convert import convert

    model = DecisionTreeClassifier(random_state=0).fit(gaps, iris[1])
    model.predict(gaps[:5])  # the original does take NaN
    conversion = convert(model, from_mapping({n: iris[0][::5, i] for i, n in enumerate(COLUMNS)}))
    assert conversion.accepts_missing is False
    (note,) = conversion.notes
    assert "takes missing values (NaN) but the ONNX model answers differently" in note
