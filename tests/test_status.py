"""``packager status``: what monitoring sees of an instance, judged by prometheus_client's
OpenMetrics parser and by its Prometheus text-format parser (what node_exporter's textfile
collector reads)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.instance.install import InstallOptions, install
from packager.instance.servers import ServedModel, Server, record
from packager.instance.store import Store
from packager.instance.update import update
from packager.registry import LayoutRegistry, open_registry

from .conftest import KeyPair, cli


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parse_om(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


@pytest.fixture
def followed(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair, home: Path
) -> tuple[Store, datetime]:
    """iris 1.1.0 installed through `stable`, then an update refused: 2.0.0 promoted with a
    document that had already expired."""
    registry = LayoutRegistry(tmp_path / "registry")
    trust = Trusted(adhoc_policy([keypair.public]))
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=trust)
    store = Store(home)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=start,
        expires_in=timedelta(days=30),
    )
    options = InstallOptions(verify=trust, registry_ref=str(registry.root))
    install("iris@stable", registry=registry, store=store, now=start, options=options)
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=start + timedelta(days=1),
        expires_in=timedelta(days=2),
    )
    report = update(
        store=store,
        now=start + timedelta(days=5),
        open_registry=lambda ref: open_registry(ref, home=home),
        options=InstallOptions(verify=trust),
    )
    assert report.exit_code == 3
    return store, start


def test_status_json_after_a_refused_update(
    capsys: pytest.CaptureFixture[str],
    followed: tuple[Store, datetime],
    bundles: dict[str, Path],
) -> None:
    store, start = followed
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    (model,) = json.loads(out)["models"]
    assert (model["name"], model["current"], model["versions"]) == ("iris", "1.1.0", ["1.1.0"])
    assert (model["channel"], model["registry"]) == ("stable", str(store.home.parent / "registry"))
    # The document accepted (1.1.0's) expires 30 days after it was issued: about 10 left.
    assert datetime.fromisoformat(model["channelExpires"]) == start + timedelta(days=30)
    assert 9.9 < model["daysUntilExpiry"] <= 10
    last = model["lastUpdate"]
    assert (last["outcome"], last["exitCode"], last["version"]) == ("refused", 3, None)
    assert last["detail"].startswith("ExpiredError")
    assert datetime.fromisoformat(last["at"]) == start + timedelta(days=5)
    refusal = model["lastRefusal"]
    assert refusal["action"] == "channel" and "ExpiredError" in refusal["reason"]
    # Still serving what was installed: the refused update changed nothing.
    files = sorted(p for p in bundles["1.1.0"].iterdir())
    assert model["diskBytes"] == sum(p.stat().st_size for p in files)

    code, out, err = cli(capsys, "status")
    assert code == 0, err
    assert out.splitlines()[0].startswith("iris  1.1.0  (follows stable, expires in ")
    assert "last update" in out and "refused ExpiredError" in out


def test_status_openmetrics_parses_with_prometheus_client(
    capsys: pytest.CaptureFixture[str], followed: tuple[Store, datetime], tmp_path: Path
) -> None:
    _, start = followed
    prom = tmp_path / "textfile" / "packager.prom"
    prom.parent.mkdir()
    code, _, err = cli(capsys, "status", "--openmetrics", "-o", prom)
    assert code == 0, err
    text = prom.read_text()
    assert text.endswith("# EOF\n")
    found = samples(text)
    model = {"model": "iris"}
    assert found["packager_model_info"] == [
        ({**model, "version": "1.1.0", "channel": "stable"}, 1.0)
    ]
    assert found["packager_model_versions"] == [(model, 1.0)]
    expiry = (start + timedelta(days=30)).timestamp()
    assert found["packager_channel_expiry_timestamp_seconds"] == [
        ({**model, "channel": "stable"}, pytest.approx(expiry))
    ]
    assert found["packager_update_last_success"] == [(model, 0.0)]
    assert found["packager_update_last_exit_code"] == [(model, 3.0)]
    ((labels, _),) = found["packager_refusal_last_timestamp_seconds"]
    assert labels == {**model, "action": "channel", "reason": "ExpiredError"}
    # node_exporter's textfile collector reads the Prometheus text format: same samples.
    classic = {s.name: s.value for f in parse_text(text) for s in f.samples}
    assert classic["packager_update_last_exit_code"] == 3.0
    disk = found["packager_model_disk_usage_bytes"]
    assert [classic["packager_model_disk_usage_bytes"]] == [value for _, value in disk]

    code, out, err = cli(capsys, "status", "--openmetrics")
    assert code == 0, err
    assert samples(out)["packager_update_last_exit_code"] == [(model, 3.0)]


def test_status_of_an_empty_instance_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "status", "--openmetrics")
    assert code == 0
    assert list(parse_om(out)) == []
    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["models"] == []
    code, _, err = cli(capsys, "status", "--json", "--openmetrics")
    assert code == 2 and "not both" in err


def test_a_channel_expired_minutes_ago_is_expired_not_minus_zero_days(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    trust = Trusted(adhoc_policy([keypair.public]))
    publish_bundle(bundles["1.1.0"], registry=registry, mode=trust)
    start = datetime.now(UTC) - timedelta(days=2)
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=registry,
        private_key=keypair.private,
        now=start,
        expires_in=timedelta(days=2, minutes=-5),
    )
    options = InstallOptions(verify=trust, registry_ref=str(registry.root))
    install("iris@stable", registry=registry, store=Store(home), now=start, options=options)

    code, out, err = cli(capsys, "status")
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"iris  1.1.0  (follows stable, expired today; {model_bytes(bundles)} bytes on disk)"
    )
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    (model,) = json.loads(out)["models"]
    assert model["daysUntilExpiry"] == -0.01
    assert str(model["daysUntilExpiry"]) != "-0.0"


def model_bytes(bundles: dict[str, Path]) -> int:
    return sum(p.stat().st_size for p in bundles["1.1.0"].iterdir())


def test_openmetrics_parses_whatever_a_server_address_holds(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    """A unix socket's path may hold a CR, an escape or a line separator: the exposition
    still parses, with the address shown as escapes."""
    address = 'unix:/run/a\rb\x1b[2J\u2028c"d\\e\nf'
    server = Server(os.getpid(), address, (ServedModel("iris", "1.1.0"),))
    record(home, server)
    code, out, err = cli(capsys, "status", "--openmetrics")
    assert code == 0, err
    ((labels, value),) = samples(out)["packager_served_info"]
    assert value == 1.0
    assert labels == {
        "model": "iris",
        "version": "1.1.0",
        "address": 'unix:/run/a\\rb\\x1b[2J\\u2028c"d\\e\\nf',
    }
    classic = [s for f in parse_text(out) for s in f.samples]
    assert [s.labels["address"] for s in classic] == [labels["address"]]
