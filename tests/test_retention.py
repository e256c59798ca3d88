"""Retention: ``prune``, ``pin`` and the ``[retention]`` setting never take away the current
version, the one ``rollback`` returns to, or a pinned one; checked over random sequences of
installs, rollbacks, pins and prunes against a model of what should be left, and end to end
through the command line."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from packager.core.digests import Digest
from packager.core.manifest import MANIFEST
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import LockTimeoutError, NotFoundError, UsageError
from packager.instance.install import rollback
from packager.instance.integrity import check_installed
from packager.instance.retention import prune
from packager.instance.store import Store
from packager.registry import LayoutRegistry

from .conftest import KeyPair, cli

VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.1.0")
T0 = datetime(2026, 11, 1, tzinfo=UTC)

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("install"), st.sampled_from(VERSIONS)),
        st.tuples(st.just("rollback"), st.just("")),
        st.tuples(st.just("prune"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("pin"), st.sampled_from(VERSIONS)),
        st.tuples(st.just("unpin"), st.sampled_from(VERSIONS)),
    ),
    max_size=25,
)


class Model:
    """What an instance should hold, kept without packager's code: the order versions
    became active, what is installed, what is pinned."""

    def __init__(self) -> None:
        self.history: list[str] = []
        self.installed: set[str] = set()
        self.pins: set[str] = set()

    @property
    def current(self) -> str | None:
        return self.history[-1] if self.history else None

    @property
    def rollback_target(self) -> str | None:
        return next(
            (v for v in reversed(self.history) if v != self.current and v in self.installed),
            None,
        )

    def after_prune(self, keep: int) -> set[str]:
        recent = list(dict.fromkeys(v for v in reversed(self.history) if v in self.installed))
        kept = set(recent[:keep]) | (self.pins & self.installed)
        return kept | {v for v in (self.current, self.rollback_target) if v is not None}


@pytest.fixture(scope="module")
def five(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> dict[str, Path]:
    """The iris pipeline packaged as each of VERSIONS (rollback checks what is installed
    against the manifest verified at its install)."""
    from packager.build.api import package

    out = tmp_path_factory.mktemp("five")
    sample = iris[0][::5]
    return {
        v: package(
            iris_model, sample=sample, name="iris", version=v, key=keypair.private, out_dir=out
        )
        for v in VERSIONS
    }


def put(store: Store, bundle: Path, version: str, now: datetime) -> None:
    """The last step of an install (the bundle's files staged, moved into place, ``current``
    switched, its manifest recorded as the one verified): what retention and rollback see."""
    with store.lock("iris"), store.staging("iris") as staged:
        for source in bundle.iterdir():
            shutil.copy(source, staged / source.name)
        verified = Digest.of((staged / MANIFEST).read_bytes())
        store.commit(
            staged, name="iris", version=version, manifest_sha256=verified.hex, source="t", now=now
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
# Whatever the examples drawn: rollbacks that succeed, before and after prunes.
@example(ops=[("install", "1.0.0"), ("install", "1.1.0"), ("rollback", ""), ("rollback", "")])
@example(
    ops=[
        ("install", "1.0.0"),
        ("install", "1.1.0"),
        ("install", "2.0.0"),
        ("pin", "1.0.0"),
        ("prune", 1),
        ("rollback", ""),
        ("install", "2.1.0"),
        ("prune", 1),
        ("rollback", ""),
        ("unpin", "1.0.0"),
        ("prune", 1),
        ("rollback", ""),
    ]
)
def test_retention_never_removes_what_rollback_needs(
    five: dict[str, Path], ops: list[tuple[str, object]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        model = Model()
        for step, (op, arg) in enumerate(ops):
            now = T0 + timedelta(minutes=step)
            if op == "install":
                put(store, five[str(arg)], str(arg), now)
                model.history.append(str(arg))
                model.installed.add(str(arg))
            elif op == "rollback":
                try:
                    target = rollback("iris", store=store, now=now).version
                except NotFoundError:
                    assert model.rollback_target is None
                else:
                    assert target == model.rollback_target
                    model.history.append(target)
            elif op == "pin":
                if str(arg) in model.installed:
                    store.pin("iris", str(arg), now=now)
                    model.pins.add(str(arg))
                else:
                    with pytest.raises(NotFoundError):
                        store.pin("iris", str(arg), now=now)
            elif op == "unpin":
                assert store.unpin("iris", str(arg), now=now) == (str(arg) in model.pins)
                model.pins.discard(str(arg))
            elif model.current is not None:
                keep = int(str(arg))
                before = store.previous_version("iris")
                expected = model.after_prune(keep)
                (result,) = prune(store, keep=keep, now=now, names=["iris"])
                assert set(result.removed) == model.installed - expected
                model.installed = expected
                # What rollback would return to is still there, the same, and intact.
                assert store.previous_version("iris") == before == model.rollback_target
                if before is not None:
                    check_installed(store, "iris", before)
            assert set(store.versions("iris")) == model.installed
            assert store.current_version("iris") == model.current
            assert model.pins & model.installed <= set(store.versions("iris"))


def test_pin_waits_for_the_models_lock_as_prune_takes_it(
    five: dict[str, Path], tmp_path: Path
) -> None:
    """A prune holding the model's lock may be removing the version: pin waits for it."""
    store = Store(tmp_path)
    put(store, five["1.0.0"], "1.0.0", T0)
    put(store, five["1.1.0"], "1.1.0", T0 + timedelta(minutes=1))
    with store.lock("iris"), pytest.raises(LockTimeoutError):
        Store(tmp_path, lock_timeout=0.2).pin("iris", "1.0.0", now=T0)
    assert store.pinned("iris") == set()
    store.pin("iris", "1.0.0", now=T0)
    assert store.pinned("iris") == {"1.0.0"}


