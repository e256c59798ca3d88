"""The bundle manifest (manifest.json): frozen value objects, parsing and canonical bytes.

``parse_manifest`` is the only way bytes become a :class:`Manifest`; it validates
against ``manifests/manifest.v1.schema.json`` and the rules JSON Schema cannot say
(unique paths, the model and test vectors listed, no reserved names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads_object
from packager.errors import TamperedError, UsageError

MANIFEST = "manifest.json"
SIGNATURE = "model.sig"
RESERVED = frozenset({MANIFEST, SIGNATURE})
ROLES = ("model", "weights", "testvectors", "doc")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
# Semantic Versioning 2.0.0, the regular expression the specification suggests.
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
PATH_RE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", re.ASCII)
MAX_MANIFEST_BYTES = 1 << 20
_MANIFEST_LIMITS = Limits(max_bytes=MAX_MANIFEST_BYTES)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy-style dtype name, shape (ints, symbols, None)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorSpec:
        shape = d["shape"]
        return cls(d["name"], d["dtype"], None if shape is None else tuple(shape))


@dataclass(frozen=True)
class FileEntry:
    path: str
    digest: Digest
    size: int
    role: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.digest.hex, "size": self.size, "role": self.role}


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. ``data`` is the whole parsed document; the rest are views of it."""

    name: str
    version: str
    created: str
    model_path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opsets: Mapping[str, int]
    ir_version: int
    min_onnxruntime: str
    files: tuple[FileEntry, ...]
    testvectors: str
    rtol: float
    atol: float
    data: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    @property
    def license(self) -> str | None:
        value = self.data.get("license")
        return value if isinstance(value, str) else None

    def to_bytes(self) -> bytes:
        return dump_json(self.data)


def dump_json(doc: Any) -> bytes:
    """Canonical JSON used for every document packager writes: sorted keys, 2-space indent."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def schema() -> dict[str, Any]:
    text = resources.files("packager").joinpath("manifests/manifest.v1.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise UsageError."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid model name {name!r}: use 1-128 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is SemVer 2.0, else raise UsageError."""
    if not SEMVER_RE.fullmatch(version):
        raise UsageError(f"invalid version {version!r}: use Semantic Versioning, e.g. 1.2.0")
    return version


def is_safe_path(path: str) -> bool:
    """A relative POSIX path of plain segments: no '..', '.', empty or absolute parts."""
    return bool(PATH_RE.fullmatch(path)) and all(
        part not in (".", "..") for part in path.split("/")
    )


def validate_document(doc: Any) -> None:
    """Validate a manifest document; raises TamperedError naming the first problem."""
    from jsonschema import Draft202012Validator  # deferred: not needed for `packager --help`

    errors = sorted(Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise TamperedError(f"manifest.json is invalid at {where}: {err.message[:200]}")
    # JSON Schema's "$" also matches before a final newline: re-check with fullmatch.
    if not NAME_RE.fullmatch(doc["name"]) or not SEMVER_RE.fullmatch(doc["version"]):
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


def manifest_from_document(doc: Mapping[str, Any]) -> Manifest:
    """Build a Manifest from an already validated document."""
    model = doc["model"]
    validation = doc["validation"]
    return Manifest(
        name=doc["name"],
        version=doc["version"],
        created=doc["created"],
        model_path=model["path"],
        inputs=tuple(TensorSpec.from_json(t) for t in model["inputs"]),
        outputs=tuple(TensorSpec.from_json(t) for t in model["outputs"]),
        opsets=dict(model["opsets"]),
        ir_version=model["irVersion"],
        min_onnxruntime=doc["runtime"]["onnxruntime"],
        files=tuple(
            FileEntry(f["path"], Digest(f["sha256"]), f["size"], f["role"]) for f in doc["files"]
        ),
        testvectors=validation["testvectors"],
        rtol=float(validation["rtol"]),
        atol=float(validation["atol"]),
        data=doc,
    )


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest.json bytes.

    Raises:
        TamperedError: the bytes are too large, not JSON, or not a valid v1 manifest.
    """
    doc = loads_object(data, what=MANIFEST, limits=_MANIFEST_LIMITS)
    validate_document(doc)
    return manifest_from_document(doc)


def resource_names(manifest: Manifest) -> Sequence[str]:
    """Every file the signature must cover: the manifest's files plus manifest.json, sorted."""
    return sorted([*(f.path for f in manifest.files), MANIFEST])
