"""Side by side across frameworks: scikit-learn, XGBoost, LightGBM, PyTorch and an .onnx
file, trained here on the same rows, measured on the same held-out rows in one command."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from packager.cli import main

pytestmark = pytest.mark.slow


def test_every_framework_on_the_same_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import lightgbm
    import torch
    import xgboost
    from skl2onnx import to_onnx

    x, y = make_classification(n_samples=600, n_features=6, n_informative=4, random_state=1)
    x = x.astype(np.float32)
    train, test = slice(0, 400), slice(400, None)
    fitted = {
        "sklearn.joblib": LogisticRegression(max_iter=500).fit(x[train], y[train]),
        "xgboost.joblib": xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(
            x[train], y[train]
        ),
        "lightgbm.joblib": lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(
            x[train], y[train]
        ),
    }
    for name, model in fitted.items():
        joblib.dump(model, tmp_path / name)
    onnx_model = to_onnx(
        fitted["sklearn.joblib"], x[:1], options={"zipmap": False}, target_opset=17
    )
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    inputs, labels = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), labels).backward()
        optimiser.step()
    torch.jit.script(net.eval()).save(str(tmp_path / "net.pt"))
    with torch.no_grad():
        torch_accuracy = accuracy_score(
            y[test], net(torch.from_numpy(x[test])).argmax(dim=1).numpy()
        )

    data = tmp_path / "test.csv"
    data.write_text(
        ",".join(f"f{i}" for i in range(6))
        + ",y\n"
        + "".join(
            ",".join(repr(float(v)) for v in row) + f",{t}\n"
            for row, t in zip(x[test], y[test], strict=True)
        )
    )
    files = ["sklearn.joblib", "xgboost.joblib", "lightgbm.joblib", "net.pt", "model.onnx"]
    code = main(
        [
            "benchmark",
            *(str(tmp_path / f) for f in files),
            "--data",
            str(data),
            "--target",
            "y",
            "--task",
            "classification",
            "--time-budget",
            "0.05",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["task"] == "classification" and doc["rows"] == 200
    by_label = {m["label"]: m for m in doc["models"]}
    frameworks = {label.split("[")[-1].rstrip("]").split()[0] for label in by_label}
    assert {"scikit-learn", "xgboost", "lightgbm", "pytorch", "onnxruntime"} <= frameworks
    for name in ("sklearn.joblib", "xgboost.joblib", "lightgbm.joblib"):
        expected = accuracy_score(y[test], fitted[name].predict(x[test]))
        for engine in ("[onnxruntime]",):
            assert by_label[f"{tmp_path / name} {engine}"]["accuracy"] == pytest.approx(expected)
    assert by_label[f"{tmp_path / 'net.pt'} [onnxruntime]"]["accuracy"] == pytest.approx(
        torch_accuracy
    )
    for m in doc["models"]:
        assert m["oneRow"]["p50Us"] > 0 and m["sizeBytes"] > 0
        if m["label"].endswith("[onnxruntime]") and "net.pt" not in m["label"]:
            assert m["logLoss"] >= 0 and 0.5 <= m["rocAuc"] <= 1  # probabilities found
    assert len(doc["differences"]) == len(doc["models"]) - 1
