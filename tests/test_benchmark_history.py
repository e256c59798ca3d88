"""Benchmark results signed and attached beside the version they measured; their history,
carried by export and mirror; forged or misplaced results do not count. The statement is
judged by in-toto-attestation's parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from packager.cli import main
from packager.core import signature
from packager.core.benchrecord import (
    KIND,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    BenchmarkResult,
    sign_result,
)
from packager.core.digests import Digest
from packager.registry.attachments import put_attachment, read_attachments
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair

pytestmark = pytest.mark.slow
QUICK = ("--time-budget", "0.05")


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def published(
    tmp_path: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path, dict[str, dict[str, object]]]:
    """Two versions of an iris model in a registry, each benchmarked there with --publish;
    returns the registry, the labelled data and each version's benchmark JSON."""
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    data = tmp_path / "test.csv"
    data.write_text(
        "a,b,c,d,species\n"
        + "".join(
            ",".join(map(repr, r.tolist())) + f",{names[t]}\n" for r, t in zip(x, y, strict=True)
        )
    )
    sample = tmp_path / "sample.csv"
    sample.write_text(
        "a,b,c,d\n" + "".join(",".join(map(repr, r.tolist())) + "\n" for r in x[::10])
    )
    registry = tmp_path / "registry"
    results = {}
    for version, iterations in (("1.0.0", 3), ("1.1.0", 500)):
        model = tmp_path / f"model-{version}.joblib"
        joblib.dump(LogisticRegression(max_iter=iterations).fit(x, names[y]), model)
        package = ("package", model, "--name", "iris", "--version", version, "--sample", sample)
        assert cli(capsys, *package, "--key", keypair.key_path, "-o", tmp_path / "dist")[0] == 0
        bundle = tmp_path / "dist" / f"iris-{version}"
        assert cli(capsys, "publish", bundle, "--registry", registry)[0] == 0
        code, out, err = cli(
            capsys,
            "benchmark",
            bundle,
            "--data",
            data,
            "--target",
            "species",
            *QUICK,
            "--publish",
            keypair.key_path,
            "--registry",
            registry,
            "--json",
        )
        assert code == 0, err
        assert f"published the result beside iris@{version}" in err
        results[version] = json.loads(out)
    return registry, data, results


