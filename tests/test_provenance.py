"""Standard provenance in every bundle: a SLSA Provenance v1 statement parsed by the
in-toto-attestation library and a CycloneDX 1.6 ML-BOM checked by cyclonedx-python-lib's
JSON schema validator, both covered by model.sig; `inspect --provenance` shows them and
`--sbom-out`/`--provenance-out` write them out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from packager._io.bundledir import verify_bundle
from packager._io.hashing import digest_file
from packager.build.api import package
from packager.build.options import Metadata, PackageOptions, Provenance
from packager.core.manifest import MANIFEST, parse_manifest
from packager.core.policy import Trusted, adhoc_policy
from packager.errors import TamperedError

from .conftest import KeyPair, cli

GITLAB = {
    "CI_SERVER_URL": "https://gitlab.example.com",
    "CI_PROJECT_PATH": "ml/secrets-detector",
    "CI_PIPELINE_ID": "4711",
    "CI_JOB_ID": "90210",
}


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> Path:
    """A bundle packaged in a (pretend) GitLab CI job, with two training data files."""
    out = tmp_path_factory.mktemp("provenance")
    (out / "train.csv").write_text("a,b\n1,2\n")
    (out / "holdout.csv").write_text("a,b\n3,4\n")
    X, _ = iris
    options = PackageOptions(
        metadata=Metadata(license="Apache-2.0", description="iris, with its provenance"),
        provenance=Provenance(
            git_commit="c" * 40,
            training_data=[out / "train.csv", out / "holdout.csv"],
            training_data_licenses={"train.csv": "CC-BY-4.0"},
            hyperparameters={"C": "1.0"},
        ),
    )
    with pytest.MonkeyPatch.context() as env:
        for key, value in GITLAB.items():
            env.setenv(key, value)
        return package(
            iris_model,
            sample=X[::5],
            name="iris",
            version="4.0.0",
            key=keypair.private,
            out_dir=out / "dist",
            options=options,
        )


def test_every_bundle_carries_both_documents_as_signed_files(
    built: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    for bundle in (built, *bundles.values()):
        manifest = verify_bundle(bundle, mode=Trusted(adhoc_policy([keypair.public])))
        listed = {entry.path: entry.role for entry in manifest.files}
        assert listed["provenance.intoto.json"] == listed["sbom.cdx.json"] == "doc"


def test_a_changed_provenance_file_fails_verification(
    built: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    path = copy / "provenance.intoto.json"
    path.write_bytes(path.read_bytes().replace(b"4711", b"4712"))
    with pytest.raises(TamperedError, match=r"provenance\.intoto\.json"):
        verify_bundle(copy, mode=Trusted(adhoc_policy([keypair.public])))


def test_the_slsa_statement_parses_with_in_toto_attestation(built: Path) -> None:
    doc = json.loads((built / "provenance.intoto.json").read_bytes())
    pb = json_format.ParseDict(doc, statement_pb2.Statement())  # unknown fields refused
    Statement.copy_from_pb(pb).validate()
    assert pb.predicate_type == "https://slsa.dev/provenance/v1"
    provenance = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    manifest = parse_manifest((built / MANIFEST).read_bytes())
    files = {entry.path: entry.digest.hex for entry in manifest.files}
    assert {s.name: s.digest["sha256"] for s in pb.subject} == {
        path: files[path] for path in ("model.onnx", "testvectors.npz")
    }
    definition = provenance.build_definition
    assert definition.build_type == "https://packager.dev/package/v1"
    parameters = json_format.MessageToDict(definition.external_parameters)
    assert parameters["license"] == "Apache-2.0"
    assert parameters["trainingData"] == ["train.csv", "holdout.csv"]
    assert parameters["hyperparameters"] == {"C": "1.0"}
    dependencies = {d.name: d for d in definition.resolved_dependencies}
    train, _ = digest_file(built.parent.parent / "train.csv")
    assert dependencies["train.csv"].digest["sha256"] == train.hex
    assert dependencies["train.csv"].uri == "train.csv"
    assert "holdout.csv" in dependencies
    assert dependencies["source"].digest["gitCommit"] == "c" * 40
    source = manifest.model.source
    assert dependencies[source.framework].uri == (
        f"pkg:pypi/{source.framework}@{source.framework_version}"
    )
    assert dependencies[source.converter].uri.endswith(f"@{source.converter_version}")
    assert "onnxruntime" in dependencies
    run = provenance.run_details
    assert run.builder.id == "https://gitlab.example.com/ml/secrets-detector/-/pipelines/4711"
    assert (
        run.metadata.invocation_id == "https://gitlab.example.com/ml/secrets-detector/-/jobs/90210"
    )


def test_without_gitlab_the_builder_is_this_host(bundles: dict[str, Path]) -> None:
    doc = json.loads((bundles["1.0.0"] / "provenance.intoto.json").read_bytes())
    builder = doc["predicate"]["runDetails"]["builder"]["id"]
    assert builder.startswith("https://packager.dev/local/")
    assert "invocationId" not in doc["predicate"]["runDetails"]["metadata"]


def test_the_ml_bom_is_valid_cyclonedx_1_6(built: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = (built / "sbom.cdx.json").read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    assert errors is None, [str(e) for e in errors]  # type: ignore[union-attr]
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    model = bom["metadata"]["component"]
    manifest = parse_manifest((built / MANIFEST).read_bytes())
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [
        {"alg": "SHA-256", "content": manifest.file("model.onnx").digest.hex}
    ]
    assert model["licenses"] == [{"expression": "Apache-2.0"}]
    card = model["modelCard"]
    assert card["modelParameters"]["task"] == manifest.validation.task
    assert card["modelParameters"]["inputs"] == [
        {"format": f"{t.name}: {t.dtype}[?,4]"} for t in manifest.model.inputs
    ]
    datasets = {c["bom-ref"]: c for c in bom["components"] if c["type"] == "data"}
    assert sorted(r["ref"] for r in card["modelParameters"]["datasets"]) == sorted(datasets)
    assert datasets["dataset:train.csv"]["licenses"] == [{"expression": "CC-BY-4.0"}]
    metrics = {m["type"]: m["value"] for m in card["quantitativeAnalysis"]["performanceMetrics"]}
    assert float(metrics["parity maxAbsDiff"]) == manifest.validation.max_abs_diff
    (depends,) = [d for d in bom["dependencies"] if d["ref"] == "model"]
    assert set(depends["dependsOn"]) == {c["bom-ref"] for c in bom["components"]}


def test_a_tampered_bom_fails_the_schema(built: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom = json.loads((built / "sbom.cdx.json").read_text())
    bom["metadata"]["component"]["modelCard"]["modelParameters"]["inputs"] = [{"shape": 4}]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is not None


def test_inspect_shows_and_writes_out_the_provenance(
    capsys: pytest.CaptureFixture[str], built: Path, tmp_path: Path
) -> None:
    code, out, _ = cli(capsys, "inspect", built, "--provenance")
    assert code == 0
    assert "builder      https://gitlab.example.com/ml/secrets-detector/-/pipelines/4711" in out
    assert "depends on   train.csv  sha256:" in out
    assert "licence      Apache-2.0" in out
    assert "component    data     train.csv   licence CC-BY-4.0" in out
    code, out, _ = cli(capsys, "inspect", built, "--provenance", "--json")
    assert json.loads(out)["model"]["name"] == "iris@4.0.0"
    sbom, slsa = tmp_path / "bom.json", tmp_path / "slsa.json"
    code, _, _ = cli(capsys, "inspect", built, "--sbom-out", sbom, "--provenance-out", slsa)
    assert code == 0
    assert sbom.read_bytes() == (built / "sbom.cdx.json").read_bytes()
    assert slsa.read_bytes() == (built / "provenance.intoto.json").read_bytes()
    empty = tmp_path / "old-bundle"
    shutil.copytree(built, empty)
    (empty / "sbom.cdx.json").unlink()
    code, _, err = cli(capsys, "inspect", empty, "--provenance")
    assert code == 2 and "carries no" in err
