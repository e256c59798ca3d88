"""Shared fixtures: keys, a trained iris pipeline, packaged bundles, an isolated PACKAGER_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager._io.keys import keygen
from packager.registry.memory import MemoryRegistry

PASSWORD = "test-password"


@dataclass(frozen=True)
class KeyPair:
    key_path: Path
    pub_path: Path
    private: ec.EllipticCurvePrivateKey
    public: ec.EllipticCurvePublicKey


def make_keypair(out: Path) -> KeyPair:
    from packager._io.keys import load_private_key, load_public_key

    key_path, pub_path = keygen(out, password=PASSWORD.encode())
    private = load_private_key(key_path, password=lambda: PASSWORD.encode())
    return KeyPair(key_path, pub_path, private, load_public_key(pub_path))


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A second publisher's keys: valid, but not the ones installers trust."""
    return make_keypair(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's real state or registry, or needs a TTY for passwords."""
    monkeypatch.setenv("PACKAGER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PACKAGER_REGISTRY", raising=False)
    monkeypatch.setenv("PACKAGER_KEY_PASSWORD", PASSWORD)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target


@pytest.fixture(scope="session")
def iris_model(iris: tuple[np.ndarray, np.ndarray]) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = iris
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


@pytest.fixture(scope="session")
def iris_files(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
) -> Path:
    """model.joblib, sample.csv and input.csv for CLI tests."""
    import joblib

    out = tmp_path_factory.mktemp("iris")
    joblib.dump(iris_model, out / "model.joblib")
    X, _ = iris
    header = "sepal_length,sepal_width,petal_length,petal_width"
    np.savetxt(out / "sample.csv", X[::5], delimiter=",", header=header, comments="")
    np.savetxt(out / "input.csv", X[[0, 60, 120]], delimiter=",", header=header, comments="")
    return out


@pytest.fixture(scope="session")
def bundles(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> dict[str, Path]:
    """The iris pipeline packaged as versions 1.0.0, 1.1.0 and 2.0.0, signed by ``keypair``."""
    from packager.build.api import package

    X, _ = iris
    out = tmp_path_factory.mktemp("dist")
    return {
        v: package(
            iris_model, sample=X[::5], name="iris", version=v, key=keypair.private, out_dir=out
        )
        for v in ("1.0.0", "1.1.0", "2.0.0")
    }


@pytest.fixture
def memory_registry() -> Iterator[MemoryRegistry]:
    """An empty in-memory registry (reader and writer) whose hooks can make it lie."""
    with MemoryRegistry() as registry:
        yield registry


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return Path(os.environ["PACKAGER_HOME"])


@pytest.fixture
def bundle_copy(tmp_path: Path, bundles: dict[str, Path]) -> Path:
    """A writable copy of iris 1.1.0, for tampering."""
    dest = tmp_path / "copy" / bundles["1.1.0"].name
    shutil.copytree(bundles["1.1.0"], dest)
    for child in dest.iterdir():
        child.chmod(0o644)
    return dest


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``path`` cannot be renamed, written or removed, by root neither, until the block
    ends (chattr +i: a filesystem such as ext4, xfs or btrfs, as CI's is)."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``packager ARGS`` in this process: its exit code, standard output and error."""
    from packager.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
