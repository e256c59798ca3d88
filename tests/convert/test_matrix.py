"""The support matrix: each family packaged, published, installed and run; each limitation refused.

The cases live in benchmarks/support_matrix.py, which also writes the README's
table, so the table lists exactly what this test proves. No case is skipped: a
missing extra (xgboost, lightgbm, torch) fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import KeyPair

ROOT = Path(__file__).resolve().parents[2]


def _load_matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "support_matrix", ROOT / "benchmarks" / "support_matrix.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


matrix = _load_matrix()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True), deprecated in 1.9
@pytest.mark.parametrize("case", matrix.SUPPORTED, ids=lambda c: c.id)
def test_supported(case: object, tmp_path: Path, keypair: KeyPair) -> None:
    outcome = matrix.run_case(case, work=tmp_path, key=keypair.private, public_key=keypair.public)
    assert outcome.status == "ok", outcome.error
    _, sample = case.build()  # type: ignore[attr-defined]
    assert outcome.predicted_rows == sample.rows
    assert outcome.max_abs_diff is not None and outcome.max_abs_diff < 1e-3
    if outcome.label_agreement is not None:
        assert outcome.label_agreement == 1.0


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("case", matrix.LIMITATIONS, ids=lambda c: c.id)
def test_limitation(case: object, tmp_path: Path, keypair: KeyPair) -> None:
    outcome = matrix.run_case(case, work=tmp_path, key=keypair.private, public_key=keypair.public)
    assert outcome.status == case.refused, outcome.error  # type: ignore[attr-defined]
    assert case.match in outcome.error  # type: ignore[attr-defined]


def test_the_matrix_covers_the_families_users_train() -> None:
    covered = {c.estimator.split(",")[0] for c in matrix.SUPPORTED}
    for estimator in (
        "LogisticRegression",
        "SVC(probability=True)",
        "KNeighborsClassifier",
        "RandomForestClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingClassifier",
        "HistGradientBoostingRegressor",
        "Ridge",
        "MLPClassifier",
        "XGBClassifier",
        "LGBMRegressor",
        "KMeans",
        "MiniBatchKMeans",
        "IsolationForest",
        "LocalOutlierFactor(novelty=True)",
        "OneClassSVM",
    ):
        assert estimator in covered
    families = {c.family for c in matrix.SUPPORTED}
    assert families == {"scikit-learn", "XGBoost", "LightGBM", "PyTorch"}


def test_readme_table_lists_every_case() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.partition(matrix.START)[2].partition(matrix.END)[0]
    assert section, "README.md lacks the support matrix; run benchmarks/support_matrix.py --write"
    for case in (*matrix.SUPPORTED, *matrix.LIMITATIONS):
        assert f"| {case.family} | {case.estimator} |" in section, case.id
