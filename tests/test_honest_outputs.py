"""A classifier without probabilities is packaged with its decision scores named `scores`,
and `package`, `inspect` and `verify` say what the bundle holds, counting the same files."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

import packager
from packager.core.signature import key_hint
from packager.runtime import Model

from .conftest import KeyPair, cli


@pytest.mark.parametrize(
    ("estimator", "binary"),
    [
        (SVC(), False),
        (SVC(), True),
        (LinearSVC(), False),
        (LinearSVC(), True),
        (RidgeClassifier(), False),
    ],
    ids=["svc", "svc-binary", "linearsvc", "linearsvc-binary", "ridge"],
)
def test_a_classifier_without_predict_proba_gives_scores(
    estimator: object,
    binary: bool,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    X, y = iris
    target = (y > 0).astype(int) if binary else y
    # skl2onnx cannot convert a pipeline ending in LinearSVC (it asks LinearSVC for a ZipMap).
    bare = isinstance(estimator, LinearSVC)
    model = (estimator if bare else make_pipeline(StandardScaler(), estimator)).fit(X, target)
    bundle = packager.package(
        model, sample=X[::5], name="svc", version="1.0.0", key=keypair.private, out_dir=tmp_path
    )
    graph = onnx.load(str(bundle / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["label", "scores"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [o["name"] for o in manifest["model"]["outputs"]] == ["label", "scores"]

    out = Model.open(bundle).predict(X[:5])
    label, scores = out["label"], out["scores"]
    assert np.array_equal(label, model.predict(X[:5]))
    decision = model.decision_function(X[:5])
    if decision.ndim == 2:  # one score per class: the original's, within float32
        np.testing.assert_allclose(scores, decision, rtol=1e-3, atol=1e-4)


def test_a_classifier_with_probabilities_keeps_them(
    iris: tuple[np.ndarray, np.ndarray], keypair: KeyPair, tmp_path: Path
) -> None:
    X, y = iris
    model = SVC(probability=True, random_state=0).fit(X, y)
    bundle = packager.package(
        model, sample=X[::5], name="svc", version="1.0.0", key=keypair.private, out_dir=tmp_path
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [o["name"] for o in manifest["model"]["outputs"]] == ["label", "probabilities"]


def test_package_and_inspect_say_scores_and_inspect_and_verify_count_the_same_files(
    capsys: pytest.CaptureFixture[str],
    iris: tuple[np.ndarray, np.ndarray],
    iris_files: Path,
    keypair: KeyPair,
    tmp_path: Path,
) -> None:
    X, y = iris
    joblib.dump(SVC().fit(X, y), tmp_path / "svc.joblib")
    code, out, err = cli(
        capsys,
        "package",
        tmp_path / "svc.joblib",
        "--name",
        "svc",
        "--version",
        "1.0.0",
        "--sample",
        iris_files / "sample.csv",
        "--key",
        keypair.key_path,
        "-o",
        tmp_path / "dist",
    )
    assert code == 0, err
    assert "has no predict_proba: its second output holds decision scores" in err
    assert "WARNING: svc@1.0.0: output 'scores' holds decision scores, not probabilities" in err
    bundle = Path(out.strip())
    code, out, _ = cli(capsys, "inspect", bundle)
    assert code == 0
    [outputs] = [row for row in out.splitlines() if row.startswith("outputs")]
    assert "scores" in outputs and "(output 'scores' holds decision scores" in outputs
    present = len(list(bundle.iterdir()))
    # model.onnx, testvectors.npz, provenance and BOM, manifest.json, model.sig
    assert present == 6
    assert f"files: {present} (manifest.json, model.sig and these)" in out
    code, out, _ = cli(capsys, "verify", bundle, "--key", keypair.pub_path)
    assert code == 0
    signer = f"key {keypair.pub_path} ({key_hint(keypair.public)[:16]})"
    assert out == f"OK: svc@1.0.0 verified ({present} files), signed by {signer}\n"