def test_history_of_published_results(
    published: tuple[Path, Path, dict[str, dict[str, object]]],
    keypair: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, _, results = published
    chart = tmp_path / "trend.png"
    code, out, err = cli(
        capsys,
        "benchmark",
        "history",
        "iris",
        "--registry",
        registry,
        "--key",
        keypair.pub_path,
        "--json",
        "--chart",
        chart,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metric"] == "accuracy" and doc["refused"] == []
    assert [r["version"] for r in doc["results"]] == ["1.0.0", "1.1.0"]
    for row in doc["results"]:
        measured = results[row["version"]]
        (engine,) = measured["engines"]  # type: ignore[misc]
        assert row["quality"] == engine["accuracy"]
        assert row["oneRowP50Us"] == engine["oneRow"]["p50Us"]
        assert row["cpu"] == measured["machine"]["cpu"]  # type: ignore[index]
    assert chart.read_bytes().startswith(b"\x89PNG")
    code, out, _ = cli(
        capsys,
        "benchmark",
        "history",
        "iris",
        "--registry",
        registry,
        "--key",
        keypair.pub_path,
        "--metric",
        "macroF1",
    )
    assert code == 0 and "macroF1" in out and "1.1.0" in out

    # The attachment is an in-toto Statement v1 about the exact manifest.json published.
    layout = LayoutRegistry(registry)
    artifact = layout.resolve("iris", "1.0.0")
    (data,) = read_attachments(layout, artifact, KIND, max_size=1 << 20)
    payload = signature.unverified_payload(data, PAYLOAD_TYPE)
    statement = json.loads(payload)
    pb = json_format.ParseDict(statement, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    assert pb.predicate_type == PREDICATE_TYPE
    manifest = (tmp_path / "dist" / "iris-1.0.0" / "manifest.json").read_bytes()
    assert pb.subject[0].digest["sha256"] == Digest.of(manifest).hex

    # Export and mirror carry the results: the history reads the same from both.
    archive = tmp_path / "models.tar"
    assert (
        cli(capsys, "export", "iris@1.0.0", "iris@1.1.0", "--registry", registry, "-o", archive)[0]
        == 0
    )
    assert cli(capsys, "mirror", registry, tmp_path / "copy", "--key", keypair.pub_path)[0] == 0
    for where in (archive, tmp_path / "copy"):
        code, out, err = cli(
            capsys,
            "benchmark",
            "history",
            "iris",
            "--registry",
            where,
            "--key",
            keypair.pub_path,
            "--json",
        )
        assert code == 0, err
        assert json.loads(out)["results"] == doc["results"]


def test_forged_and_misplaced_results_do_not_count(
    published: tuple[Path, Path, dict[str, dict[str, object]]],
    keypair: KeyPair,
    other_keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, _, _ = published
    layout = LayoutRegistry(registry)
    old, new = layout.resolve("iris", "1.0.0"), layout.resolve("iris", "1.1.0")
    old_digest = next(d.digest for p, d in old.files.items() if p == "manifest.json")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    forged = {"task": "classification", "engines": [{"engine": "onnxruntime", "accuracy": 1.0}]}
    # Signed by a key the policy does not trust, then a trusted result of 1.0.0 moved to 1.1.0.
    untrusted = BenchmarkResult("iris", "1.0.0", old_digest, when, forged)
    put_attachment(layout, old, KIND, sign_result(untrusted, private_key=other_keypair.private))
    moved = sign_result(untrusted, private_key=keypair.private)
    put_attachment(layout, new, KIND, moved)
    code, out, err = cli(
        capsys,
        "benchmark",
        "history",
        "iris",
        "--registry",
        registry,
        "--key",
        keypair.pub_path,
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert [r["version"] for r in doc["results"]] == ["1.0.0", "1.1.0"]
    assert all(
        r["quality"] != 1.0 or r["measured"] != "2026-01-01T00:00:00Z" for r in doc["results"]
    )
    problems = {(r["version"], r["problem"].split(":")[0]) for r in doc["refused"]}
    assert ("1.1.0", "benchmark result is for iris@1.0.0, not iris@1.1.0") in problems
    assert any(v == "1.0.0" for v, _ in problems)
    assert len(doc["refused"]) == 2


def test_publish_needs_the_measured_bundle_in_the_registry(
    published: tuple[Path, Path, dict[str, dict[str, object]]],
    keypair: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, data, _ = published
    args = ("--data", data, "--target", "species", *QUICK, "--publish", keypair.key_path)
    code, _, err = cli(capsys, "benchmark", tmp_path / "model-1.0.0.joblib", *args)
    assert code == 2 and "--publish attaches a result to a version" in err
    code, _, err = cli(
        capsys,
        "benchmark",
        tmp_path / "dist" / "iris-1.0.0",
        *args,
        "--registry",
        tmp_path / "empty",
    )
    assert code == 4, err
    # Another bundle of iris 1.0.0 in a second registry: the result is not attached there.
    other = tmp_path / "other"
    package = ("package", tmp_path / "model-1.1.0.joblib", "--name", "iris", "--version", "1.0.0")
    sample = ("--sample", tmp_path / "sample.csv", "--key", keypair.key_path, "-o", other)
    assert cli(capsys, *package, *sample)[0] == 0
    assert cli(capsys, "publish", other / "iris-1.0.0", "--registry", other / "registry")[0] == 0
    code, _, err = cli(
        capsys,
        "benchmark",
        tmp_path / "dist" / "iris-1.0.0",
        *args,
        "--registry",
        other / "registry",
    )
    assert code == 3 and "than the bundle measured" in err and "nothing was published" in err
    layout = LayoutRegistry(other / "registry")
    assert read_attachments(layout, layout.resolve("iris", "1.0.0"), KIND, max_size=1 << 20) == []
