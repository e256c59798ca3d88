"""Weights in .onnx.data files: bundled, listed, installed and loaded; hostile locations refused.

Also the runtime compatibility refusals (opset, IR version) on bundles a
publisher signed but this instance's onnxruntime cannot load.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from packager._io.hashing import digest_file
from packager._io.table import from_mapping
from packager.build.bundle import package
from packager.build.convert import load_model_file
from packager.cli import main
from packager.core import signature
from packager.core.digests import Digest
from packager.core.graph import check_graph
from packager.core.manifest import (
    MANIFEST,
    SIGNATURE,
    FileEntry,
    Manifest,
    RuntimeRequirement,
    parse_manifest,
)
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import IncompatibleModelError, TamperedError
from packager.instance.install import InstallOptions, install
from packager.instance.models import load
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry
from packager.runtime import Model, runtime_ir_version, runtime_opsets, runtime_version

from .conftest import KeyPair
from .core.test_manifest import assert_round_trips
from .hostile import serve_bundle_dir

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def positional(x: np.ndarray):  # type: ignore[no-untyped-def]
    return from_mapping({f"x{i}": x[:, i] for i in range(x.shape[1])}, named=False)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(12, 8))


@pytest.fixture(scope="module")
def torch_bundle(
    tmp_path_factory: pytest.TempPathFactory, keypair: KeyPair, rows: np.ndarray
) -> Path:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    return package(
        module,
        sample=positional(rows),
        name="mlp",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path_factory.mktemp("dist"),
    )


def writable_copy(bundle: Path, dest: Path) -> Path:
    copy = dest / bundle.name
    shutil.copytree(bundle, copy)
    for child in copy.iterdir():
        child.chmod(0o644)
    return copy


def resign(
    bundle: Path, key: KeyPair, *, edit: Callable[[Manifest], Manifest] | None = None
) -> None:
    """Re-list every file in manifest.json (applying ``edit``) and sign: a publisher's bundle."""
    manifest = parse_manifest((bundle / MANIFEST).read_bytes())
    if edit is not None:
        manifest = edit(manifest)
    files = tuple(FileEntry(f.path, *digest_file(bundle / f.path), f.role) for f in manifest.files)
    manifest_bytes = replace(manifest, files=files).to_bytes()
    (bundle / MANIFEST).write_bytes(manifest_bytes)
    resources = {f.path: f.digest for f in files}
    resources[MANIFEST] = Digest.of(manifest_bytes)
    (bundle / SIGNATURE).write_bytes(
        signature.sign(subject_name=bundle.name, resources=resources, private_key=key.private)
    )


def install_from(
    root: Path, bundle: Path, keypair: KeyPair, home: Path, *, name: str = "mlp"
) -> object:
    registry = LayoutRegistry(root)
    serve_bundle_dir(root, bundle, name=name, tag="1.0.0")
    return install(
        f"{name}@1.0.0",
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )


