"""What `install` and `update` report when something fails around the models (the
retention after an install, a failure before any model is reached) or a channel has
expired, as `status` shows it to monitoring (judged by prometheus_client's parser)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.registry import LayoutRegistry

from .conftest import KeyPair, cli, immutable

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    return registry


def keep_one(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[retention]\nkeep = 1\n")


def test_an_install_whose_retention_fails_is_still_a_success(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair, home: Path
) -> None:
    keep_one(home)
    for version in ("1.0.0", "1.1.0"):
        install = ("install", f"iris@{version}", "--registry", registry.root)
        code, _, err = cli(capsys, *install, "--key", keypair.pub_path)
        assert code == 0, err
    # 2.0.0 leaves 1.0.0 to prune (1.1.0 is what rollback returns to), which cannot go.
    with immutable(home / "models" / "iris" / "1.0.0"):
        code, out, err = cli(
            capsys,
            *("install", "iris@2.0.0", "--registry", registry.root, "--key", keypair.pub_path),
            "--json",
        )
    assert code == 0, err
    assert json.loads(out)["installed"] is True
    assert "WARNING: iris: old versions not pruned (" in err
    code, out, _ = cli(capsys, "log", "iris", "--json")
    failed = [e for e in json.loads(out) if (e["action"], e["outcome"]) == ("prune", "failed")]
    assert len(failed) == 1 and "not permitted" in failed[0]["detail"]
    # What it could not remove is still whole; the next prune removes it.
    assert (home / "models" / "iris" / "1.0.0" / "manifest.json").is_file()
    assert cli(capsys, "prune", "iris", "--keep", "1")[0] == 0
    assert not (home / "models" / "iris" / "1.0.0").exists()


def metrics(capsys: pytest.CaptureFixture[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    code, out, err = cli(capsys, "status", "--openmetrics")
    assert code == 0, err
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parse_om(out):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def last_update(capsys: pytest.CaptureFixture[str]) -> tuple[str, float, float]:
    """The outcome, success and exit code monitoring sees of iris's last update."""
    found = metrics(capsys)
    ((labels, _),) = found["packager_update_last_timestamp_seconds"]
    ((_, success),) = found["packager_update_last_success"]
    ((_, code),) = found["packager_update_last_exit_code"]
    return labels["outcome"], success, code


def follow_stable(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair
) -> None:
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - HOUR,
        expires_in=2 * HOUR,
    )
    install = ("install", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path)
    code, _, err = cli(capsys, *install)
    assert code == 0, err


@pytest.mark.parametrize("breakage", ["config", "trust", "jitter"])
def test_an_update_that_fails_before_any_model_shows_in_status(
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    keypair: KeyPair,
    home: Path,
    breakage: str,
) -> None:
    follow_stable(capsys, registry, keypair)
    code, _, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 0, err
    assert last_update(capsys) == ("current", 1.0, 0.0)

    if breakage == "config":
        (home / "config.toml").write_text("[retention]\nkeep = -1\n")
        code, _, err = cli(capsys, "update", "--key", keypair.pub_path)
    elif breakage == "jitter":
        code, _, err = cli(capsys, "update", "--key", keypair.pub_path, "--jitter", "30 min")
    else:
        code, _, err = cli(capsys, "update")  # no --key, and no trust policy
    assert code == 2
    assert len(err.splitlines()) == 1
    assert last_update(capsys) == ("failed", 0.0, 2.0)
    code, out, err = cli(capsys, "status", "--json")
    (model,) = json.loads(out)["models"]
    assert model["lastUpdate"]["outcome"] == "failed"
    assert model["lastUpdate"]["detail"].startswith("UsageError: ")
    assert model["current"] == "1.1.0"

    (home / "config.toml").unlink(missing_ok=True)
    code, _, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 0, err
    assert last_update(capsys) == ("current", 1.0, 0.0)


def test_an_expired_channel_fails_every_update_and_status_says_so(
    capsys: pytest.CaptureFixture[str], registry: LayoutRegistry, keypair: KeyPair
) -> None:
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - 2 * HOUR,
        expires_in=HOUR + 30 * MINUTE,
    )
    install = ("install", "iris@stable", "--registry", registry.root, "--key", keypair.pub_path)
    code, _, err = cli(capsys, *install)
    assert code == 3 and "expired" in err  # the document already expired: never installed
    follow_stable(capsys, registry, keypair)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=datetime.now(UTC) - HOUR,
        expires_in=30 * MINUTE,
    )

    code, _, err = cli(capsys, "update", "--key", keypair.pub_path)
    assert code == 3, err
    assert last_update(capsys) == ("refused", 0.0, 3.0)
    for _ in range(2):
        code, out, err = cli(capsys, "update", "--key", keypair.pub_path)
        assert code == 3, err
        assert out == "expired  iris@stable  1.1.0 (stays current)\n"
        assert last_update(capsys) == ("expired", 0.0, 3.0)
    code, out, _ = cli(capsys, "status", "--json")
    (model,) = json.loads(out)["models"]
    last = model["lastUpdate"]
    assert (last["outcome"], last["exitCode"], last["version"]) == ("expired", 3, "1.1.0")
    assert last["detail"].startswith("ExpiredError: ")
