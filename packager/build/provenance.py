"""Standard provenance written into every bundle, as files model.sig covers.

- ``provenance.intoto.json``: an in-toto Statement v1 with a SLSA Provenance v1 predicate
  (https://slsa.dev/spec/v1.0/provenance). Its subjects are the model files; its
  ``buildDefinition`` holds the package command's external parameters and, as
  ``resolvedDependencies``, every training data file (sha256, name, licence), the git
  commit, and the framework, converter and onnxruntime versions; ``runDetails.builder``
  names the GitLab CI job when ``CI_SERVER_URL``, ``CI_PROJECT_PATH``, ``CI_PIPELINE_ID`` and
  ``CI_JOB_ID`` are set, else this host.
- ``sbom.cdx.json``: a CycloneDX 1.6 ML-BOM made with cyclonedx-python-lib: the model as a
  ``machine-learning-model`` component (hash, licence), the framework, converter,
  onnxruntime and each training data file as components it depends on, and the model card
  (task, inputs and outputs, datasets, parity figures and benchmark metrics as quantitative
  analysis). cyclonedx-python-lib does not model ``modelCard`` yet, so the card is added to
  the document it writes; the result is checked against the CycloneDX 1.6 schema in tests.

Both take their time from the bundle's creation time (``SOURCE_DATE_EPOCH`` when set), so
they are as reproducible as the rest of the bundle.
"""

from __future__ import annotations

import json
import platform
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from packager._version import __version__
from packager.core.digests import Digest
from packager.core.manifest import ProvenanceRecord, Source, TensorSpec
from packager.core.provenance import PROVENANCE_FILE, SBOM_FILE, SLSA_PREDICATE_TYPE

__all__ = ["PROVENANCE_FILE", "SBOM_FILE", "BuildFacts", "cyclonedx_bom", "slsa_statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
BUILD_TYPE = "https://packager.dev/package/v1"
_GITLAB = ("CI_SERVER_URL", "CI_PROJECT_PATH", "CI_PIPELINE_ID", "CI_JOB_ID")


@dataclass(frozen=True)
class BuildFacts:
    """What the two documents describe: the bundle being written and how it was made."""

    name: str
    version: str
    created: datetime
    files: Mapping[str, Digest]  # the model files: the subjects
    model_file: str
    source: Source
    onnxruntime: str  # the onnxruntime version the graph was validated with
    task: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    parity: Mapping[str, float | int | None]
    metrics: Mapping[str, Any]
    license: str | None
    description: str | None
    record: ProvenanceRecord | None
    parameters: Mapping[str, Any]


def slsa_statement(facts: BuildFacts, *, environ: Mapping[str, str]) -> bytes:
    """The SLSA Provenance v1 in-toto statement (canonical JSON bytes)."""
    record = facts.record or ProvenanceRecord()
    dependencies: list[dict[str, Any]] = [
        {
            "name": data.uri,
            "uri": data.uri,
            "digest": {"sha256": data.digest.hex},
            **({"annotations": {"license": data.license}} if data.license else {}),
        }
        for data in record.training_data or ()
    ]
    if record.git_commit:
        dependencies.append({"name": "source", "digest": {"gitCommit": record.git_commit}})
    dependencies += [
        {"name": name, "uri": _purl(name, version)}
        for name, version in _libraries(facts)
        if version
    ]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": path, "digest": {"sha256": digest.hex}}
            for path, digest in sorted(facts.files.items())
        ],
        "predicateType": SLSA_PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": dict(facts.parameters),
                "internalParameters": {"packager": __version__},
                "resolvedDependencies": dependencies,
            },
            "runDetails": _run_details(facts, environ),
        },
    }
    return (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode()


def _run_details(facts: BuildFacts, environ: Mapping[str, str]) -> dict[str, Any]:
    moment = _timestamp(facts.created)
    metadata: dict[str, Any] = {"startedOn": moment, "finishedOn": moment}
    version = {"packager": __version__}
    if all(environ.get(var) for var in _GITLAB):
        server, project, pipeline, job = (environ[var] for var in _GITLAB)
        project_url = f"{server.rstrip('/')}/{project}"
        builder_id = f"{project_url}/-/pipelines/{pipeline}"
        metadata["invocationId"] = f"{project_url}/-/jobs/{job}"
    else:
        builder_id = f"https://packager.dev/local/{platform.node() or 'unknown-host'}"
    return {"builder": {"id": builder_id, "version": version}, "metadata": metadata}


def cyclonedx_bom(facts: BuildFacts) -> bytes:
    """The CycloneDX 1.6 ML-BOM (JSON bytes), made with cyclonedx-python-lib plus the
    model card it does not model yet."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    def sha256(digest: Digest) -> list[HashType]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=digest.hex)]

    def licensed(expression: str | None) -> list[LicenseExpression]:
        return [] if expression is None else [LicenseExpression(expression)]

    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=facts.name,
        version=facts.version,
        bom_ref="model",
        description=facts.description,
        hashes=sha256(facts.files[facts.model_file]),
        licenses=licensed(facts.license),
    )
    libraries = [
        Component(
            name=name,
            version=version,
            bom_ref=f"library:{name}",
            purl=PackageURL(type="pypi", name=name, version=version),
        )
        for name, version in _libraries(facts)
        if version
    ]
    datasets = [
        Component(
            type=ComponentType.DATA,
            name=data.uri,
            bom_ref=f"dataset:{data.uri}",
            hashes=sha256(data.digest),
            licenses=licensed(data.license),
        )
        for data in (facts.record.training_data if facts.record else None) or ()
    ]
    seed = f"{facts.name}@{facts.version} {facts.files[facts.model_file]}"
    bom = Bom(
        components=[*libraries, *datasets],
        metadata=BomMetaData(component=model, timestamp=facts.created),
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, seed),
    )
    bom.register_dependency(model, [*libraries, *datasets])
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(facts, datasets)
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _model_card(facts: BuildFacts, datasets: Sequence[Any]) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "task": facts.task,
        "modelArchitecture": facts.source.estimator,
        "inputs": [{"format": _tensor(t)} for t in facts.inputs],
        "outputs": [{"format": _tensor(t)} for t in facts.outputs],
    }
    if datasets:
        parameters["datasets"] = [{"ref": str(d.bom_ref.value)} for d in datasets]
    metrics = [
        {"type": f"parity {key}", "value": str(value), "slice": "test vectors"}
        for key, value in facts.parity.items()
        if value is not None
    ]
    metrics += [
        {"type": key, "value": str(value), "slice": "benchmark"}
        for key, value in _flatten(facts.metrics.get("benchmark", {}))
    ]
    return {"modelParameters": parameters, "quantitativeAnalysis": {"performanceMetrics": metrics}}


def _libraries(facts: BuildFacts) -> list[tuple[str, str]]:
    source = facts.source
    found = {
        source.framework: source.framework_version,
        source.converter: source.converter_version,
        "onnxruntime": facts.onnxruntime,
    }
    return [(name, version) for name, version in found.items() if name]


def _purl(name: str, version: str) -> str:
    return f"pkg:pypi/{name.lower()}@{version}"


def _tensor(spec: TensorSpec) -> str:
    shape = (
        "?" if spec.shape is None else ",".join("?" if d is None else str(d) for d in spec.shape)
    )
    return f"{spec.name}: {spec.dtype}[{shape}]"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _flatten(v, f"{prefix}{i}.")]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [(prefix.rstrip("."), value)]


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
