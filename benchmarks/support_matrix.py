"""The support matrix: every model family packager converts, packaged, installed and run.

The same list drives tests/convert/test_matrix.py and the README's "Supported
models" table, so the table says what the tests prove:

    python benchmarks/support_matrix.py              # print the table
    python benchmarks/support_matrix.py --write README.md

Each case trains a small model on small data. SUPPORTED cases go through
package -> publish (embedded registry) -> install -> predict; LIMITATIONS are
what the upstream converters cannot do, each with the error packager gives.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from packager._io.table import Table, from_mapping

START = "<!-- support-matrix:start -->"
END = "<!-- support-matrix:end -->"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One model to package. ``build`` trains it and returns (model, sample);
    ``options`` are its ConvertOptions (precision, input shape, task); ``refused`` names the error a
    limitation ends in (None: it must work) and ``match`` a phrase of its message."""

    id: str
    family: str
    estimator: str
    build: Callable[[], tuple[Any, Table]]
    options: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None
    match: str = ""
    note: str = ""


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: str
    max_abs_diff: float | None = None
    label_agreement: float | None = None
    input_cast: str | None = None
    input_dtypes: str = ""
    error: str = ""
    predicted_rows: int = 0


def positional(x: np.ndarray) -> Table:
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return x[:200], y[:200]


def classifier(make: Callable[[], Any]) -> Callable[[], tuple[Any, Table]]:
    def build() -> tuple[Any, Table]:
        x, y = iris()
        return _fit(make(), x, y), positional(x[::3])

    return build


def regressor(make: Callable[[], Any]) -> Callable[[], tuple[Any, Table]]:
    def build() -> tuple[Any, Table]:
        x, y = diabetes()
        return _fit(make(), x, y), positional(x[::4])

    return build


def blobs() -> np.ndarray:
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n_samples=150, centers=3, n_features=4, random_state=0)
    return np.asarray(x)


def unsupervised(
    make: Callable[[], Any], data: Callable[[], np.ndarray] = blobs
) -> Callable[[], tuple[Any, Table]]:
    """Clustering and outlier detection: fitted on ``data`` (three blobs) without labels."""

    def build() -> tuple[Any, Table]:
        x = data()
        return make().fit(x), positional(x[::3])

    return build


def _fit(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        # SVC(probability=True) is deprecated in scikit-learn 1.9 but still what users have;
        # small MLPs stop before converging. Neither matters to the conversion.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return model.fit(x, y)


def column_transformer() -> tuple[Any, Table]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "oslo", "lima", ""], n),  # "" is a missing city
            "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 10, n)),
            "income": rng.normal(50, 20, n),
        }
    )
    labels = np.where((frame["city"] == "oslo") | (frame["income"] > 60), "yes", "no")
    city = make_pipeline(
        SimpleImputer(missing_values="", strategy="constant", fill_value="unknown"),
        OneHotEncoder(handle_unknown="ignore"),
    )
    columns = ColumnTransformer(
        [("num", SimpleImputer(strategy="median"), ["age", "income"]), ("cat", city, ["city"])]
    )
    model = Pipeline([("prep", columns), ("clf", LogisticRegression(max_iter=1000))])
    model.fit(frame, labels)
    return model, from_mapping({c: frame[c].to_numpy() for c in frame.columns})


def categorical_hist_gradient_boosting() -> tuple[Any, Table]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 4, 200), rng.normal(size=200)]).astype(np.float64)
    y = (x[:, 0] == 2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(x, y)
    return model, positional(x)


def torch_mlp() -> tuple[Any, Table]:
    import torch

    torch.manual_seed(0)
    x, y = iris()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 3),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    features = torch.tensor(x, dtype=torch.float32)
    targets = torch.tensor(y)
    for _ in range(50):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features), targets)
        loss.backward()
        optimizer.step()
    return model, positional(x[::3])


def torch_cnn() -> tuple[Any, Table]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 13 * 13, 10),
    )
    images = np.random.default_rng(0).random((8, 28 * 28))
    return model, positional(images)


