"""Mirroring between registries: embedded directories and archives, verified version by version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from packager.cli import main
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.mirror import export, mirror, mirror_mode
from packager.distribution.publish import publish_bundle
from packager.errors import TamperedError, UntrustedError, UsageError
from packager.registry import ArchiveRegistry, LayoutRegistry
from packager.registry.base import Artifact, Registry

from .conftest import KeyPair, cli

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


@pytest.fixture
def source(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "source")
    for version in VERSIONS:
        publish_bundle(
            bundles[version], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
        )
    return registry


def digests(registry: Registry) -> dict[str, str]:
    return {
        f"{name}@{version}": str(registry.resolve(name, version).manifest_digest)
        for name in registry.names()
        for version in registry.versions(name)
    }


def files(registry: Registry, version: str, dest: Path) -> dict[str, bytes]:
    artifact = registry.resolve("iris", version)
    dest.mkdir(parents=True)
    for path, desc in artifact.files.items():
        registry.fetch_blob("iris", desc, dest / path)
    return {p.name: p.read_bytes() for p in dest.iterdir()}


def test_round_trip_embedded_archive_embedded_keeps_digests_and_bytes(
    source: LayoutRegistry, keypair: KeyPair, bundles: dict[str, Path], tmp_path: Path
) -> None:
    carried = ArchiveRegistry(tmp_path / "carry" / "models.tar")
    carried.path.parent.mkdir()
    report = mirror(source, carried, mode=Trusted(adhoc_policy([keypair.public])))
    assert [(c.version, c.destination_digest) for c in report.copied] == [
        (v, source.resolve("iris", v).manifest_digest) for v in VERSIONS
    ]
    assert digests(carried) == digests(source)

    target = LayoutRegistry(tmp_path / "target")
    report = mirror(carried, target, mode=Trusted(adhoc_policy([keypair.public])))
    assert len(report.copied) == 3 and not report.skipped and not report.conflicts
    assert digests(target) == digests(source)
    for version in VERSIONS:
        copied = files(target, version, tmp_path / "fetched" / version)
        assert copied == {p.name: p.read_bytes() for p in bundles[version].iterdir()}

    # Again: everything is there already, and the archive is not rewritten.
    before = carried.path.stat()
    report = mirror(source, carried, mode=Trusted(adhoc_policy([keypair.public])))
    assert [c.version for c in report.skipped] == list(VERSIONS) and not report.copied
    after = carried.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_mirror_into_an_archive_extends_it_with_the_same_bytes_as_an_export(
    source: LayoutRegistry, keypair: KeyPair, tmp_path: Path
) -> None:
    archive = tmp_path / "models.tar"
    export(["iris@1.0.0"], registry=source, out=archive)
    report = mirror(
        source,
        ArchiveRegistry(archive),
        ["iris@2.0.0"],
        mode=Trusted(adhoc_policy([keypair.public])),
    )
    assert [c.version for c in report.copied] == ["2.0.0"]
    assert ArchiveRegistry(archive).versions("iris") == ["1.0.0", "2.0.0"]
    both = tmp_path / "both.tar"
    export(["iris@2.0.0", "iris@1.0.0"], registry=source, out=both)
    assert archive.read_bytes() == both.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"


def test_names_select_versions(source: LayoutRegistry, keypair: KeyPair, tmp_path: Path) -> None:
    target = LayoutRegistry(tmp_path / "target")
    mirror(source, target, ["iris@1.1.0"], mode=Trusted(adhoc_policy([keypair.public])))
    assert target.versions("iris") == ["1.1.0"]
    report = mirror(source, target, ["iris"], mode=Trusted(adhoc_policy([keypair.public])))
    assert [c.version for c in report.copied] == ["1.0.0", "2.0.0"]
    assert [c.version for c in report.skipped] == ["1.1.0"]


class CountingRegistry:
    """The embedded registry, counting how often each version is resolved."""

    def __init__(self, inner: LayoutRegistry) -> None:
        self.inner = inner
        self.resolved: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def resolve(self, name: str, version: str) -> Artifact:
        self.resolved.append(f"{name}@{version}")
        return self.inner.resolve(name, version)


@pytest.mark.parametrize("mode", ["trusted", "unverified"])
def test_each_version_is_resolved_once_and_copied_as_verified(
    mode: str, source: LayoutRegistry, keypair: KeyPair, tmp_path: Path
) -> None:
    """What is verified is what is copied: no second look at the source in between."""
    counting = CountingRegistry(source)
    target = LayoutRegistry(tmp_path / "target")
    chosen = mirror_mode(
        lambda: adhoc_policy([keypair.public]), keys_given=False, no_verify=mode != "trusted"
    )
    report = mirror(cast(Registry, counting), target, mode=chosen)
    assert report.verified is (mode == "trusted")
    assert counting.resolved == [f"iris@{v}" for v in VERSIONS]
    assert digests(target) == digests(source)


def test_untrusted_signature_is_refused_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str],
    source: LayoutRegistry,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    for destination in (tmp_path / "target", tmp_path / "models.tar"):
        code, _, err = cli(
            capsys, "mirror", source.root, destination, "--key", other_keypair.pub_path
        )
        assert code == 3, err
        assert not destination.exists()
    with pytest.raises(UntrustedError):
        mirror(
            source,
            LayoutRegistry(tmp_path / "t"),
            mode=Trusted(adhoc_policy([other_keypair.public])),
        )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"


def test_keys_are_required_unless_no_verify(
    capsys: pytest.CaptureFixture[str], source: LayoutRegistry, keypair: KeyPair, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "mirror", source.root, tmp_path / "target")
    assert code == 2 and "--key" in err
    assert not (tmp_path / "target").exists()
    code, _, err = cli(
        capsys, "mirror", source.root, tmp_path / "target", "--key", keypair.pub_path, "--no-verify"
    )
    assert code == 2 and "contradict" in err
    assert not (tmp_path / "target").exists()
    with pytest.raises(UsageError, match="contradict"):
        mirror_mode(lambda: adhoc_policy([keypair.public]), keys_given=True, no_verify=True)
    assert mirror_mode(
        lambda: adhoc_policy([keypair.public]), keys_given=False, no_verify=True
    ) == Unverified("--no-verify")


def test_without_key_the_instance_trust_policy_decides(
    capsys: pytest.CaptureFixture[str],
    source: LayoutRegistry,
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    """mirror and pull without --key verify with trust.toml (or --trust FILE), as install."""
    code, _, err = cli(capsys, "pull", "iris@1.0.0", "--registry", source.root, "-o", tmp_path)
    assert code == 2
    assert "packager trust add-key" in err and "refusing to pull" in err
    code, _, err = cli(capsys, "mirror", source.root, tmp_path / "target")
    assert code == 2
    assert "packager trust add-key" in err and "--no-verify" in err

    other_policy = tmp_path / "other-trust.toml"
    assert (
        main(
            ["trust", "--trust", str(other_policy), "add-key", "other", str(other_keypair.pub_path)]
        )
        == 0
    )
    capsys.readouterr()
    code, _, err = cli(capsys, "mirror", source.root, tmp_path / "refused", "--trust", other_policy)
    assert code == 3, err
    assert not (tmp_path / "refused").exists()
    code, _, err = cli(
        capsys,
        "pull",
        "iris@1.0.0",
        "--registry",
        source.root,
        "--trust",
        other_policy,
        "-o",
        tmp_path / "refused-pull",
    )
    assert code == 3, err
    assert not (tmp_path / "refused-pull" / "iris-1.0.0").exists()

    assert cli(capsys, "trust", "add-key", "publisher", keypair.pub_path)[0] == 0
    target = tmp_path / "target"
    code, out, err = cli(capsys, "mirror", source.root, target, "--json")
    assert code == 0, err
    assert json.loads(out)["verified"] is True
    assert digests(LayoutRegistry(target)) == digests(source)
    code, out, err = cli(
        capsys, "pull", "iris@1.1.0", "--registry", source.root, "-o", tmp_path / "pulled", "--json"
    )
    assert code == 0, err
    assert (tmp_path / "pulled" / "iris-1.1.0" / "model.sig").is_file()


def test_no_verify_warns_and_still_checks_digests(
    capsys: pytest.CaptureFixture[str], source: LayoutRegistry, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    code, out, err = cli(capsys, "mirror", source.root, target, "--no-verify", "--json")
    assert code == 0, err
    assert err.startswith("packager: WARNING: --no-verify") and "NOT be checked" in err
    assert [c["version"] for c in json.loads(out)["copied"]] == list(VERSIONS)
    assert json.loads(out)["verified"] is False
    assert digests(LayoutRegistry(target)) == digests(source)

    artifact = source.resolve("iris", "1.1.0")
    blob = source.root / "iris" / "blobs" / "sha256" / artifact.files["model.onnx"].digest.hex
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    code, _, err = cli(capsys, "mirror", source.root, tmp_path / "other", "--no-verify")
    assert code == 3, err
    with pytest.raises(TamperedError):
        mirror(
            source,
            ArchiveRegistry(tmp_path / "x.tar"),
            ["iris@1.1.0"],
            mode=Unverified("--no-verify"),
        )
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("kind", ["directory", "archive"])
def test_conflicting_version_is_reported_and_the_others_are_copied(
    kind: str,
    capsys: pytest.CaptureFixture[str],
    source: LayoutRegistry,
    keypair: KeyPair,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    from packager.build.api import package

    # Another, validly signed iris 1.0.0: different test vectors, so different files.
    X, _ = iris
    rebuilt = package(
        iris_model,
        sample=X[::7],
        name="iris",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "rebuilt",
    )
    target = LayoutRegistry(tmp_path / "target")
    theirs = publish_bundle(
        rebuilt, registry=target, mode=Trusted(adhoc_policy([keypair.public]))
    ).manifest_digest
    destination: Path = target.root
    if kind == "archive":
        destination = tmp_path / "models.tar"
        export(["iris@1.0.0"], registry=target, out=destination)

    code, out, err = cli(
        capsys, "mirror", source.root, destination, "--key", keypair.pub_path, "--json"
    )
    assert code == 4, err
    report = json.loads(out)
    assert [c["version"] for c in report["copied"]] == ["1.1.0", "2.0.0"]
    assert report["conflicts"] == [
        {
            "name": "iris",
            "version": "1.0.0",
            "sourceDigest": str(source.resolve("iris", "1.0.0").manifest_digest),
            "destinationDigest": str(theirs),
        }
    ]
    assert "iris@1.0.0 already in" in err.splitlines()[-1]
    result = ArchiveRegistry(destination) if kind == "archive" else LayoutRegistry(destination)
    assert result.versions("iris") == list(VERSIONS)
    assert result.resolve("iris", "1.0.0").manifest_digest == theirs


def test_text_summary(
    capsys: pytest.CaptureFixture[str], source: LayoutRegistry, keypair: KeyPair, tmp_path: Path
) -> None:
    target = tmp_path / "models.tar"
    assert (
        cli(capsys, "mirror", source.root, target, "iris@1.0.0", "--key", keypair.pub_path)[0] == 0
    )
    code, out, err = cli(capsys, "mirror", source.root, target, "--key", keypair.pub_path)
    assert code == 0, err
    lines = [line.split()[:2] for line in out.splitlines()]
    assert lines == [["copied", "iris@1.1.0"], ["copied", "iris@2.0.0"], ["skipped", "iris@1.0.0"]]
    assert "2 copied, 1 already there, 0 conflicting" in err