def test_torch_weights_are_bundled_installed_and_loaded(
    torch_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path, rows: np.ndarray
) -> None:
    manifest = parse_manifest((torch_bundle / MANIFEST).read_bytes())
    roles = {f.path: f.role for f in manifest.files}
    assert roles == {
        "model.onnx": "model",
        "model.onnx.data": "weights",
        "provenance.intoto.json": "doc",
        "sbom.cdx.json": "doc",
        "testvectors.npz": "testvectors",
    }
    graph = onnx.load(str(torch_bundle / "model.onnx"), load_external_data=False)
    locations = {
        entry.value
        for tensor in graph.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    assert locations == {"model.onnx.data"}

    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(torch_bundle, registry=registry, mode=Unverified("publish without --key"))
    install(
        "mlp",
        registry=registry,
        store=Store(home),
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    installed = Store(home).installed_dir("mlp")
    data = installed / "model.onnx.data"
    assert data.is_file() and not data.is_symlink()
    assert data.stat().st_nlink == 1  # onnx refuses hard-linked data files
    model = load("mlp", home=home)
    out = model.predict(rows)["output"]
    assert out.shape == (len(rows), 2)
    assert model.smoke_test().ok


def test_onnx_file_with_external_data_keeps_it(
    tmp_path: Path, keypair: KeyPair, home: Path
) -> None:
    weights = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)  # 2 KiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    source = tmp_path / "src"
    source.mkdir()
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(source / "matmul.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    x = np.ones((2, 16))
    bundle = package(
        load_model_file(source / "matmul.onnx"),
        sample=positional(x),
        name="matmul",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "dist",
    )
    manifest = assert_round_trips((bundle / MANIFEST).read_bytes())
    # The bundle names the data file after its model, whatever the source called it.
    assert {f.path: f.role for f in manifest.files}["model.onnx.data"] == "weights"
    assert manifest.file("model.onnx.data").size == weights.nbytes
    install_from(tmp_path / "registry", bundle, keypair, home, name="matmul")
    np.testing.assert_allclose(load("matmul", home=home).predict(x)["y"], x @ weights)


def prepacking_disabled(model: Model) -> bool:
    options = model._session.get_session_options()
    try:
        return options.get_session_config_entry("session.disable_prepacking") == "1"
    except RuntimeError:  # onnxruntime's answer for an entry never set
        return False


def test_external_weights_stay_mapped_unless_prepacking_is_asked_for(
    torch_bundle: Path, rows: np.ndarray, tmp_path: Path, keypair: KeyPair, home: Path
) -> None:
    """A model with weights files is loaded without a second, prepacked copy of them;
    prepack=True restores onnxruntime's default, with the same answers."""
    install_from(tmp_path / "registry", torch_bundle, keypair, home)
    mapped, packed = load("mlp", home=home), load("mlp", home=home, prepack=True)
    assert prepacking_disabled(mapped) and not prepacking_disabled(packed)
    for output, value in mapped.predict(rows).items():
        np.testing.assert_array_equal(value, packed.predict(rows)[output])


def test_models_without_weights_files_keep_the_default_session(bundles: dict[str, Path]) -> None:
    model = Model.open(bundles["1.0.0"])
    assert not any(f.role == "weights" for f in model.manifest.files)
    assert not prepacking_disabled(model)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../../escape.data", "plain file name"),
        ("/etc/passwd", "plain file name"),
        ("sub/model.onnx.data", "plain file name"),
        ("testvectors.npz", "does not list as weights"),
        ("other.data", "does not list as weights"),
    ],
)
def test_hostile_external_data_locations_are_refused_before_loading(
    torch_bundle: Path,
    keypair: KeyPair,
    tmp_path: Path,
    home: Path,
    location: str,
    message: str,
) -> None:
    bundle = writable_copy(torch_bundle, tmp_path)
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (bundle / "model.onnx").write_bytes(model.SerializeToString())
    resign(bundle, keypair)  # validly signed by the trusted publisher: only the graph is hostile
    with pytest.raises(TamperedError, match=message) as info:
        install_from(tmp_path / "registry", bundle, keypair, home)
    assert info.value.exit_code == 3
    assert not Store(home).installed()
    with pytest.raises(TamperedError, match=message):
        Model.open(bundle)


def test_external_data_must_fit_the_signed_file(
    torch_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path
) -> None:
    bundle = writable_copy(torch_bundle, tmp_path)
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    size = (bundle / "model.onnx.data").stat().st_size
    tensor = next(t for t in model.graph.initializer if t.external_data)
    for entry in tensor.external_data:
        if entry.key == "offset":
            entry.value = str(size)
    (bundle / "model.onnx").write_bytes(model.SerializeToString())
    resign(bundle, keypair)
    with pytest.raises(TamperedError, match=f"which has {size} bytes"):
        install_from(tmp_path / "registry", bundle, keypair, home)


@pytest.mark.parametrize("key", ["offset", "length"])
def test_an_external_data_number_of_thousands_of_digits_is_tampered(
    torch_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path, key: str
) -> None:
    bundle = writable_copy(torch_bundle, tmp_path)
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.external_data)
    entries = {entry.key: entry for entry in tensor.external_data}
    if key in entries:
        entries[key].value = "9" * 5000
    else:
        tensor.external_data.add(key=key, value="9" * 5000)
    (bundle / "model.onnx").write_bytes(model.SerializeToString())
    resign(bundle, keypair)
    with pytest.raises(TamperedError, match="is not a size") as info:
        install_from(tmp_path / "registry", bundle, keypair, home)
    assert info.value.exit_code == 3


