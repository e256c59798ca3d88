"""The bundle manifest (manifest.json): frozen value objects, parsing and canonical bytes.

``parse_manifest`` is the only way bytes become a :class:`Manifest`. The model is
symmetric: :meth:`Manifest.from_dict` validates a document against
``manifests/manifest.v1.schema.json`` and the rules JSON Schema cannot say (unique paths,
the model and test vectors listed, no reserved names) and reads it into typed fields;
:meth:`Manifest.to_dict` gives the same document back. Only these two know the JSON keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Self

# Re-exported: the modules that read bundles import these names from here.
from packager.core.bundlefiles import MANIFEST as MANIFEST
from packager.core.bundlefiles import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES
from packager.core.bundlefiles import RESERVED as RESERVED
from packager.core.bundlefiles import SIGNATURE as SIGNATURE
from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads_object
from packager.core.records import as_json, from_json
from packager.core.text import printable
from packager.errors import TamperedError, UsageError

if TYPE_CHECKING:
    from jsonschema_rs import ValidationError, Validator

ROLES = ("model", "weights", "testvectors", "doc")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
# Semantic Versioning 2.0.0, the regular expression the specification suggests.
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
# Longer versions exist only to cost something: digits past a few thousand make int() raise.
MAX_VERSION_LENGTH = 128
PATH_RE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", re.ASCII)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
SCHEMA_VERSION = 1
_MANIFEST_LIMITS = Limits(max_bytes=MAX_MANIFEST_BYTES)


class _FlatPart:
    """A part of the document whose keys are its fields' (see :mod:`packager.core.records`);
    a field that is None is left out."""

    def to_dict(self) -> dict[str, Any]:
        return as_json(self, omit_none=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        return from_json(cls, d)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy-style dtype name, shape (ints, symbols, None)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        shape = d["shape"]
        return cls(d["name"], d["dtype"], None if shape is None else tuple(shape))


@dataclass(frozen=True)
class Source(_FlatPart):
    """What the model was converted from, and by which converter."""

    framework: str
    framework_version: str
    estimator: str
    converter: str
    converter_version: str


@dataclass(frozen=True)
class ModelInfo:
    """The ONNX graph: its file, the IR version and opsets it declares, its tensors.

    ``accepts_missing`` is whether the original model took missing values (NaN, blank
    text) and the graph answers as it does on them; None (left out: an .onnx file, a
    bundle made before it was recorded) is unknown, and instances treat it as False.
    ``target`` is the name of what a regressor predicts, when the publisher gave it.
    """

    path: str
    ir_version: int
    opsets: Mapping[str, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: Source
    accepts_missing: bool | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "irVersion": self.ir_version,
            "opsets": dict(self.opsets),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "source": self.source.to_dict(),
        }
        if self.accepts_missing is not None:
            doc["acceptsMissing"] = self.accepts_missing
        if self.target is not None:
            doc["target"] = self.target
        return doc

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInfo:
        return cls(
            path=d["path"],
            ir_version=d["irVersion"],
            opsets=dict(d["opsets"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            source=Source.from_dict(d["source"]),
            accepts_missing=d.get("acceptsMissing"),
            target=d.get("target"),
        )


@dataclass(frozen=True)
class RuntimeRequirement:
    """The oldest onnxruntime ("1.20") that runs the graph."""

    onnxruntime: str

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime": self.onnxruntime}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuntimeRequirement:
        return cls(onnxruntime=d["onnxruntime"])


@dataclass(frozen=True)
class FileEntry:
    path: str
    digest: Digest
    size: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.digest.hex, "size": self.size, "role": self.role}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(path=d["path"], digest=Digest(d["sha256"]), size=d["size"], role=d["role"])


@dataclass(frozen=True)
class Validation(_FlatPart):
    """How the bundle was checked: the test vectors, tolerances and what was measured.

    Numbers keep the JSON type they were read with, so a document round-trips exactly.
    None is a field the document leaves out.
    """

    testvectors: str
    rows: int
    rtol: float
    atol: float
    max_abs_diff: float
    max_rel_diff: float | None = None
    label_agreement: float | None = None
    task: str | None = None
    reference: str | None = None
    label_outputs: tuple[str, ...] | None = None
    input_cast: str | None = None


@dataclass(frozen=True)
class TrainingData:
    """A training data file, by name and digest (never by path: paths stay private), and
    the SPDX licence expression it is used under, when recorded."""

    uri: str
    digest: Digest
    license: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {"uri": self.uri, "sha256": self.digest.hex}
        if self.license is not None:
            doc["license"] = self.license
        return doc

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingData:
        return cls(uri=d["uri"], digest=Digest(d["sha256"]), license=d.get("license"))


@dataclass(frozen=True)
class ProvenanceRecord:
    """Where the model came from, as recorded in the manifest; None is a field left out."""

    git_commit: str | None = None
    training_data: tuple[TrainingData, ...] | None = None
    hyperparameters: Mapping[str, str] | None = None
    built_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.git_commit is not None:
            doc["gitCommit"] = self.git_commit
        if self.training_data is not None:
            doc["trainingData"] = [t.to_dict() for t in self.training_data]
        if self.hyperparameters is not None:
            doc["hyperparameters"] = dict(self.hyperparameters)
        if self.built_by is not None:
            doc["builtBy"] = self.built_by
        return doc

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProvenanceRecord:
        training = d.get("trainingData")
        hyperparameters = d.get("hyperparameters")
        return cls(
            git_commit=d.get("gitCommit"),
            training_data=None
            if training is None
            else tuple(TrainingData.from_dict(t) for t in training),
            hyperparameters=None if hyperparameters is None else dict(hyperparameters),
            built_by=d.get("builtBy"),
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest.json document as typed fields.

    :meth:`from_dict` and :meth:`to_dict` own the JSON keys (camelCase in JSON,
    snake_case here); ``to_dict(from_dict(doc)) == doc`` for every valid document.
    ``labels`` and ``metrics`` are free-form; None is a field the document leaves out.
    """

    name: str
    version: str
    created: str
    model: ModelInfo
    runtime: RuntimeRequirement
    files: tuple[FileEntry, ...]
    validation: Validation
    description: str | None = None
    license: str | None = None
    authors: tuple[str, ...] | None = None
    labels: Mapping[str, str] | None = None
    metrics: Mapping[str, Any] | None = None
    provenance: ProvenanceRecord | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain dicts and lists), ready for :func:`dump_json`."""
        doc: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "model": self.model.to_dict(),
            "runtime": self.runtime.to_dict(),
            "files": [f.to_dict() for f in self.files],
            "validation": self.validation.to_dict(),
        }
        optional = {
            "description": self.description,
            "license": self.license,
            "authors": None if self.authors is None else list(self.authors),
            "labels": None if self.labels is None else dict(self.labels),
            "metrics": None if self.metrics is None else dict(self.metrics),
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
        }
        doc.update({key: value for key, value in optional.items() if value is not None})
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Manifest:
        """Validate a parsed manifest document and read it into typed fields.

        Raises:
            TamperedError: the document is not a valid v1 manifest.
        """
        validate_document(doc)
        authors, labels, metrics = doc.get("authors"), doc.get("labels"), doc.get("metrics")
        provenance = doc.get("provenance")
        return cls(
            name=doc["name"],
            version=doc["version"],
            created=doc["created"],
            model=ModelInfo.from_dict(doc["model"]),
            runtime=RuntimeRequirement.from_dict(doc["runtime"]),
            files=tuple(FileEntry.from_dict(f) for f in doc["files"]),
            validation=Validation.from_dict(doc["validation"]),
            description=doc.get("description"),
            license=doc.get("license"),
            authors=None if authors is None else tuple(authors),
            labels=None if labels is None else dict(labels),
            metrics=None if metrics is None else dict(metrics),
            provenance=None if provenance is None else ProvenanceRecord.from_dict(provenance),
        )

    def to_bytes(self) -> bytes:
        """The canonical manifest.json bytes."""
        return dump_json(self.to_dict())


def dump_json(doc: Any) -> bytes:
    """Canonical JSON used for every document packager writes: sorted keys, 2-space indent."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def schema() -> dict[str, Any]:
    # The loader reads the package's data file (wherever it is installed, a zip included):
    # importlib.resources would import its readers and zipfile, on every install's start.
    import pkgutil

    data = pkgutil.get_data("packager", "manifests/manifest.v1.schema.json")
    assert data is not None  # packager's loader reads files
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise UsageError."""
    rule = "use 1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    return check_grammar(NAME_RE, name, "model name", rule)


def is_version(version: str) -> bool:
    """True when ``version`` is a Semantic Versioning 2.0.0 string (ASCII, whole string) of
    at most :data:`MAX_VERSION_LENGTH` characters: the one test of a version's form."""
    return (
        len(version) <= MAX_VERSION_LENGTH
        and version.isascii()
        and SEMVER_RE.fullmatch(version) is not None
    )