def torch_data_dependent_branch() -> tuple[Any, Table]:
    import torch

    class Gate(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            if x.sum() > 0:  # a Python branch on a value: torch.export cannot trace it
                return x * 2
            return x

    return Gate(), positional(np.ones((4, 3)))


def _sklearn() -> dict[str, Any]:
    from sklearn import cluster, ensemble, linear_model, neighbors, neural_network, svm

    return {
        "cluster": cluster,
        "ensemble": ensemble,
        "linear_model": linear_model,
        "neighbors": neighbors,
        "neural_network": neural_network,
        "svm": svm,
    }


def _sk(module: str, name: str, **params: Any) -> Callable[[], Any]:
    return lambda: getattr(_sklearn()[module], name)(**params)


def _pipeline(*steps: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> Any:
        from sklearn.pipeline import make_pipeline

        return make_pipeline(*(step() for step in steps))

    return make


def _imputer() -> Any:
    from sklearn.impute import SimpleImputer

    return SimpleImputer()


def _scaler() -> Any:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


def _xgb(kind: str, **params: Any) -> Callable[[], Any]:
    def make() -> Any:
        import xgboost

        return getattr(xgboost, kind)(**{"n_estimators": 10, "max_depth": 3, **params})

    return make


def _lgbm(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        import lightgbm

        return getattr(lightgbm, kind)(n_estimators=10, num_leaves=8, verbose=-1)

    return make


SUPPORTED: tuple[Case, ...] = (
    Case(
        "logistic-regression",
        "scikit-learn",
        "LogisticRegression",
        classifier(_sk("linear_model", "LogisticRegression", max_iter=500)),
    ),
    Case(
        "logistic-regression-float64",
        "scikit-learn",
        "LogisticRegression, float64 graph",
        classifier(_sk("linear_model", "LogisticRegression", max_iter=500)),
        options={"precision": "float64"},
    ),
    Case(
        "svc-probability",
        "scikit-learn",
        "SVC(probability=True)",
        classifier(_sk("svm", "SVC", probability=True, random_state=0)),
    ),
    Case(
        "svc-scores",
        "scikit-learn",
        "SVC() without probability: output `scores`",
        classifier(_sk("svm", "SVC")),
    ),
    Case(
        "k-neighbors",
        "scikit-learn",
        "KNeighborsClassifier",
        classifier(_sk("neighbors", "KNeighborsClassifier")),
    ),
    Case(
        "random-forest",
        "scikit-learn",
        "RandomForestClassifier",
        classifier(_sk("ensemble", "RandomForestClassifier", n_estimators=10, random_state=0)),
    ),
    Case(
        "extra-trees-regressor",
        "scikit-learn",
        "ExtraTreesRegressor",
        regressor(_sk("ensemble", "ExtraTreesRegressor", n_estimators=10, random_state=0)),
    ),
    Case(
        "gradient-boosting",
        "scikit-learn",
        "GradientBoostingClassifier",
        classifier(_sk("ensemble", "GradientBoostingClassifier", n_estimators=10, random_state=0)),
    ),
    Case(
        "hist-gradient-boosting-regressor",
        "scikit-learn",
        "HistGradientBoostingRegressor",
        regressor(_sk("ensemble", "HistGradientBoostingRegressor", max_iter=10, random_state=0)),
    ),
    Case("ridge", "scikit-learn", "Ridge", regressor(_sk("linear_model", "Ridge"))),
    Case(
        "mlp-classifier",
        "scikit-learn",
        "MLPClassifier",
        classifier(
            _pipeline(
                _scaler,
                _sk(
                    "neural_network",
                    "MLPClassifier",
                    hidden_layer_sizes=(16,),
                    max_iter=300,
                    random_state=0,
                ),
            )
        ),
    ),
    Case(
        "column-transformer",
        "scikit-learn",
        "ColumnTransformer(SimpleImputer, SimpleImputer + OneHotEncoder on strings) + "
        "LogisticRegression",
        column_transformer,
    ),
    Case(
        "kmeans",
        "scikit-learn",
        "KMeans",
        unsupervised(_sk("cluster", "KMeans", n_clusters=3, n_init=3, random_state=0)),
    ),
    Case(
        "minibatch-kmeans",
        "scikit-learn",
        "MiniBatchKMeans",
        unsupervised(_sk("cluster", "MiniBatchKMeans", n_clusters=3, n_init=3, random_state=0)),
    ),
    Case(
        "isolation-forest",
        "scikit-learn",
        "IsolationForest",
        unsupervised(_sk("ensemble", "IsolationForest", n_estimators=20, random_state=0)),
    ),
    Case(
        "local-outlier-factor-novelty",
        "scikit-learn",
        "LocalOutlierFactor(novelty=True)",
        unsupervised(_sk("neighbors", "LocalOutlierFactor", novelty=True)),
    ),
    Case(
        "one-class-svm",
        "scikit-learn",
        "OneClassSVM",
        unsupervised(_pipeline(_scaler, _sk("svm", "OneClassSVM", nu=0.1))),
    ),
    Case("xgboost-classifier", "XGBoost", "XGBClassifier", classifier(_xgb("XGBClassifier"))),
    Case(
        "xgboost-regressor-pipeline",
        "XGBoost",
        "SimpleImputer + XGBRegressor",
        regressor(_pipeline(_imputer, _xgb("XGBRegressor"))),
    ),
    Case(
        "lightgbm-classifier-pipeline",
        "LightGBM",
        "SimpleImputer + LGBMClassifier",
        classifier(_pipeline(_imputer, _lgbm("LGBMClassifier"))),
    ),
    Case("lightgbm-regressor", "LightGBM", "LGBMRegressor", regressor(_lgbm("LGBMRegressor"))),
    Case(
        "torch-mlp",
        "PyTorch",
        "MLP (nn.Sequential of Linear/ReLU), task classification",
        torch_mlp,
        options={"task": "classification"},
    ),
    Case(
        "torch-cnn",
        "PyTorch",
        "CNN (Conv2d, MaxPool2d, Linear), input 1x28x28",
        torch_cnn,
        options={"input_shape": (1, 28, 28)},
    ),
)

LIMITATIONS: tuple[Case, ...] = (
    Case(
        "local-outlier-factor-outlier-detection",
        "scikit-learn",
        "LocalOutlierFactor() without novelty",
        unsupervised(_sk("neighbors", "LocalOutlierFactor")),
        refused="ConversionError",
        match="novelty=True",
        note="Without novelty=True it labels only the rows it was fitted on: it has no "
        "predict for new rows.",
    ),
    Case(
        "local-outlier-factor-duplicates",
        "scikit-learn",
        "LocalOutlierFactor(novelty=True) fitted on duplicate rows (iris)",
        unsupervised(_sk("neighbors", "LocalOutlierFactor", novelty=True), lambda: iris()[0]),
        refused="ParityError",
        match="output 'scores'",
        note="Neighbours at equal distances are ranked differently by the ONNX graph, so the "
        "scores differ (the labels agree); the parity check refuses it. Deduplicate the "
        "training rows.",
    ),
    Case(
        "hist-gradient-boosting-categorical",
        "scikit-learn",
        "HistGradientBoostingClassifier(categorical_features=...)",
        categorical_hist_gradient_boosting,
        refused="ConversionError",
        match="categorical",
        note="skl2onnx would read categorical splits as thresholds; one-hot encode instead.",
    ),
    Case(
        "gradient-boosting-regressor-float64",
        "scikit-learn",
        "GradientBoostingRegressor, float64 graph",
        regressor(_sk("ensemble", "GradientBoostingRegressor", n_estimators=10, random_state=0)),
        options={"precision": "float64"},
        refused="cast",
        match="no float64 graph",
        note="skl2onnx's double-precision tree ensemble fails ONNX type inference (its output "
        "stays float); packaged as float32 with validation.inputCast recorded.",
    ),
    Case(
        "xgboost-float64",
        "XGBoost",
        "XGBClassifier, float64 graph",
        classifier(_xgb("XGBClassifier")),
        options={"precision": "float64"},
        refused="cast",
        match="no float64 graph",
        note="onnxmltools writes float trees only; packaged as float32 with the cast recorded.",
    ),
    Case(
        "xgboost-after-scaler",
        "XGBoost",
        "StandardScaler + XGBClassifier",
        classifier(_pipeline(_scaler, _xgb("XGBClassifier", n_estimators=20))),
        refused="ParityError",
        match="Labels must agree exactly",
        note="XGBoost splits sit exactly on training values; the float32 scaler in ONNX "
        "moves some by one ulp across a split. Put XGBoost behind exact steps (imputers, "
        "encoders) or use float32 features.",
    ),
    Case(
        "torch-data-dependent-branch",
        "PyTorch",
        "module with a Python `if` on a tensor value",
        torch_data_dependent_branch,
        refused="ConversionError",
        match="torch.onnx.export",
        note="torch.export cannot trace data-dependent control flow; use torch.cond or "
        "script the module (TorchScript files use the TorchScript exporter).",
    ),
)


def run_case(case: Case, *, work: Path, key: Any, public_key: Any) -> Outcome:
    """Package, publish, install and run the case's model; a refusal becomes the outcome.

    Only packager's own errors count as refusals: anything else propagates.
    """
    from packager.build.bundle import package
    from packager.build.options import ConvertOptions, PackageOptions
    from packager.core.policy import Trusted, Unverified, adhoc_policy
    from packager.distribution.publish import publish_bundle
    from packager.errors import PackagerError
    from packager.instance.install import InstallOptions, install
    from packager.instance.models import load
    from packager.instance.store import Store
    from packager.registry.layout import LayoutRegistry

    model, sample = case.build()
    notes: list[str] = []
    try:
        bundle = package(
            model,
            sample=sample,
            name=case.id,
            version="1.0.0",
            key=key,
            out_dir=work / "dist",
            options=PackageOptions(conversion=ConvertOptions(**case.options)),
            progress=notes.append,
        )
    except PackagerError as e:
        return Outcome(case, type(e).__name__, error=str(e))
    registry = LayoutRegistry(work / "registry")
    publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    home = work / "home"
    install(
        case.id,
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([public_key]))),
    )
    installed = load(case.id, home=home)
    answers = installed.predict(sample)
    rows = {len(v) for v in answers.values()}
    validation = installed.manifest.validation
    status = "ok"
    if validation.input_cast and case.options.get("precision") == "float64":
        status = "cast"  # asked for a float64 graph, got float32 inputs
    elif len(installed.outputs) > len(_expected_outputs(installed)):
        status = "labels-only"  # some outputs have nothing in the original to check against
    return Outcome(
        case,
        status,
        max_abs_diff=float(validation.max_abs_diff),
        label_agreement=validation.label_agreement,
        input_cast=validation.input_cast,
        input_dtypes=", ".join(sorted({spec.dtype for spec in installed.inputs})),
        error=" ".join(notes),
        predicted_rows=rows.pop() if len(rows) == 1 else -1,
    )


def _expected_outputs(model: Any) -> set[str]:
    from packager._io.testvectors import read_testvectors

    _, expected = read_testvectors(model.directory / model.manifest.validation.testvectors)
    return set(expected)


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| family | model | status | graph inputs | max abs diff | label agreement |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        status = "supported"
        if o.case.refused is not None:
            status = {"cast": "float32 only", "labels-only": "labels only"}.get(
                o.status, f"refused: {o.status}"
            )
        diff = "-" if o.max_abs_diff is None else f"{o.max_abs_diff:.2g}"
        agreement = "-" if o.label_agreement is None else f"{o.label_agreement:.0%}"
        lines.append(
            f"| {o.case.family} | {o.case.estimator} | {status} | {o.input_dtypes or '-'} "
            f"| {diff} | {agreement} |"
        )
    lines.append("")
    lines.append("What the upstream converters cannot do, and what packager says:")
    lines.append("")
    for o in outcomes:
        if o.case.refused is None:
            continue
        message = _one_line(o.error) or "packaged"
        lines.append(f"- **{o.case.estimator}** ({o.case.family}): {o.case.note}")
        lines.append(f"  `{message}`")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 240) -> str:
    text = re.sub(r"\s+", " ", text).strip().replace("`", "'")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="README to update between the markers")
    args = parser.parse_args(argv)
    from packager._io.keys import keygen, load_private_key, load_public_key

    outcomes = []
    with tempfile.TemporaryDirectory(prefix="support-matrix-") as tmp:
        root = Path(tmp)
        key_path, pub_path = keygen(root / "keys", password=b"matrix")
        key = load_private_key(key_path, password=lambda: b"matrix")
        public = load_public_key(pub_path)
        for case in (*SUPPORTED, *LIMITATIONS):
            outcomes.append(run_case(case, work=root / case.id, key=key, public_key=public))
            print(f"{case.id}: {outcomes[-1].status}", file=sys.stderr)
    text = table(outcomes)
    if args.write is None:
        print(text)
        return 0
    readme = args.write.read_text()
    if START not in readme or END not in readme:
        print(f"{args.write} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    args.write.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
