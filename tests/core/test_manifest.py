from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from packager.core.digests import Digest
from packager.core.manifest import check_name, check_version, dump_json, parse_manifest
from packager.errors import TamperedError, UsageError
from packager.registry.artifact import build_config

SCHEMAS = Path(__file__).parents[2] / "manifests"
EXAMPLE = SCHEMAS / "manifest.example.json"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return doc


def test_example_manifest_is_valid_and_canonical() -> None:
    manifest = parse_manifest(EXAMPLE.read_bytes())
    assert manifest.ref == "iris-classifier@1.0.0"
    assert [f.path for f in manifest.files] == ["model.onnx", "testvectors.npz"]
    assert manifest.to_bytes() == EXAMPLE.read_bytes()


def test_config_blob_matches_its_schema() -> None:
    manifest = parse_manifest(EXAMPLE.read_bytes())
    config = json.loads(build_config(manifest, [Digest.of(b"x")]))
    schema = json.loads((SCHEMAS / "model-config.v1.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert not list(Draft202012Validator(schema).iter_errors(config))
    assert config["descriptor"]["licenses"] == ["Apache-2.0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(name="iris\n"), "name"),
        (lambda d: d.update(version="1.0.0\n"), "version"),
        (lambda d: d.update(version="1.0"), "version"),
        (lambda d: d.update(extra=1), "Additional properties"),
        (lambda d: d["files"][0].update(path="../model.onnx"), "files"),
        (lambda d: d["files"][0].update(path="/etc/passwd"), "files"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d["files"].append({**d["files"][0], "path": "model.sig"}), "model.sig"),
        (lambda d: d["model"].update(path="other.onnx"), "model.path"),
        (lambda d: d["validation"].update(testvectors="model.onnx"), "testvectors"),
        (lambda d: d["files"][0].update(sha256="00"), "sha256"),
        (lambda d: d["files"][0].update(size=-1), "size"),
    ],
)
def test_invalid_manifests_are_refused(change: Any, message: str) -> None:
    doc = example()
    change(doc)
    with pytest.raises(TamperedError, match=message):
        parse_manifest(dump_json(doc))


def test_not_json_and_too_large() -> None:
    with pytest.raises(TamperedError, match="not valid JSON"):
        parse_manifest(b"\xff{")
    with pytest.raises(TamperedError, match="larger than"):
        parse_manifest(b" " * (1 << 20) + b"{}")


@pytest.mark.parametrize("name", ["Iris", "-x", "a" * 129, "iris\n", "ïris", ""])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


@pytest.mark.parametrize(
    "version", ["1", "1.0", "01.0.0", "1.0.0\n", "v1.0.0", "1.0.0-", "\uff11.0.0"]
)
def test_bad_versions(version: str) -> None:
    with pytest.raises(UsageError):
        check_version(version)


def test_good_versions() -> None:
    for version in ("0.0.0", "1.2.3-rc.1", "1.2.3+build.5", "10.20.30-alpha.beta-1+x"):
        assert check_version(version) == version