def test_prune_refuses_keep_below_one_and_unknown_models(home: Path) -> None:
    store = Store(home)
    with pytest.raises(UsageError):
        prune(store, keep=0, now=T0)
    with pytest.raises(NotFoundError):
        prune(store, keep=1, now=T0, names=["iris"])
    assert prune(store, keep=1, now=T0) == []


def installed_and_pinned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> tuple[Path, Path]:
    """Every bundle published to a registry, iris 1.0.0 then 1.1.0 installed from it, and
    1.0.0 pinned; returns the registry and the public key."""
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    reg, pub = registry.root, keypair.pub_path
    for version in ("1.0.0", "1.1.0"):
        code, _, err = cli(capsys, "install", f"iris@{version}", "--registry", reg, "--key", pub)
        assert code == 0, err
    code, _, err = cli(capsys, "pin", "iris@1.0.0")
    assert code == 0, err
    return reg, pub


def test_cli_pin_prune_and_the_retention_setting(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    reg, pub = installed_and_pinned(capsys, tmp_path, bundles, keypair)

    # With a setting of 1, installing 2.0.0 keeps 1.1.0 (what rollback returns to) and the
    # pinned 1.0.0.
    home.joinpath("config.toml").write_text("[retention]\nkeep = 1\n")
    code, _, err = cli(capsys, "install", "iris@2.0.0", "--registry", reg, "--key", pub)
    assert code == 0, err
    assert sorted(p.name for p in (home / "models" / "iris").iterdir()) == [
        "1.0.0",
        "1.1.0",
        "2.0.0",
        "current",
    ]
    code, _, err = cli(capsys, "unpin", "iris@1.0.0")
    assert code == 0, err
    code, out, err = cli(capsys, "prune", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out) == [
        {"name": "iris", "removed": ["1.0.0"], "kept": ["1.1.0", "2.0.0"], "dryRun": True}
    ]
    assert (home / "models" / "iris" / "1.0.0").is_dir()
    code, out, err = cli(capsys, "prune", "iris", "--keep", "1")
    assert code == 0, err
    assert out == "iris  removed 1.0.0; kept 1.1.0, 2.0.0\n"
    assert not (home / "models" / "iris" / "1.0.0").exists()
    code, out, err = cli(capsys, "rollback", "iris")
    assert code == 0, err
    assert out == "iris current -> 1.1.0\n"
    assert [e.version for e in Store(home).audit_log("iris") if e.action == "prune"] == ["1.0.0"]

    code, _, err = cli(capsys, "unpin", "iris@1.0.0")
    assert code == 2 and "not pinned" in err
    home.joinpath("config.toml").write_text("[retention]\nkeep = 0\n")
    code, _, err = cli(capsys, "install", "iris@2.0.0", "--registry", reg, "--key", pub)
    assert code == 2 and "at least 1" in err
    home.joinpath("config.toml").write_text("[retention]\nkepe = 2\n")
    code, _, err = cli(capsys, "prune")
    assert code == 2 and "keep = N" in err


def test_a_pinned_version_is_not_removed_and_uninstall_drops_the_pins(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    reg, pub = installed_and_pinned(capsys, tmp_path, bundles, keypair)

    code, _, err = cli(capsys, "remove", "iris@1.0.0")
    assert code == 2
    assert err == ("packager: error: iris@1.0.0 is pinned; `packager unpin iris@1.0.0` first\n")
    assert (home / "models" / "iris" / "1.0.0").is_dir()
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    assert json.loads(out)["models"][0]["pinned"] == ["1.0.0"]
    assert [e.action for e in Store(home).audit_log("iris")][-1] == "pin"

    code, _, err = cli(capsys, "unpin", "iris@1.0.0")
    assert code == 0, err
    code, _, err = cli(capsys, "remove", "iris@1.0.0")
    assert code == 0, err
    assert not (home / "models" / "iris" / "1.0.0").exists()

    code, _, err = cli(capsys, "pin", "iris@1.1.0")
    assert code == 0, err
    code, _, err = cli(capsys, "uninstall", "iris", "--yes")
    assert code == 0, err
    assert Store(home).pinned("iris") == set()
    code, _, err = cli(capsys, "install", "iris@1.1.0", "--registry", reg, "--key", pub)
    assert code == 0, err
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    assert json.loads(out)["models"][0]["pinned"] == []
    code, _, err = cli(capsys, "unpin", "iris@1.1.0")
    assert code == 2 and "not pinned" in err
