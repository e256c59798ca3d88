"""Train the demo model: a scikit-learn pipeline on the iris data set shipped with scikit-learn.

Writes model.joblib, sample.csv (rows used to check and test the bundle) and
input.csv (rows to predict on the instance) into the directory given.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def write_csv(path: Path, header: list[str], rows: list[list[float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    iris = load_iris()
    columns = [name.replace(" (cm)", "").replace(" ", "_") for name in iris.feature_names]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(iris.data, iris.target)
    joblib.dump(model, out / "model.joblib")
    write_csv(out / "sample.csv", columns, iris.data[::5].tolist())
    write_csv(out / "input.csv", columns, iris.data[[0, 60, 120]].tolist())
    print(f"trained {type(model).__name__} on {len(iris.data)} rows -> {out / 'model.joblib'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"))
