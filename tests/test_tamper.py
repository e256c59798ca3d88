"""The tamper matrix: every way a registry can lie is refused with exit 3 and changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from packager.core import signature
from packager.core.digests import Digest
from packager.core.policy import Trusted, TrustPolicy, Unverified, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import NotFoundError, PackagerError, RollbackError, VerificationError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.base import Registry
from packager.registry.layout import LayoutRegistry
from packager.registry.memory import MemoryRegistry

from .conftest import KeyPair
from .hostile import serve_files

NOW = datetime(2026, 11, 27, tzinfo=UTC)
UNSIGNED = Unverified("publish without --key")


def trusted(trust: TrustPolicy) -> InstallOptions:
    return InstallOptions(verify=Trusted(trust))


def snapshot(home: Path) -> dict[str, str]:
    """Everything installed: paths, bytes and link targets (state.db and locks excluded)."""
    result = {}
    for path in sorted((home / "models").rglob("*")):
        rel = str(path.relative_to(home))
        if path.is_symlink():
            result[rel] = "-> " + str(path.readlink())
        elif path.is_file():
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def files_of(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(bundle.iterdir())}


def leaf_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from leaf_paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from leaf_paths(value, (*prefix, i))
    else:
        yield prefix


def mutate(doc: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(doc))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    value = parent[path[-1]]
    if isinstance(value, bool):
        parent[path[-1]] = not value
    elif isinstance(value, (int, float)):
        parent[path[-1]] = value + 1
    elif isinstance(value, str):
        parent[path[-1]] = value[:-1] + ("x" if not value.endswith("x") else "y")
    else:
        parent[path[-1]] = "null"
    return copy


def flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset % len(out)] ^= 0x40
    return bytes(out)


def cases(bundles: dict[str, Path], other: KeyPair) -> Iterator[tuple[str, dict[str, bytes]]]:
    good = files_of(bundles["1.1.0"])
    for name, data in good.items():
        for offset in (0, 1, len(data) // 3, len(data) // 2, len(data) - 1):
            yield f"flip {name}@{offset}", {**good, name: flipped(data, offset)}
    manifest = json.loads(good["manifest.json"])
    for path in leaf_paths(manifest):
        changed = json.dumps(mutate(manifest, path), indent=2, sort_keys=True).encode()
        yield f"manifest {'/'.join(map(str, path))}", {**good, "manifest.json": changed}
    yield "signature of 2.0.0", {**good, "model.sig": files_of(bundles["2.0.0"])["model.sig"]}
    yield (
        "files of 1.0.0 with the signature of 1.1.0",
        {
            **files_of(bundles["1.0.0"]),
            "model.sig": good["model.sig"],
        },
    )
    yield "1.0.0 replayed as 1.1.0", files_of(bundles["1.0.0"])
    resources = {n: Digest.of(d) for n, d in good.items() if n != "model.sig"}
    yield (
        "re-signed by an untrusted key",
        {
            **good,
            "model.sig": signature.sign(
                subject_name="iris-1.1.0", resources=resources, private_key=other.private
            ),
        },
    )
    yield "extra file", {**good, "run.sh": b"#!/bin/sh\nid\n"}
    yield "no signature", {n: d for n, d in good.items() if n != "model.sig"}
    yield "empty signature", {**good, "model.sig": b""}


Hostile = Callable[[], tuple[Registry, Path | MemoryRegistry]]


@pytest.fixture(scope="module")
def unlike(
    tmp_path_factory: pytest.TempPathFactory, iris: tuple[Any, Any], keypair: KeyPair
) -> Path:
    """iris 1.0.0 from another fit: no file in common with ``bundles``' 1.1.0, so that
    installing 1.1.0 over it must fetch every file (an install takes the files it already
    holds from disk, and a registry's lies about those would never be read)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from packager.build.api import package

    X, y = iris
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500)).fit(X, y)
    out = tmp_path_factory.mktemp("unlike")
    return package(
        model, sample=X[::7], name="iris", version="1.0.0", key=keypair.private, out_dir=out
    )


@pytest.fixture(params=["memory", "layout"])
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hostile]:
    """Makes a fresh registry for each case: in memory, or the embedded directory kind;
    with what :func:`serve_files` writes into."""
    made: list[Registry] = []

    def make() -> tuple[Registry, Path | MemoryRegistry]:
        if request.param == "memory":
            memory = MemoryRegistry()
            made.append(memory)
            return memory, memory
        layout = LayoutRegistry(tmp_path / f"case-{len(made)}")
        made.append(layout)
        return layout, layout.root

    yield make
    for registry in made:
        registry.close()


