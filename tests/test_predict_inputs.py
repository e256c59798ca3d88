"""`predict` takes rows as users have them: for a model trained on a DataFrame, rows in the
manifest's column order, records, a dict of columns, a DataFrame, and on the command line
CSV, JSON or NDJSON from standard input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packager.build.api import package
from packager.errors import UsageError
from packager.runtime import Model

from .conftest import KeyPair

ROWS = [["red", 10.0], ["blue", 12.5], ["red", 4.0]]


@pytest.fixture(scope="module")
def shop(keypair: KeyPair, tmp_path_factory: Any) -> tuple[Any, Path]:
    """A classifier trained on a DataFrame: a text column and a number column."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"color": rng.choice(["red", "blue"], 60), "size": rng.normal(10, 3, 60)})
    labels = np.where(frame["size"] + 3 * (frame["color"] == "red") > 11, 1, 0)
    columns = ColumnTransformer(
        [("onehot", OneHotEncoder(), ["color"]), ("scale", StandardScaler(), ["size"])]
    )
    model = Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(frame, labels)
    out = tmp_path_factory.mktemp("shop")
    bundle = package(
        model, sample=frame, name="shop", version="1.0.0", key=keypair.private, out_dir=out
    )
    return model, bundle


def expected(model: Any) -> np.ndarray:
    import pandas as pd

    return np.asarray(model.predict(pd.DataFrame(ROWS, columns=["color", "size"])))


def test_every_form_of_rows_gives_the_originals_labels(shop: tuple[Any, Path]) -> None:
    import pandas as pd

    model, bundle = shop
    onnx = Model.open(bundle)
    assert [s.name for s in onnx.inputs] == ["color", "size"]
    forms = {
        "rows": ROWS,
        "tuples": [tuple(r) for r in ROWS],
        "records": [{"size": s, "color": c} for c, s in ROWS],
        "columns": {"color": [r[0] for r in ROWS], "size": [r[1] for r in ROWS]},
        "dataframe": pd.DataFrame(ROWS, columns=["color", "size"]),
    }
    for form, rows in forms.items():
        assert onnx.predict(rows)["label"].tolist() == expected(model).tolist(), form