def test_weights_listed_with_another_role_are_refused(
    torch_bundle: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    manifest = parse_manifest((torch_bundle / MANIFEST).read_bytes())
    files = tuple(
        replace(f, role="doc") if f.path == "model.onnx.data" else f for f in manifest.files
    )
    with pytest.raises(TamperedError, match="does not list as weights"):
        check_graph((torch_bundle / "model.onnx").read_bytes(), replace(manifest, files=files))


def test_graph_must_declare_the_manifest_opsets_and_ir(torch_bundle: Path) -> None:
    data = (torch_bundle / "model.onnx").read_bytes()
    manifest = parse_manifest((torch_bundle / MANIFEST).read_bytes())
    check_graph(data, manifest)
    old_opsets = replace(manifest.model, opsets={"ai.onnx": 13})
    with pytest.raises(TamperedError, match="imports opsets"):
        check_graph(data, parse_manifest(replace(manifest, model=old_opsets).to_bytes()))
    old_ir = replace(manifest.model, ir_version=7)
    with pytest.raises(TamperedError, match="IR version"):
        check_graph(data, parse_manifest(replace(manifest, model=old_ir).to_bytes()))
    with pytest.raises(TamperedError, match="not a readable ONNX model"):
        check_graph(b"\xff\xff garbage", parse_manifest((torch_bundle / MANIFEST).read_bytes()))


def _stamp(model_path: Path, *, opset: int | None = None, ir_version: int | None = None) -> None:
    model = onnx.load(str(model_path), load_external_data=False)
    if opset is not None:
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = opset
    if ir_version is not None:
        model.ir_version = ir_version
    model_path.write_bytes(model.SerializeToString())


def test_opset_newer_than_the_runtime_is_refused_naming_the_release(
    torch_bundle: Path,
    keypair: KeyPair,
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    too_new = runtime_opsets()["ai.onnx"] + 1
    bundle = writable_copy(torch_bundle, tmp_path)
    _stamp(bundle / "model.onnx", opset=too_new)
    # What a newer packager would write: the opset and the release that implements it.
    resign(
        bundle,
        keypair,
        edit=lambda m: replace(
            m,
            model=replace(m.model, opsets={"ai.onnx": too_new}),
            runtime=RuntimeRequirement("9.1"),
        ),
    )
    serve_bundle_dir(tmp_path / "registry", bundle, name="mlp", tag="1.0.0")
    code = main(
        [
            "install",
            "mlp@1.0.0",
            "--registry",
            str(tmp_path / "registry"),
            "--key",
            str(keypair.pub_path),
        ]
    )
    assert code == 5
    err = capsys.readouterr().err
    assert f"needs onnxruntime >= 9.1, this instance has {runtime_version()}" in err
    assert not Store(home).installed()

    # A manifest that claims this runtime suffices is still checked against the graph's opset.
    resign(bundle, keypair, edit=lambda m: replace(m, runtime=RuntimeRequirement("1.10")))
    with pytest.raises(IncompatibleModelError, match=f"needs opset {too_new} of 'ai.onnx'") as info:
        install_from(tmp_path / "registry2", bundle, keypair, home)
    assert f"an onnxruntime newer than {runtime_version()}" in str(info.value)


def test_ir_version_newer_than_the_runtime_is_refused(
    torch_bundle: Path, keypair: KeyPair, tmp_path: Path, home: Path
) -> None:
    too_new = runtime_ir_version() + 1
    bundle = writable_copy(torch_bundle, tmp_path)
    _stamp(bundle / "model.onnx", ir_version=too_new)
    resign(bundle, keypair, edit=lambda m: replace(m, model=replace(m.model, ir_version=too_new)))
    with pytest.raises(IncompatibleModelError, match=f"IR version {too_new}") as info:
        install_from(tmp_path / "registry", bundle, keypair, home)
    assert info.value.exit_code == 5
