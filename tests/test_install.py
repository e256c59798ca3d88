"""Install from the embedded registry: the happy path, and refusals that leave `current` intact."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from packager.core.manifest import MANIFEST, SIGNATURE, parse_manifest
from packager.core.names import parse_ref
from packager.core.policy import Trusted, TrustPolicy, Unverified, adhoc_policy
from packager.core.shards import Shard
from packager.distribution.publish import publish_bundle
from packager.errors import (
    NotFoundError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
    WrongModelError,
)
from packager.instance.install import InstallOptions, install, remove, rollback
from packager.instance.models import load
from packager.instance.store import Store
from packager.registry.base import Descriptor, Registry
from packager.registry.layout import LayoutRegistry
from packager.registry.verified import Source, fetch_verified

from .conftest import KeyPair
from .hostile import serve_bundle_dir

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path) -> LayoutRegistry:
    return LayoutRegistry(tmp_path / "registry")


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def publish_raw(registry: LayoutRegistry, bundle: Path) -> None:
    """Serve whatever the directory holds, bypassing publish-side checks (a hostile registry)."""
    serve_bundle_dir(registry.root, bundle, name="iris", tag="1.1.0")


def assert_current_intact(store: Store, home: Path, version: str) -> None:
    assert store.current_version("iris") == version
    model = load("iris", home=home)
    assert model.manifest.version == version
    assert model.smoke_test().ok
    assert not [p for p in store.tmp.rglob("*") if p.is_file()], "staging left behind"


def test_install_happy_path(
    registry: LayoutRegistry, store: Store, home: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    publish_bundle(
        bundles["1.0.0"], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
    )
    messages: list[str] = []
    result = install(
        "iris@1.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(
            verify=Trusted(adhoc_policy([keypair.public])), progress=messages.append
        ),
    )
    assert result.version == "1.0.0"
    assert result.previous is None
    assert result.smoke_test.ok and result.smoke_test.rows == 30
    installed = home / "models" / "iris" / "1.0.0"
    assert result.directory == installed
    assert (home / "models" / "iris" / "current").resolve() == installed
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        p.name for p in bundles["1.0.0"].iterdir()
    )
    for p in installed.iterdir():
        assert p.read_bytes() == (bundles["1.0.0"] / p.name).read_bytes()
        assert p.is_file() and not p.is_symlink()
        assert p.stat().st_mode & 0o222 == 0, "installed files must be read-only"
    assert store.floor("iris") == "1.0.0"
    assert any("signature verified" in m for m in messages)
    log = store.audit_log("iris")
    assert [(e.action, e.outcome) for e in log] == [("install", "ok")]


def test_install_latest_and_upgrade_then_rollback(
    registry: LayoutRegistry, store: Store, home: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    install(
        "iris@1.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    result = install(
        "iris",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert (result.version, result.previous) == ("2.0.0", "1.0.0")
    assert store.versions("iris") == ["1.0.0", "2.0.0"]
    assert rollback("iris", store=store, now=NOW).version == "1.0.0"
    assert_current_intact(store, home, "1.0.0")
    assert rollback("iris", store=store, now=NOW).version == "2.0.0"
    with pytest.raises(UsageError):
        remove("iris", "2.0.0", store=store, now=NOW)
    remove("iris", "1.0.0", store=store, now=NOW)
    assert store.versions("iris") == ["2.0.0"]
    with pytest.raises(NotFoundError):
        rollback("iris", store=store, now=NOW)
    # Reinstalling the same version is allowed and leaves it current.
    install(
        "iris@2.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    assert_current_intact(store, home, "2.0.0")


@pytest.fixture
def installed_v1(
    registry: LayoutRegistry, store: Store, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    publish_bundle(
        bundles["1.0.0"], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
    )
    install(
        "iris@1.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_model(bundle: Path) -> None:
    flip_byte(bundle / "model.onnx")


def tamper_manifest(bundle: Path) -> None:
    manifest = parse_manifest((bundle / MANIFEST).read_bytes())
    (bundle / MANIFEST).write_bytes(replace(manifest, description="now with a backdoor").to_bytes())


def tamper_manifest_and_model(bundle: Path) -> None:
    """Change model.onnx and re-list its digest in manifest.json: the signature must catch it."""
    from packager._io.hashing import digest_file

    flip_byte(bundle / "model.onnx")
    manifest = parse_manifest((bundle / MANIFEST).read_bytes())
    digest, _ = digest_file(bundle / "model.onnx")
    files = tuple(
        replace(f, digest=digest) if f.path == "model.onnx" else f for f in manifest.files
    )
    (bundle / MANIFEST).write_bytes(replace(manifest, files=files).to_bytes())


def add_extra_file(bundle: Path) -> None:
    (bundle / "extra.py").write_text("import os; os.system('id')\n")


def drop_testvectors(bundle: Path) -> None:
    (bundle / "testvectors.npz").unlink()


def resign_with_other_key(other: KeyPair) -> object:
    def tamper(bundle: Path) -> None:
        from packager._io.hashing import digest_file
        from packager.core import signature

        resources = {
            p.name: digest_file(p)[0] for p in sorted(bundle.iterdir()) if p.name != SIGNATURE
        }
        (bundle / SIGNATURE).write_bytes(
            signature.sign(subject_name=bundle.name, resources=resources, private_key=other.private)
        )

    return tamper


def test_refusals_leave_current_intact(
    installed_v1: None,
    tmp_path: Path,
    store: Store,
    home: Path,
    bundle_copy: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
) -> None:
    cases = {
        "tampered model.onnx": (tamper_model, TamperedError),
        "tampered manifest.json": (tamper_manifest, TamperedError),
        "manifest re-listing a changed model": (tamper_manifest_and_model, TamperedError),
        "extra file": (add_extra_file, TamperedError),
        "missing file": (drop_testvectors, TamperedError),
        "signed by an untrusted key": (resign_with_other_key(other_keypair), UntrustedError),
    }
    for label, (tamper, expected) in cases.items():
        bundle = tmp_path / label.replace(" ", "_") / bundle_copy.name
        shutil.copytree(bundle_copy, bundle)
        tamper(bundle)
        hostile = LayoutRegistry(tmp_path / f"hostile-{label.replace(' ', '_')}")
        publish_raw(hostile, bundle)
        with pytest.raises(expected) as info:
            install(
                "iris@1.1.0",
                registry=hostile,
                store=store,
                now=NOW,
                options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
            )
        assert info.value.exit_code == 3, label
        assert_current_intact(store, home, "1.0.0")
        assert store.versions("iris") == ["1.0.0"], label
    refusals = [e for e in store.audit_log("iris") if e.outcome == "refused"]
    assert len(refusals) == len(cases)


def test_wrong_key_refused(
    installed_v1: None,
    registry: LayoutRegistry,
    store: Store,
    home: Path,
    bundles: dict[str, Path],
    other_keypair: KeyPair,
) -> None:
    publish_bundle(bundles["1.1.0"], registry=registry, mode=Unverified("publish without --key"))
    with pytest.raises(UntrustedError):
        install(
            "iris@1.1.0",
            registry=registry,
            store=store,
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([other_keypair.public]))),
        )
    assert_current_intact(store, home, "1.0.0")


def test_unsigned_bundle_refused(
    installed_v1: None,
    tmp_path: Path,
    store: Store,
    home: Path,
    bundle_copy: Path,
    keypair: KeyPair,
) -> None:
    (bundle_copy / SIGNATURE).unlink()
    with pytest.raises(TamperedError, match="unsigned|no model.sig"):
        publish_bundle(
            bundle_copy,
            registry=LayoutRegistry(tmp_path / "r"),
            mode=Unverified("publish without --key"),
        )
    # A registry serving a bundle whose signature is not a signature at all.
    (bundle_copy / SIGNATURE).write_text("{}")
    hostile = LayoutRegistry(tmp_path / "hostile")
    publish_raw(hostile, bundle_copy)
    with pytest.raises(VerificationError):
        install(
            "iris@1.1.0",
            registry=hostile,
            store=store,
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
    assert_current_intact(store, home, "1.0.0")


def test_corrupted_blob_in_registry_refused(
    installed_v1: None,
    registry: LayoutRegistry,
    store: Store,
    home: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    from packager._io.hashing import digest_file

    """A corrupted blob the instance must fetch is refused, and nothing changes; one whose
    bytes an installed version already holds is taken from there (checked) instead."""
    publish_bundle(bundles["1.1.0"], registry=registry, mode=Unverified("publish without --key"))
    digest, _ = digest_file(bundles["1.1.0"] / "model.onnx")
    blob = registry.root / "iris" / "blobs" / "sha256" / digest.hex
    blob.chmod(0o644)
    flip_byte(blob, offset=7)
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])))
    elsewhere = Store(home.parent / "another-home")
    with pytest.raises(TamperedError):
        install("iris@1.1.0", registry=registry, store=elsewhere, now=NOW, options=options)
    assert elsewhere.installed() == []
    assert_current_intact(store, home, "1.0.0")
    install("iris@1.1.0", registry=registry, store=store, now=NOW, options=options)
    installed = store.installed_dir("iris", "1.1.0") / "model.onnx"
    assert digest_file(installed) == digest_file(bundles["1.1.0"] / "model.onnx")


def test_insecure_install_says_why_and_still_checks_digests(
    registry: LayoutRegistry, store: Store, home: Path, bundles: dict[str, Path]
) -> None:
    """Unverified is one explicit mode with its reason: warned, audited as insecure with
    the reason, and every digest is still checked."""
    from packager._io.hashing import digest_file

    for version in ("1.0.0", "1.1.0"):
        publish_bundle(bundles[version], registry=registry, mode=Unverified("publish"))
    messages: list[str] = []
    insecure = InstallOptions(verify=Unverified("--insecure-skip-verify"), progress=messages.append)
    result = install("iris@1.0.0", registry=registry, store=store, now=NOW, options=insecure)
    assert result.version == "1.0.0"
    assert "WARNING: signature NOT verified (--insecure-skip-verify); digests still checked" in (
        messages
    )
    entry = store.audit_log("iris")[-1]
    assert (entry.action, entry.outcome) == ("install", "insecure")
    assert "signature not verified (--insecure-skip-verify)" in entry.detail
    digest, _ = digest_file(bundles["1.1.0"] / "model.onnx")
    blob = registry.root / "iris" / "blobs" / "sha256" / digest.hex
    blob.chmod(0o644)
    flip_byte(blob, offset=7)
    # Another instance, which holds no copy of model.onnx to take instead of the blob.
    elsewhere = Store(home.parent / "another-home")
    with pytest.raises(TamperedError):
        install("iris@1.1.0", registry=registry, store=elsewhere, now=NOW, options=insecure)
    assert elsewhere.installed() == []
    assert_current_intact(store, home, "1.0.0")


def test_downgrade_refused_unless_allowed(
    registry: LayoutRegistry, store: Store, home: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    install(
        "iris@1.1.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
    )
    remove_then = store.versions("iris")
    with pytest.raises(RollbackError) as info:
        install(
            "iris@1.0.0",
            registry=registry,
            store=store,
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
    assert info.value.exit_code == 3
    assert store.versions("iris") == remove_then
    assert_current_intact(store, home, "1.1.0")
    install(
        "iris@1.0.0",
        registry=registry,
        store=store,
        now=NOW,
        options=InstallOptions(
            verify=Trusted(adhoc_policy([keypair.public])), allow_downgrade=True
        ),
    )
    assert store.current_version("iris") == "1.0.0"
    assert store.floor("iris") == "1.1.0", "the floor never goes down"


def test_wrong_model_served_refused(
    installed_v1: None,
    tmp_path: Path,
    store: Store,
    home: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    """A validly signed 2.0.0 served under the tag 1.1.0 is the wrong software."""
    hostile = LayoutRegistry(tmp_path / "hostile")
    serve_bundle_dir(hostile.root, bundles["2.0.0"], name="iris", tag="1.1.0")
    with pytest.raises(WrongModelError):
        install(
            "iris@1.1.0",
            registry=hostile,
            store=store,
            now=NOW,
            options=InstallOptions(verify=Trusted(adhoc_policy([keypair.public]))),
        )
    assert_current_intact(store, home, "1.0.0")


def test_no_keys_fails_closed(
    registry: LayoutRegistry, store: Store, home: Path, bundles: dict[str, Path]
) -> None:
    """Without --key or a policy file there is no mode to install with; an empty policy
    trusts nothing. Either way nothing is fetched, let alone installed."""
    from packager.instance.trust import resolve_policy

    with pytest.raises(UsageError, match="trust add-key"):
        resolve_policy(home=home)
    publish_bundle(bundles["1.0.0"], registry=registry, mode=Unverified("publish without --key"))
    empty = InstallOptions(verify=Trusted(TrustPolicy({}, (), {})))
    with pytest.raises(UntrustedError, match="trust add-key"):
        install("iris", registry=registry, store=store, now=NOW, options=empty)
    assert store.versions("iris") == []
    assert [(e.action, e.outcome) for e in store.audit_log("iris")] == [("install", "refused")]


def test_parse_ref() -> None:
    assert parse_ref("iris") == ("iris", None)
    assert parse_ref("iris@1.2.0-rc.1") == ("iris", "1.2.0-rc.1")
    for bad in ("Iris", "iris@1.2", "../x", "iris@latest@1"):
        with pytest.raises(UsageError):
            parse_ref(bad)


class GatedRegistry:
    """The embedded registry, with model.onnx's fetch held until another fetch has
    failed: a download still running when its neighbour fails."""

    def __init__(self, inner: LayoutRegistry) -> None:
        self.inner = inner
        self.failed = threading.Event()
        self.fetched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch_blob(
        self,
        name: str,
        desc: Descriptor,
        dest: Path,
        shards: Sequence[Shard] = (),
        reuse: Path | None = None,
    ) -> None:
        if dest.name == "model.onnx":
            assert self.failed.wait(10)
        try:
            self.inner.fetch_blob(name, desc, dest, shards, reuse)
        except TamperedError:
            self.failed.set()
            raise
        self.fetched.append(dest.name)


def test_a_failed_fetch_removes_the_files_fetched_beside_it(
    registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair, tmp_path: Path
) -> None:
    """Files are fetched several at once; when one fails, the fetches still running are
    waited for, every file fetched is removed, and the failure is what is raised."""
    from packager._io.hashing import digest_file

    publish_bundle(bundles["1.1.0"], registry=registry, mode=Unverified("publish without --key"))
    digest, _ = digest_file(bundles["1.1.0"] / "testvectors.npz")
    blob = registry.root / "iris" / "blobs" / "sha256" / digest.hex
    blob.chmod(0o644)
    flip_byte(blob, offset=7)
    gated = GatedRegistry(registry)
    dest = tmp_path / "staged"
    dest.mkdir()
    with pytest.raises(TamperedError, match=digest.hex):
        fetch_verified(
            Source(cast(Registry, gated), Trusted(adhoc_policy([keypair.public]))),
            registry.resolve("iris", "1.1.0"),
            dest,
        )
    # model.onnx completed, after the failure; the tampered file never did.
    assert gated.fetched[-1] == "model.onnx" and "testvectors.npz" not in gated.fetched
    assert list(dest.iterdir()) == []


@pytest.fixture(scope="module")
def builds(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[Any, Any],
    keypair: KeyPair,
) -> dict[str, Path]:
    """Two builds of one version: 1.0.0+build.1 and 1.0.0+build.2, signed by ``keypair``."""
    from packager.build.api import package

    X, _ = iris
    out = tmp_path_factory.mktemp("builds")
    return {
        v: package(
            iris_model, sample=X[::5], name="iris", version=v, key=keypair.private, out_dir=out
        )
        for v in ("1.0.0+build.1", "1.0.0+build.2")
    }


def test_another_build_of_the_installed_version_is_refused_as_a_rollback(
    registry: LayoutRegistry, store: Store, home: Path, builds: dict[str, Path], keypair: KeyPair
) -> None:
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])))
    for bundle in builds.values():
        publish_bundle(bundle, registry=registry, mode=options.verify)
    with pytest.raises(UsageError, match=r"lists 1\.0\.0\+build\.1 and 1\.0\.0\+build\.2"):
        install("iris", registry=registry, store=store, now=NOW, options=options)
    assert store.current_version("iris") is None
    install("iris@1.0.0+build.2", registry=registry, store=store, now=NOW, options=options)
    with pytest.raises(RollbackError, match="differs only in build metadata"):
        install("iris@1.0.0+build.1", registry=registry, store=store, now=NOW, options=options)
    assert store.current_version("iris") == "1.0.0+build.2"
    assert store.audit_log("iris")[-1].outcome == "refused"
    # The same build again is a reinstall; the other one needs --allow-downgrade.
    install("iris@1.0.0+build.2", registry=registry, store=store, now=NOW, options=options)
    install(
        "iris@1.0.0+build.1",
        registry=registry,
        store=store,
        now=NOW,
        options=replace(options, allow_downgrade=True),
    )
    assert store.current_version("iris") == "1.0.0+build.1"