def check_version(version: str) -> str:
    """Return ``version`` if it is SemVer 2.0 (see :func:`is_version`), else raise UsageError."""
    if len(version) > MAX_VERSION_LENGTH:
        raise UsageError(
            f"invalid version {version[:40]!r}...: longer than {MAX_VERSION_LENGTH} characters"
        )
    if not is_version(version):
        raise UsageError(f"invalid version {version!r}: use Semantic Versioning, e.g. 1.2.0")
    return version


def check_grammar(grammar: re.Pattern[str], value: str, what: str, rule: str) -> str:
    """Return ``value`` if all of it matches ``grammar``, else raise UsageError saying it is
    an invalid ``what`` and the ``rule`` to follow."""
    if not grammar.fullmatch(value):
        raise UsageError(f"invalid {what} {value!r}: {rule}")
    return value


def is_safe_path(path: str) -> bool:
    """A relative POSIX path of plain segments: no '..', '.', empty or absolute parts."""
    return bool(PATH_RE.fullmatch(path)) and all(
        part not in (".", "..") for part in path.split("/")
    )


@cache
def _validator() -> Validator:
    """The manifest schema compiled once per process (jsonschema-rs, Draft 2020-12; see
    docs/adr/0012-manifest-schema-by-jsonschema-rs.md). ``offline``: nothing is fetched."""
    from jsonschema_rs import Draft202012Validator  # deferred: not needed for `packager --help`

    return Draft202012Validator(schema(), offline=True)


