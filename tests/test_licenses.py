"""Licence policy end to end: `package --license` records a validated SPDX expression (and
one per training data file), `install` refuses (exit 3, audited) a bundle whose licence the
instance's policy does not allow, or that records none where a rule applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from packager.build.api import package
from packager.build.options import Metadata, PackageOptions, Provenance
from packager.core.manifest import MANIFEST, parse_manifest
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import UntrustedError, UsageError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.instance.trust import add_key, allow_licenses, read_policy
from packager.registry import LayoutRegistry

from .conftest import KeyPair, cli

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def licensed(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> Path:
    """iris 3.0.0 under 'mit or apache-2.0', trained on two files of different licences."""
    out = tmp_path_factory.mktemp("licensed")
    (out / "train.csv").write_text("a,b\n1,2\n")
    (out / "scraped.csv").write_text("a,b\n3,4\n")
    X, _ = iris
    options = PackageOptions(
        metadata=Metadata(license="mit  or apache-2.0"),
        provenance=Provenance(
            training_data=[out / "train.csv", out / "scraped.csv"],
            training_data_licenses={"train.csv": "CC-BY-4.0", "scraped.csv": "LicenseRef-scraped"},
        ),
    )
    return package(
        iris_model,
        sample=X[::5],
        name="iris",
        version="3.0.0",
        key=keypair.private,
        out_dir=out / "dist",
        options=options,
    )


def test_package_records_the_expressions_in_spdx_spelling(licensed: Path) -> None:
    manifest = parse_manifest((licensed / MANIFEST).read_bytes())
    assert manifest.license == "MIT OR Apache-2.0"
    assert manifest.provenance is not None and manifest.provenance.training_data is not None
    assert {t.uri: t.license for t in manifest.provenance.training_data} == {
        "train.csv": "CC-BY-4.0",
        "scraped.csv": "LicenseRef-scraped",
    }


def test_package_refuses_an_invalid_expression(
    capsys: pytest.CaptureFixture[str], iris_files: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    common = [
        "package", iris_files / "model.joblib", "--name", "iris", "--version", "1.0.0",
        "--sample", iris_files / "sample.csv", "--key", keypair.key_path, "-o", tmp_path,
    ]  # fmt: skip
    code, _, err = cli(capsys, *common, "--license", "MIT OR Foo-1.0")
    assert code == 2 and "'Foo-1.0' is not an SPDX licence identifier" in err
    code, _, err = cli(
        capsys, *common, "--license", "MIT", "--training-data", iris_files / "sample.csv",
        "--training-data-license", "sample.csv=GPL",
        "--training-data-license", "other.csv=MIT",
    )  # fmt: skip
    assert code == 2 and "'other.csv', which is not the name of a --training-data file" in err
    assert not list(tmp_path.iterdir())


@pytest.fixture
def registry(tmp_path: Path, licensed: Path, bundles: dict[str, Path], keypair: KeyPair) -> Path:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in (licensed, bundles["1.0.0"]):
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    return registry.root


def do_install(registry: Path, home: Path, ref: str = "iris@3.0.0") -> str:
    # The policy changes between installs of the version already current, which checks it
    # again each time.
    return install(
        ref,
        registry=LayoutRegistry(registry),
        store=Store(home),
        now=T0,
        options=InstallOptions(verify=Trusted(read_policy(home / "trust.toml"))),
    ).version


def license_log(home: Path) -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in Store(home).audit_log("iris") if e.action == "license"]


def test_install_enforces_the_licence_policy(registry: Path, home: Path, keypair: KeyPair) -> None:
    policy = home / "trust.toml"
    add_key(policy, "builder", keypair.pub_path)
    allow_licenses(policy, "iris*", ["Apache-2.0"])
    # A bundle recording no licence is refused where a rule applies.
    with pytest.raises(UntrustedError, match="the model: no licence recorded"):
        do_install(registry, home, "iris@1.0.0")
    assert license_log(home) == [("refused", "the model: no licence recorded")]
    assert do_install(registry, home) == "3.0.0"
    assert license_log(home)[-1] == (
        "ok",
        "the model: MIT OR Apache-2.0 is allowed (allowed: Apache-2.0)",
    )

    allow_licenses(policy, "iris*", ["BSD-3-Clause"])
    with pytest.raises(UntrustedError, match="MIT OR Apache-2.0 is not allowed"):
        do_install(registry, home)
    allow_licenses(policy, "iris*", ["MIT", "CC-BY-4.0"], training_data=True)
    with pytest.raises(UntrustedError, match="training data scraped.csv: LicenseRef-scraped"):
        do_install(registry, home)
    allow_licenses(policy, "iris*", ["MIT", "CC-BY-4.0", "LicenseRef-scraped"], training_data=True)
    assert do_install(registry, home) == "3.0.0"
    with pytest.raises(UsageError, match="list each licence"):
        allow_licenses(policy, "iris*", ["MIT AND CC-BY-4.0"])


def test_the_cli_refuses_with_exit_3(
    capsys: pytest.CaptureFixture[str], registry: Path, home: Path, keypair: KeyPair
) -> None:
    assert cli(capsys, "trust", "add-key", "builder", keypair.pub_path)[0] == 0
    assert cli(capsys, "trust", "allow-license", "iris", "GPL-3.0-only")[0] == 0
    code, out, _ = cli(capsys, "trust", "list", "--json")
    assert json.loads(out)["licenses"] == [
        {"models": "iris", "allow": ["GPL-3.0-only"], "trainingData": False}
    ]
    code, _, err = cli(capsys, "install", "iris@3.0.0", "--registry", registry)
    assert code == 3 and "refused by the licence policy" in err
    code, out, _ = cli(capsys, "log", "iris", "--json")
    refused = [e for e in json.loads(out) if e["action"] == "license"]
    assert refused[-1]["outcome"] == "refused"
    assert cli(capsys, "trust", "allow-license", "iris", "nonsense")[0] == 2