def test_text_tensors_of_objects_go_as_strings(shop: tuple[Any, Path]) -> None:
    """Input tensors given whole, text as an array of objects: strings go as they are
    (never padded to the longest), bytes as UTF-8 text; None and NaN are missing values."""
    model, bundle = shop
    onnx = Model.open(bundle)
    colors = np.array([[c] for c, _ in ROWS], dtype=object)
    sizes = np.array([[s] for _, s in ROWS], dtype=np.float32)
    labels = expected(model).tolist()
    assert onnx.predict({"color": colors, "size": sizes})["label"].tolist() == labels
    as_bytes = np.array([[c.encode()] for c, _ in ROWS], dtype=object)
    assert onnx.predict({"color": as_bytes, "size": sizes})["label"].tolist() == labels
    for missing in (None, float("nan")):
        holed = colors.copy()
        holed[1, 0] = missing
        with pytest.raises(UsageError, match="row 1 is missing"):
            onnx.predict({"color": holed, "size": sizes})
    bad = colors.copy()
    bad[0, 0] = b"\xff"
    with pytest.raises(UsageError, match="not UTF-8"):
        onnx.predict({"color": bad, "size": sizes})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["red", 10.0], ["blue"]], "row 1 is not a list of 2 values like row 0"),
        ([["red", 10.0, 1.0]], "rows of 2 values in that order"),
        ([{"color": "red", "size": 1.0}, {"color": "red"}], "record 1 has other keys"),
        ([{"colour": "red", "size": 1.0}], "missing column"),
    ],
)
def test_rows_that_do_not_fit_are_refused(
    shop: tuple[Any, Path], rows: list[Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        Model.open(shop[1]).predict(rows)


def test_the_instance_never_imports_pandas_itself(shop: tuple[Any, Path]) -> None:
    code = (
        "import sys; from pathlib import Path; from packager.runtime import Model\n"
        f"m = Model.open(Path({str(shop[1])!r}))\n"
        f"m.predict({ROWS!r}); m.predict([{{'color': 'red', 'size': 1.0}}])\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


STDIN = {
    "csv": "color,size\nred,10\nblue,12.5\nred,4\n",
    "json-rows": json.dumps(ROWS),
    "json-records": json.dumps([{"color": c, "size": s} for c, s in ROWS]),
    "json-columns": json.dumps({"color": ["red", "blue", "red"], "size": [10, 12.5, 4]}),
    "ndjson-records": "".join(json.dumps({"color": c, "size": s}) + "\n" for c, s in ROWS),
    "ndjson-rows": "".join(json.dumps(r) + "\n" for r in ROWS),
}


def test_predict_reads_csv_json_and_ndjson_from_standard_input(
    shop: tuple[Any, Path], keypair: KeyPair, home: Path
) -> None:
    def packager(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PACKAGER_HOME": str(home),
            "PYTHONPATH": str(Path(__file__).parent.parent),
        }
        return subprocess.run(
            [sys.executable, "-m", "packager", "-q", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    assert packager("publish", str(shop[1])).returncode == 0
    installed = packager("install", "shop", "--key", str(keypair.pub_path))
    assert installed.returncode == 0, installed.stderr
    want = expected(shop[0]).tolist()
    for form, text in STDIN.items():
        result = packager("predict", "shop", "--input", "-", "--json", stdin=text)
        assert result.returncode == 0, (form, result.stderr)
        assert json.loads(result.stdout)["outputs"]["label"] == want, form
    # --format says what sniffing cannot: a one-line NDJSON file is also JSON.
    one = packager(
        "predict", "shop", "--input", "-", "--format", "ndjson", "--json", stdin=STDIN["csv"]
    )
    assert one.returncode == 2, one.stderr
    assert one.stderr.startswith("packager: error: <stdin>")
    empty = packager("predict", "shop", "--input", "-", stdin="")
    assert empty.returncode == 2
    assert "standard input is empty" in empty.stderr


@pytest.fixture(scope="module")
def prices(keypair: KeyPair, tmp_path_factory: Any) -> tuple[Any, Any]:
    """A regressor trained on a DataFrame, and its sample."""
    import pandas as pd
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"rooms": rng.integers(1, 6, 40) * 1.0, "area": rng.normal(70, 20, 40)})
    return Ridge().fit(frame, 3 * frame["rooms"] + frame["area"]), frame


def test_a_regressor_predicts_a_flat_array_named_by_its_target(
    prices: tuple[Any, Any], keypair: KeyPair, tmp_path: Path
) -> None:
    from packager.build.options import Metadata, PackageOptions

    model, frame = prices
    named = package(
        model,
        sample=frame,
        name="prices",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "named",
        options=PackageOptions(metadata=Metadata(target="price")),
    )
    assert json.loads((named / "manifest.json").read_text())["model"]["target"] == "price"
    rows = frame.head(3).values.tolist()
    out = Model.open(named).predict(rows)
    assert list(out) == ["price"] and out["price"].shape == (3,)
    np.testing.assert_allclose(out["price"], model.predict(frame.head(3)), rtol=1e-4)

    unnamed = package(
        model,
        sample=frame,
        name="prices",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "unnamed",
    )
    assert "target" not in json.loads((unnamed / "manifest.json").read_text())["model"]
    out = Model.open(unnamed).predict(rows)
    assert list(out) == ["prediction"] and out["prediction"].shape == (3,)
    # The smoke test still compares the graph's own output, [N, 1] as recorded.
    assert Model.open(unnamed).smoke_test().ok


def test_package_target_name_option_names_the_output(
    capsys: pytest.CaptureFixture[str], prices: tuple[Any, Any], keypair: KeyPair, tmp_path: Path
) -> None:
    import joblib

    from packager.cli import main

    model, frame = prices
    joblib.dump(model, tmp_path / "prices.joblib")
    frame.to_csv(tmp_path / "sample.csv", index=False)
    code = main(
        [
            "package",
            str(tmp_path / "prices.joblib"),
            "--name",
            "prices",
            "--version",
            "1.0.0",
            "--sample",
            str(tmp_path / "sample.csv"),
            "--key",
            str(keypair.key_path),
            "-o",
            str(tmp_path / "dist"),
            "--target-name",
            "price",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    bundle = Path(out.strip())
    assert list(Model.open(bundle).predict(frame.head(2).to_dict("records"))) == ["price"]
