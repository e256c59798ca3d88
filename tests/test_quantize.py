"""Opt-in dynamic quantization: kept within the given tolerance, refused beyond it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestRegressor

from packager._io.table import Table, from_mapping
from packager.build.bundle import package
from packager.build.options import PackageOptions, QuantizeOptions, Tolerance
from packager.cli import main
from packager.core.manifest import parse_manifest
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import ParityError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.models import load
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair
from .core.test_manifest import assert_round_trips


def positional(x: np.ndarray) -> Table:
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, 32))


def wide_mlp(outputs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, outputs),
    )


def test_quantized_model_is_kept_within_tolerance_and_installs(
    rows: np.ndarray, keypair: KeyPair, tmp_path: Path, home: Path
) -> None:
    notes: list[str] = []
    bundle = package(
        wide_mlp(1),
        sample=positional(rows),
        name="wide",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "dist",
        options=PackageOptions(quantize=QuantizeOptions(tolerance=Tolerance(atol=0.05))),
        progress=notes.append,
    )
    manifest = assert_round_trips((bundle / "manifest.json").read_bytes())
    assert manifest.metrics is not None
    quantization = manifest.metrics["quantization"]
    assert quantization["method"] == "dynamic"
    # int8 weights: about a quarter of the float32 bytes.
    assert quantization["sizeAfter"] < quantization["sizeBefore"] / 2
    on_disk = sum(f.size for f in manifest.files if f.role in ("model", "weights"))
    assert on_disk == quantization["sizeAfter"]
    assert any(n.startswith("quantized (dynamic):") and "bytes" in n for n in notes)
    # The bundle records the tolerance it was accepted with, against the ORIGINAL outputs.
    validation = manifest.validation
    assert validation.atol == 0.05
    assert 0 < validation.max_abs_diff <= 0.05
    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    install(
        "wide",
        registry=registry,
        store=Store(home),
        now=datetime(2026, 11, 27, tzinfo=UTC),
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert load("wide", home=home).smoke_test().max_abs_diff <= 0.05


def test_quantization_beyond_tolerance_is_refused(
    rows: np.ndarray, keypair: KeyPair, tmp_path: Path
) -> None:
    with pytest.raises(ParityError, match=r"dynamic-quantized model.*--quantize-rtol") as info:
        package(
            wide_mlp(1),
            sample=positional(rows),
            name="wide",
            version="1.0.0",
            key=keypair.private,
            out_dir=tmp_path / "dist",
            options=PackageOptions(quantize=QuantizeOptions()),
        )
    assert info.value.exit_code == 5
    assert not (tmp_path / "dist" / "wide-1.0.0").exists()
    with pytest.raises(UsageError, match="quantization method"):
        package(
            wide_mlp(1),
            sample=positional(rows),
            name="wide",
            version="1.0.0",
            key=keypair.private,
            out_dir=tmp_path / "dist",
            options=PackageOptions(quantize=QuantizeOptions(method="static")),
        )


def test_cli_refuses_quantization_that_flips_labels(
    keypair: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.save(wide_mlp(10), tmp_path / "classifier.pt")
    # Enough rows that int8 noise moves some argmax (measured: 4 of 400 here).
    np.save(tmp_path / "sample.npy", np.random.default_rng(0).normal(size=(400, 32)))
    code = main(
        [
            "package",
            str(tmp_path / "classifier.pt"),
            "--name",
            "wide",
            "--version",
            "1.0.0",
            "--sample",
            str(tmp_path / "sample.npy"),
            "--key",
            str(keypair.key_path),
            "-o",
            str(tmp_path / "dist"),
            "--task",
            "classification",
            "--quantize",
            "dynamic",
            "--quantize-atol",
            "10",
        ]
    )
    err = capsys.readouterr().err
    assert code == 5, err
    assert "Labels must agree exactly" in err


def test_trees_have_nothing_to_quantize(keypair: KeyPair, tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(60, 4))
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, x[:, 0] * 3)
    bundle = package(
        model,
        sample=positional(x),
        name="forest",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path,
        options=PackageOptions(quantize=QuantizeOptions()),
    )
    metrics = parse_manifest((bundle / "manifest.json").read_bytes()).metrics
    assert metrics is not None
    quantization = metrics["quantization"]
    assert quantization["sizeAfter"] >= quantization["sizeBefore"] * 0.9
