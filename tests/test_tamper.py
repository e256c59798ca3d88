"""The tamper matrix: every way a registry can lie is refused with exit 3 and changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from packager.core import signature
from packager.core.digests import Digest
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import PackagerError, VerificationError
from packager.instance.install import InstallOptions, install
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair
from .hostile import serve_files

NOW = datetime(2026, 11, 27, tzinfo=UTC)


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


def test_every_tampering_is_refused_and_changes_nothing(
    tmp_path: Path, home: Path, bundles: dict[str, Path], keypair: KeyPair, other_keypair: KeyPair
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    origin = LayoutRegistry(tmp_path / "origin")
    publish_bundle(bundles["1.0.0"], registry=origin, mode=Unverified("publish without --key"))
    install(
        "iris@1.0.0",
        registry=origin,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(trust)),
    )
    before = snapshot(home)
    count = 0
    for label, files in cases(bundles, other_keypair):
        hostile = LayoutRegistry(tmp_path / f"case-{count}")
        serve_files(hostile.root, "iris", "1.1.0", files)
        count += 1
        with pytest.raises(PackagerError) as info:
            install(
                "iris@1.1.0",
                registry=hostile,
                store=store,
                now=NOW,
                options=InstallOptions(verify=Trusted(trust)),
            )
        assert isinstance(info.value, VerificationError), f"{label}: {info.value!r}"
        assert info.value.exit_code == 3, label
        assert snapshot(home) == before, label
        assert not [p for p in store.tmp.rglob("*") if p.is_file()], label
    assert count > 40
    refusals = [e for e in store.audit_log("iris") if e.outcome == "refused"]
    assert len(refusals) == count


def test_replaying_an_older_version_is_a_rollback(
    tmp_path: Path, home: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    trust = adhoc_policy([keypair.public])
    store = Store(home)
    registry = LayoutRegistry(tmp_path / "r")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    install(
        "iris@2.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(trust)),
    )
    before = snapshot(home)
    for version in ("1.0.0", "1.1.0"):
        with pytest.raises(VerificationError, match="rollback floor"):
            install(
                f"iris@{version}",
                registry=registry,
                store=store,
                now=NOW,
                options=InstallOptions(verify=Trusted(trust)),
            )
    assert snapshot(home) == before