def test_every_tampering_is_refused_and_changes_nothing(
    home: Path,
    bundles: dict[str, Path],
    unlike: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    hostile: Hostile,
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    origin, _ = hostile()
    publish_bundle(unlike, registry=origin, mode=UNSIGNED)
    install("iris@1.0.0", registry=origin, store=store, now=NOW, options=trusted(trust))
    before = snapshot(home)
    count = 0
    for label, files in cases(bundles, other_keypair):
        registry, target = hostile()
        serve_files(target, "iris", "1.1.0", files)
        count += 1
        with pytest.raises(PackagerError) as info:
            install("iris@1.1.0", registry=registry, store=store, now=NOW, options=trusted(trust))
        assert isinstance(info.value, VerificationError), f"{label}: {info.value!r}"
        assert info.value.exit_code == 3, label
        assert snapshot(home) == before, label
        assert not [p for p in store.tmp.rglob("*") if p.is_file()], label
    assert count > 40
    refusals = [e for e in store.audit_log("iris") if e.outcome == "refused"]
    assert len(refusals) == count


def _entry(registry: MemoryRegistry, tag: str) -> dict[str, Any]:
    artifact = registry.resolve("iris", tag)
    return {
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "digest": str(artifact.manifest_digest),
        "size": len(artifact.oci_manifest),
    }


def _serve_other_model_bytes(registry: MemoryRegistry) -> None:
    desc = registry.resolve("iris", "1.1.0").files["model.onnx"]
    registry.serve(desc.digest, b"\0" * desc.size)


def _serve_a_longer_blob(registry: MemoryRegistry) -> None:
    desc = registry.resolve("iris", "1.1.0").files["model.onnx"]
    registry.serve(desc.digest, b"\0" * (desc.size + 10))


def _serve_a_shorter_signature(registry: MemoryRegistry) -> None:
    desc = registry.resolve("iris", "1.1.0").files["model.sig"]
    registry.serve(desc.digest, b"{}")


def _lie_about_the_manifest_size(registry: MemoryRegistry) -> None:
    entry = _entry(registry, "1.1.0")
    registry.set_tag("iris", "1.1.0", {**entry, "size": entry["size"] + 1})


def _lie_about_a_huge_manifest(registry: MemoryRegistry) -> None:
    registry.set_tag("iris", "1.1.0", {**_entry(registry, "1.1.0"), "size": 1 << 40})


def _tag_the_manifest_of_another_version(registry: MemoryRegistry) -> None:
    registry.set_tag("iris", "1.1.0", _entry(registry, "1.0.0"))


def _tag_twice_with_two_digests(registry: MemoryRegistry) -> None:
    registry.duplicate_tag(
        "iris", "1.1.0", digest=registry.resolve("iris", "1.0.0").manifest_digest
    )


def _tag_twice_identically(registry: MemoryRegistry) -> None:
    registry.duplicate_tag("iris", "1.1.0")


@pytest.mark.parametrize(
    "lie",
    [
        _serve_other_model_bytes,
        _serve_a_longer_blob,
        _serve_a_shorter_signature,
        _lie_about_the_manifest_size,
        _lie_about_a_huge_manifest,
        _tag_the_manifest_of_another_version,
        _tag_twice_with_two_digests,
        _tag_twice_identically,
    ],
)
def test_every_lie_of_a_registry_is_refused_and_changes_nothing(
    home: Path,
    bundles: dict[str, Path],
    unlike: Path,
    keypair: KeyPair,
    memory_registry: MemoryRegistry,
    lie: Callable[[MemoryRegistry], None],
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    for bundle in (unlike, bundles["1.1.0"]):
        publish_bundle(bundle, registry=memory_registry, mode=UNSIGNED)
    install("iris@1.0.0", registry=memory_registry, store=store, now=NOW, options=trusted(trust))
    before = snapshot(home)
    lie(memory_registry)
    with pytest.raises(VerificationError) as info:
        install(
            "iris@1.1.0", registry=memory_registry, store=store, now=NOW, options=trusted(trust)
        )
    assert info.value.exit_code == 3
    assert snapshot(home) == before
    assert not [p for p in store.tmp.rglob("*") if p.is_file()]


def test_a_dropped_tag_is_not_found(
    home: Path, bundles: dict[str, Path], keypair: KeyPair, memory_registry: MemoryRegistry
) -> None:
    publish_bundle(bundles["1.0.0"], registry=memory_registry, mode=UNSIGNED)
    memory_registry.drop_tag("iris", "1.0.0")
    with pytest.raises(NotFoundError) as info:
        install(
            "iris@1.0.0",
            registry=memory_registry,
            store=Store(home),
            now=NOW,
            options=trusted(adhoc_policy([keypair.public])),
        )
    assert info.value.exit_code == 4


def test_a_registry_rolled_back_to_an_older_channel_is_refused(
    home: Path, bundles: dict[str, Path], keypair: KeyPair, memory_registry: MemoryRegistry
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    for version in ("1.1.0", "2.0.0"):
        publish_bundle(bundles[version], registry=memory_registry, mode=UNSIGNED)
    promote(
        "iris@1.1.0",
        channel="stable",
        registry=memory_registry,
        private_key=keypair.private,
        now=NOW,
    )
    old = memory_registry.snapshot()
    promote(
        "iris@2.0.0",
        channel="stable",
        registry=memory_registry,
        private_key=keypair.private,
        now=NOW,
    )
    install("iris@stable", registry=memory_registry, store=store, now=NOW, options=trusted(trust))
    before = snapshot(home)
    memory_registry.roll_back(old)
    with pytest.raises(RollbackError):
        install(
            "iris@stable", registry=memory_registry, store=store, now=NOW, options=trusted(trust)
        )
    assert snapshot(home) == before
    assert store.current_version("iris") == "2.0.0"


@pytest.mark.parametrize("kind", ["memory", "layout"])
def test_replaying_an_older_version_is_a_rollback(
    tmp_path: Path,
    home: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    memory_registry: MemoryRegistry,
    kind: str,
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    registry = memory_registry if kind == "memory" else LayoutRegistry(tmp_path / "r")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=UNSIGNED)
    install("iris@2.0.0", registry=registry, store=store, now=NOW, options=trusted(trust))
    before = snapshot(home)
    for version in ("1.0.0", "1.1.0"):
        with pytest.raises(VerificationError, match="rollback floor"):
            install(
                f"iris@{version}", registry=registry, store=store, now=NOW, options=trusted(trust)
            )
    assert snapshot(home) == before