def _schema_errors(doc: Any) -> list[ValidationError]:
    try:
        return list(_validator().iter_errors(doc))
    except UnicodeEncodeError:
        # JSON's "\ud800" escapes give strings jsonschema-rs cannot take (it reads UTF-8).
        # Each unpaired surrogate is checked as U+FFFD instead: one code point for another,
        # and neither is in any of the schema's patterns, enums or constants.
        return list(_validator().iter_errors(_without_surrogates(doc)))


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        clean = {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
        if len(clean) != len(value):  # the check would see one of them only
            raise TamperedError("manifest.json: two keys differ only by unpaired surrogates")
        return clean
    return value


_JSON_VALUES = (str, int, float, bool, type(None))


def _check_json_values(doc: Any) -> None:
    """Refuse what no JSON text parses to (a tuple, a set, a key that is not a string...):
    a document built in Python may hold it, and the schema check reads only JSON's values."""
    pending = [doc]
    while pending:
        value = pending.pop()
        if type(value) is dict:
            if not all(type(k) is str for k in value):
                raise TamperedError("manifest.json: an object key is not a string")
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
        elif not isinstance(value, _JSON_VALUES):
            raise TamperedError(f"manifest.json: a {type(value).__name__} is not a JSON value")


def validate_document(doc: Any) -> None:
    """Validate a manifest document; raises TamperedError naming the first problem."""
    _check_json_values(doc)
    errors = sorted(_schema_errors(doc), key=lambda e: e.instance_path)
    if errors:
        err = errors[0]
        where = printable("/".join(str(p) for p in err.instance_path)) or "(top level)"
        raise TamperedError(f"manifest.json is invalid at {where}: {printable(err.message)}")
    # The same rules as the rest of packager, whatever a schema pattern may let through.
    if not NAME_RE.fullmatch(doc["name"]) or not is_version(doc["version"]):
        raise TamperedError("manifest.json: name or version is malformed")
    paths = [f["path"] for f in doc["files"]]
    for path in [*paths, doc["model"]["path"], doc["validation"]["testvectors"]]:
        if not is_safe_path(path):
            raise TamperedError(f"manifest.json: unsafe file path {path[:80]!r}")
    if len(set(paths)) != len(paths):
        raise TamperedError("manifest.json lists a file twice")
    if RESERVED & set(paths):
        raise TamperedError("manifest.json must not list manifest.json or model.sig in files")
    by_path = {f["path"]: f["role"] for f in doc["files"]}
    if by_path.get(doc["model"]["path"]) != "model":
        raise TamperedError("manifest.json: model.path is not listed in files with role 'model'")
    if by_path.get(doc["validation"]["testvectors"]) != "testvectors":
        raise TamperedError(
            "manifest.json: validation.testvectors is not listed in files with role 'testvectors'"
        )


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest.json bytes.

    Raises:
        TamperedError: the bytes are too large, not JSON, or not a valid v1 manifest.
    """
    return Manifest.from_dict(loads_object(data, what=MANIFEST, limits=_MANIFEST_LIMITS))


def resource_names(manifest: Manifest) -> Sequence[str]:
    """Every file the signature must cover: the manifest's files plus manifest.json, sorted."""
    return sorted([*(f.path for f in manifest.files), MANIFEST])
