"""Reading the standard provenance a bundle carries, for display (pure).

The documents (:mod:`packager.build.provenance` writes them) are parsed with the strict
JSON loader and summarised; nothing here is a verification: ``packager verify`` checks
that model.sig covers the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packager.core.jsonio import loads_object
from packager.errors import TamperedError

SLSA_PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# The files every bundle carries them in (role "doc"), covered by model.sig.
PROVENANCE_FILE = "provenance.intoto.json"
SBOM_FILE = "sbom.cdx.json"


@dataclass(frozen=True)
class ProvenanceSummary:
    """The SLSA provenance and the ML-BOM of one bundle, as rows of text."""

    builder: str
    invocation: str | None
    built: str | None
    subjects: tuple[tuple[str, str], ...]
    parameters: Mapping[str, Any]
    dependencies: tuple[tuple[str, str], ...]
    model: tuple[tuple[str, str], ...]
    components: tuple[tuple[str, str, str, str], ...]
    metrics: tuple[tuple[str, str], ...]


def summarise(slsa: bytes, sbom: bytes) -> ProvenanceSummary:
    """The two documents as one summary.

    Raises:
        TamperedError: either is not what packager writes (malformed, another type).
    """
    statement = loads_object(slsa, what="the SLSA provenance")
    if statement.get("predicateType") != SLSA_PREDICATE_TYPE:
        raise TamperedError("the SLSA provenance has another predicateType")
    predicate = _obj(statement.get("predicate"), "predicate")
    definition = _obj(predicate.get("buildDefinition"), "buildDefinition")
    run = _obj(predicate.get("runDetails"), "runDetails")
    metadata = _obj(run.get("metadata", {}), "runDetails.metadata")
    bom = loads_object(sbom, what="the CycloneDX BOM")
    if bom.get("bomFormat") != "CycloneDX":
        raise TamperedError("the SBOM is not a CycloneDX document")
    component = _obj(_obj(bom.get("metadata"), "metadata").get("component"), "component")
    card = _obj(component.get("modelCard", {}), "modelCard")
    parameters = _obj(card.get("modelParameters", {}), "modelParameters")
    analysis = _obj(card.get("quantitativeAnalysis", {}), "quantitativeAnalysis")
    return ProvenanceSummary(
        builder=str(_obj(run.get("builder"), "builder").get("id")),
        invocation=_opt(metadata.get("invocationId")),
        built=_opt(metadata.get("finishedOn")),
        subjects=tuple((str(s.get("name")), _digest(s)) for s in _objs(statement.get("subject"))),
        parameters=_obj(definition.get("externalParameters", {}), "externalParameters"),
        dependencies=tuple(
            (str(d.get("name") or d.get("uri")), _digest(d) or str(d.get("uri", "")))
            for d in _objs(definition.get("resolvedDependencies", []))
        ),
        model=(
            ("name", f"{component.get('name')}@{component.get('version')}"),
            ("licence", _licences(component)),
            ("task", str(parameters.get("task", "-"))),
            ("architecture", str(parameters.get("modelArchitecture", "-"))),
            (
                "inputs",
                ", ".join(str(i.get("format")) for i in _objs(parameters.get("inputs", []))),
            ),
            (
                "outputs",
                ", ".join(str(o.get("format")) for o in _objs(parameters.get("outputs", []))),
            ),
        ),
        components=tuple(
            (
                str(c.get("type")),
                str(c.get("name")),
                str(c.get("version", "")),
                _licences(c),
            )
            for c in _objs(bom.get("components", []))
        ),
        metrics=tuple(
            (str(m.get("type")), str(m.get("value")))
            for m in _objs(analysis.get("performanceMetrics", []))
        ),
    )


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TamperedError(f"provenance: {where} is not an object")
    return value


def _objs(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise TamperedError("provenance: a list is not a list")
    return [_obj(item, "list item") for item in value]


def _formats(value: Any) -> str:
    return ", ".join(str(item.get("format")) for item in _objs(value))


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _digest(descriptor: Mapping[str, Any]) -> str:
    digests = descriptor.get("digest", {})
    if not isinstance(digests, dict) or not digests:
        return ""
    algorithm = sorted(digests)[0]
    return f"{algorithm}:{digests[algorithm]}"


def _licences(component: Mapping[str, Any]) -> str:
    found = []
    for entry in _objs(component.get("licenses", [])):
        if "expression" in entry:
            found.append(str(entry["expression"]))
        elif isinstance(entry.get("license"), dict):
            found.append(str(entry["license"].get("id") or entry["license"].get("name")))
    return " AND ".join(found) or "-"
