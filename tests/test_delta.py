"""Delta upgrades: an install takes the files the instance already holds (same sha256, any
installed version) from disk instead of the registry: unhashed when their inode still has
the fingerprint recorded when this instance verified it, else hashed again where they land;
`export --base` carries only what the base lacks, and installs offline (`unshare -n`)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, parse_manifest
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.publish import publish_bundle
from packager.errors import TamperedError
from packager.instance.install import InstallOptions, install
from packager.instance.status import status
from packager.instance.store import Store
from packager.registry import LayoutRegistry
from packager.registry.archive import ArchiveStore
from packager.registry.base import Descriptor
from packager.registry.options import RegistryOptions
from packager.registry.verified import FETCHED, REHASHED, UNCHANGED, _reuse

from .conftest import KeyPair, cli
from .registry.servers import serve
from .registry.test_http_mirror import FAST, Site, StaticMirrorRegistry, _StaticHandler

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PACKAGER = str(Path(sys.executable).parent / "packager")


def files_of(bundle: Path) -> dict[str, Digest]:
    return {f.path: f.digest for f in parse_manifest((bundle / MANIFEST).read_bytes()).files}


@pytest.fixture
def registry(tmp_path: Path, bundles: dict[str, Path]) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Unverified("publish without --key"))
    return registry


def through_mirror(
    tmp_path: Path, keypair: KeyPair, then: str
) -> tuple[Store, list[str], Any, tuple[set[str], set[str]]]:
    """iris@1.0.0 installed into a new home from a static mirror of ``tmp_path/registry``,
    then ``then``: the store, what the second install said and its result, and the blobs
    each install asked the mirror for."""
    site = Site(tmp_path)
    store, said = Store(tmp_path / "home"), []
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])), progress=said.append)
    with serve(_StaticHandler, site) as port:
        site.port = port
        mirror = StaticMirrorRegistry(site.url, options=RegistryOptions(retry=FAST))
        install("iris@1.0.0", registry=mirror, store=store, now=T0, options=options)
        before = len(site.requests)
        said.clear()
        result = install(then, registry=mirror, store=store, now=T0, options=options)

    def blobs(requests: list[tuple[str, Any]]) -> set[str]:
        return {path.rsplit("/", 1)[1] for path, _ in requests if "/blobs/" in path}

    return store, said, result, (blobs(site.requests[:before]), blobs(site.requests[before:]))


def test_unchanged_files_are_not_fetched_from_a_static_mirror(
    tmp_path: Path, registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    old, new = files_of(bundles["1.0.0"]), files_of(bundles["1.1.0"])
    same = {path for path in new if old.get(path) == new[path]}
    assert "model.onnx" in same  # one pipeline, two versions
    store, said, result, (first, second) = through_mirror(tmp_path, keypair, "iris@1.1.0")
    blobs = second - first
    # Only the new version's OCI manifest, manifest.json and model.sig travelled.
    artifact = registry.resolve("iris", "1.1.0")
    assert blobs == {
        artifact.manifest_digest.hex,
        artifact.files[MANIFEST].digest.hex,
        artifact.files["model.sig"].digest.hex,
        *(digest.hex for path, digest in new.items() if path not in same),
    }
    # Verified by this instance at their install and unchanged since: not hashed again.
    assert set(result.files(UNCHANGED)) == same
    assert not result.files(REHASHED)
    for path in same:
        size = (bundles["1.1.0"] / path).stat().st_size
        note = "unchanged since verified at its install, not hashed again"
        assert f"reused {path} ({size} bytes, {note})" in said
    # Hard-linked from the installed copy, and exactly the signed bytes.
    for path in same:
        a, b = (store.installed_dir("iris", v) / path for v in ("1.0.0", "1.1.0"))
        assert os.stat(a).st_ino == os.stat(b).st_ino
        assert Digest.of(b.read_bytes()) == new[path]
    # `status` counts a linked file once.
    sizes = {v: {p.name: p.stat().st_size for p in bundles[v].iterdir()} for v in bundles}
    expected = sum(sizes["1.0.0"].values()) + sum(
        size for path, size in sizes["1.1.0"].items() if path not in same
    )
    (model,) = status(store, now=T0).models
    assert model.disk_bytes == expected


def test_files_of_another_model_are_reused_too(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    iris_model: object,
    iris: tuple[Any, Any],
) -> None:
    """The same graph packaged as another model: its files the instance holds for iris
    are not fetched from the mirror, and are the inodes iris has."""
    from packager.build.api import package

    other = package(
        iris_model,
        sample=iris[0][::5],
        name="other",
        version="1.0.0",
        key=keypair.private,
        out_dir=tmp_path / "other",
    )
    publish_bundle(other, registry=registry, mode=Unverified("publish without --key"))
    theirs, ours = files_of(bundles["1.0.0"]), files_of(other)
    same = {path for path in ours if theirs.get(path) == ours[path]}
    assert "model.onnx" in same
    store, _, result, (_, fetched) = through_mirror(tmp_path, keypair, "other@1.0.0")
    assert not fetched & {ours[path].hex for path in same}
    assert set(result.files(UNCHANGED)) == same
    for path in same:
        a, b = store.installed_dir("iris", "1.0.0") / path, store.installed_dir("other") / path
        assert os.stat(a).st_ino == os.stat(b).st_ino


def test_a_damaged_installed_file_is_fetched_instead(
    tmp_path: Path, registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    store, said = Store(tmp_path / "home"), []
    options = InstallOptions(verify=Trusted(adhoc_policy([keypair.public])), progress=said.append)
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=options)
    damaged = store.installed_dir("iris", "1.0.0") / "model.onnx"
    damaged.chmod(stat.S_IWUSR | stat.S_IRUSR)
    with open(damaged, "r+b") as f:
        f.write(b"X")
    said.clear()
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=options)
    assert "fetched model.onnx" in " ".join(said)
    assert "model.onnx" in result.files(FETCHED)
    installed = store.installed_dir("iris", "1.1.0") / "model.onnx"
    assert installed.read_bytes() == (bundles["1.1.0"] / "model.onnx").read_bytes()
    assert os.stat(installed).st_ino != os.stat(damaged).st_ino


def trusted(keypair: KeyPair, *, force: bool = False) -> InstallOptions:
    return InstallOptions(verify=Trusted(adhoc_policy([keypair.public])), force=force)


def shared(bundles: dict[str, Path]) -> set[str]:
    old, new = files_of(bundles["1.0.0"]), files_of(bundles["1.1.0"])
    return {path for path in new if old.get(path) == new[path]}


def fingerprint_rows(home: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(home / "state.db") as conn:
        return conn.execute("SELECT dev, ino, digest FROM fingerprints").fetchall()


def current_rows(store: Store) -> dict[tuple[str, str], bool]:
    """Each fingerprint row, and whether its inode (looked up among the installed files)
    still has exactly the recorded fingerprint."""
    now = {}
    for version in store.versions("iris"):
        for path in store.installed_dir("iris", version).iterdir():
            info = os.lstat(path)
            now[str(info.st_dev), str(info.st_ino)] = (
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
    with sqlite3.connect(store.home / "state.db") as conn:
        rows = conn.execute("SELECT dev, ino, size, mtime_ns, ctime_ns FROM fingerprints")
        return {(d, i): now.get((d, i)) == (s, m, c) for d, i, s, m, c in rows.fetchall()}


def _utime(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))


def _chmod(path: Path) -> None:
    path.chmod(stat.S_IRUSR)


def _rewrite(path: Path) -> None:
    data = path.read_bytes()
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(data)


def _replace(path: Path) -> None:
    copy = path.with_name(path.name + ".new")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)


@pytest.mark.parametrize(
    "touch", [_utime, _chmod, _rewrite, _replace], ids=["utime", "chmod", "rewrite", "replace"]
)
def test_a_touched_installed_file_is_hashed_again(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    touch: object,
) -> None:
    store = Store(tmp_path / "home")
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    touched = store.installed_dir("iris", "1.0.0") / "model.onnx"
    assert callable(touch)
    touch(touched)
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    # Same bytes: reused, but its fingerprint moved, so hashed where it landed.
    assert result.files(REHASHED) == ("model.onnx",)
    assert set(result.files(UNCHANGED)) == shared(bundles) - {"model.onnx"}
    installed = store.installed_dir("iris", "1.1.0") / "model.onnx"
    assert installed.read_bytes() == (bundles["1.1.0"] / "model.onnx").read_bytes()
    # Its fingerprint is recorded anew once hashed: the next upgrade needs no hash.
    store.remove("iris", "1.0.0")
    install("iris@2.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    assert os.stat(store.installed_dir("iris", "2.0.0") / "model.onnx").st_ino == (
        os.stat(installed).st_ino
    )


def _corrupt_silently(store: Store, path: Path) -> None:
    """Change a file's bytes and record its new fingerprint as if verified: what silent disk
    corruption of the inode looks like to the fingerprint (the kernel never saw a write)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    info = os.lstat(path)
    with sqlite3.connect(store.home / "state.db") as conn:
        changed = conn.execute(
            "UPDATE fingerprints SET mtime_ns = ?, ctime_ns = ? WHERE dev = ? AND ino = ?",
            (info.st_mtime_ns, info.st_ctime_ns, str(info.st_dev), str(info.st_ino)),
        ).rowcount
    assert changed == 1


def test_force_hashes_every_reused_file_and_repairs_what_fingerprints_miss(
    tmp_path: Path, registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    store = Store(tmp_path / "home")
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    installed = store.installed_dir("iris", "1.0.0") / "model.onnx"
    signed = (bundles["1.0.0"] / "model.onnx").read_bytes()
    _corrupt_silently(store, installed)
    # Without --force the fingerprint vouches for the inode, so it is not hashed: the
    # damaged bytes reach the smoke test, which refuses them (nothing installed). This is
    # the damage fingerprints do not catch (docs/adr/0011).
    with pytest.raises(TamperedError, match="not a readable ONNX model"):
        install("iris@1.1.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    assert store.versions("iris") == ["1.0.0"]
    # --force hashes every file it reuses: the damaged one is fetched, the copy repaired.
    force = trusted(keypair, force=True)
    result = install("iris@1.0.0", registry=registry, store=store, now=T0, options=force)
    assert result.files(FETCHED) == ("model.onnx",)
    assert set(result.files(REHASHED)) == set(files_of(bundles["1.0.0"])) - {"model.onnx"}
    assert not result.files(UNCHANGED)
    assert installed.read_bytes() == signed
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=force)
    assert set(result.files(REHASHED)) == shared(bundles)
    assert not result.files(UNCHANGED)
    repaired = [e for e in store.audit_log("iris") if e.outcome == "repaired"]
    assert len(repaired) == 1 and "model.onnx" in repaired[0].detail


def test_fingerprints_of_removed_versions_are_forgotten(
    tmp_path: Path, registry: LayoutRegistry, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    store = Store(tmp_path / "home")
    for version in ("1.0.0", "1.1.0"):
        install(f"iris@{version}", registry=registry, store=store, now=T0, options=trusted(keypair))

    def inodes(*versions: str) -> set[tuple[str, str]]:
        found = set()
        for version in versions:
            for path in store.installed_dir("iris", version).iterdir():
                if path.name not in (MANIFEST, "model.sig"):
                    info = os.lstat(path)
                    found.add((str(info.st_dev), str(info.st_ino)))
        return found

    assert {(d, i) for d, i, _ in fingerprint_rows(store.home)} == inodes("1.0.0", "1.1.0")
    store.remove("iris", "1.0.0")
    # Removing 1.0.0 unlinked the inodes 1.1.0 shares with it (their ctime moved, unless
    # within the same tick of the kernel's clock): no record is carried over, the rows
    # left are exactly those whose inode still has the recorded fingerprint.
    assert set(current_rows(store)) <= inodes("1.1.0")
    assert all(current_rows(store).values())
    # So the next upgrade hashes the files whose rows went once, and records them again.
    left = set(current_rows(store))
    result = install("iris@2.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    old, new = files_of(bundles["1.1.0"]), files_of(bundles["2.0.0"])
    new_dir = store.installed_dir("iris", "2.0.0")
    for path in {p for p in new if old.get(p) == new[p]}:
        info = os.lstat(new_dir / path)
        was_kept = (str(info.st_dev), str(info.st_ino)) in left
        assert path in result.files(UNCHANGED if was_kept else REHASHED)
    assert inodes("2.0.0") <= set(current_rows(store)) and all(current_rows(store).values())
    store.uninstall("iris", now=T0)
    assert fingerprint_rows(store.home) == []


def test_install_json_says_which_files_were_hashed(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    reg, key = registry.root, keypair.pub_path
    code, out, err = cli(capsys, "install", "iris@1.0.0", "--registry", reg, "--key", key, "--json")
    assert code == 0, err
    files = json.loads(out)["files"]
    assert files["fetched"] == list(files_of(bundles["1.0.0"]))
    assert files["reusedByFingerprint"] == files["reusedHashed"] == []
    code, out, err = cli(capsys, "install", "iris@1.1.0", "--registry", reg, "--key", key, "--json")
    assert code == 0, err
    files = json.loads(out)["files"]
    assert set(files["reusedByFingerprint"]) == shared(bundles)
    assert set(files["fetched"]) == set(files_of(bundles["1.1.0"])) - shared(bundles)
    code, out, err = cli(capsys, "install", "iris@1.1.0", "--registry", reg, "--key", key, "--json")
    assert code == 0, err
    assert json.loads(out)["files"] is None  # already current: nothing installed


@pytest.mark.parametrize(
    ("written", "exit_code", "said"),
    [
        (b'"1.0.0' + b"\\u0007" * 20000 + b'"', 4, "is a delta against iris@1.0.0\\x07"),
        (b"7", 3, "annotations are not a map of strings"),
    ],
)
def test_a_delta_naming_a_strange_base_is_refused_in_one_short_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    registry: LayoutRegistry,
    keypair: KeyPair,
    home: Path,
    written: bytes,
    exit_code: int,
    said: str,
) -> None:
    """The base a delta names is the archive's word (an annotation nothing signs): the
    refusal repeats it only so far."""
    import io
    import tarfile

    delta, hostile = tmp_path / "delta.tar", tmp_path / "hostile.tar"
    reg = registry.root
    code, _, err = cli(
        capsys, "export", "iris@1.1.0", "--base", "iris@1.0.0", "--registry", reg, "-o", delta
    )
    assert code == 0, err
    with (
        tarfile.open(delta) as source,
        tarfile.open(hostile, "w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name.endswith("index.json") and data is not None and b"delta.base" in data:
                data = data.replace(b'"1.0.0"', written)
                member.size = len(data)
            out.addfile(member, None if data is None else io.BytesIO(data))
    refused, _, err = cli(capsys, "install", hostile, "--key", keypair.pub_path)
    assert refused == exit_code, err
    line = err.splitlines()[-1]
    assert said in line
    assert len(line) < 2000  # against 160 kB before


def offline(*command: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run packager with no network: `unshare -n` (a namespace with loopback only)."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"]).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("unshare -n is needed in CI (util-linux, run as root)")
        pytest.skip("unshare -n is not available here")
    env = {**os.environ, "PACKAGER_HOME": str(home)}
    return subprocess.run(
        [unshare, "-n", PACKAGER, *map(str, command)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_delta_export_installs_offline_only_where_the_base_is(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    reg = registry.root
    full, delta = tmp_path / "full.tar", tmp_path / "delta.tar"
    code, _, err = cli(capsys, "export", "iris@1.0.0", "--registry", reg, "-o", full)
    assert code == 0, err
    code, _, err = cli(
        capsys, "export", "iris@1.1.0", "--base", "iris@1.0.0", "--registry", reg, "-o", delta
    )
    assert code == 0, err
    held = set(ArchiveStore(delta).contents.blobs)
    old, new = files_of(bundles["1.0.0"]), files_of(bundles["1.1.0"])
    changed = {d.hex for path, d in new.items() if old.get(path) != d}
    artifact = registry.resolve("iris", "1.1.0")
    # The new version's OCI manifest, config, manifest.json, model.sig and changed files.
    assert held == {
        artifact.manifest_digest.hex,
        artifact.config.digest.hex,
        artifact.files[MANIFEST].digest.hex,
        artifact.files["model.sig"].digest.hex,
        *changed,
    }
    assert new["model.onnx"].hex not in held

    with_base, without = tmp_path / "with-base", tmp_path / "without"
    result = offline("install", full, "--key", keypair.pub_path, home=with_base)
    assert result.returncode == 0, result.stderr
    result = offline("install", delta, "--key", keypair.pub_path, home=with_base)
    assert result.returncode == 0, result.stderr
    assert "reused model.onnx" in result.stderr
    result = offline("list", "--json", home=with_base)
    assert '"version": "1.1.0"' in result.stdout

    result = offline("install", delta, "--key", keypair.pub_path, home=without)
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.splitlines()[-1:]
    assert "is a delta against iris@1.0.0" in line and "install iris@1.0.0 first" in line
    assert not (without / "models" / "iris").exists()

    code, _, err = cli(
        capsys, "export", "iris@1.1.0", "--base", "other@1.0.0", "--registry", reg, "-o", delta
    )
    assert code == 2 and "same model" in err


def test_a_write_while_a_version_is_removed_is_not_adopted(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store(tmp_path / "home")
    for version in ("1.0.0", "1.1.0"):
        install(f"iris@{version}", registry=registry, store=store, now=T0, options=trusted(keypair))
    victim = store.installed_dir("iris", "1.1.0") / "model.onnx"
    assert "model.onnx" in shared(bundles)
    rmtree = shutil.rmtree

    def rmtree_then_write(path: Path, *args: object, **kwargs: object) -> None:
        rmtree(path, *args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.05)  # past the tick of the kernel's clock the unlink was stamped with
        # Same size, mtime put back: only the ctime tells.
        info = os.lstat(victim)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.chmod(stat.S_IRUSR | stat.S_IWUSR)
        victim.write_bytes(bytes(data))
        victim.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))

    monkeypatch.setattr(shutil, "rmtree", rmtree_then_write)
    store.remove("iris", "1.0.0")
    monkeypatch.undo()
    held = {h.path: h for h in store.installed_files().values()}
    assert held[victim].recorded is None
    # The next upgrade hashes it, finds other bytes and fetches the signed ones.
    result = install("iris@2.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    assert "model.onnx" not in result.files(UNCHANGED)
    installed = store.installed_dir("iris", "2.0.0") / "model.onnx"
    assert installed.read_bytes() == (bundles["2.0.0"] / "model.onnx").read_bytes()


def test_a_write_after_the_hash_is_never_recorded_as_verified(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import packager.instance.install as installing

    store = Store(tmp_path / "home")
    smoke_test = installing.run_smoke_test
    modes = []

    def smoke_then_write(staged: Path, *args: object, **kwargs: object) -> object:
        found = smoke_test(staged, *args, **kwargs)  # type: ignore[arg-type]
        victim = staged / "model.onnx"
        modes.append(stat.S_IMODE(os.lstat(victim).st_mode))
        # Even a file made writable again and rewritten with its own bytes.
        victim.chmod(stat.S_IRUSR | stat.S_IWUSR)
        victim.write_bytes(victim.read_bytes())
        return found

    monkeypatch.setattr(installing, "run_smoke_test", smoke_then_write)
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    monkeypatch.undo()
    # Sealed read-only as soon as it was verified, before the smoke test ran.
    assert modes == [stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH]
    victim = store.installed_dir("iris", "1.0.0") / "model.onnx"
    held = {h.path: h for h in store.installed_files().values()}
    assert held[victim].recorded is None
    assert all(h.recorded is not None for p, h in held.items() if p != victim)
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    assert result.files(REHASHED) == ("model.onnx",)
    assert set(result.files(UNCHANGED)) == shared(bundles) - {"model.onnx"}


def test_a_failed_install_leaves_no_record_to_adopt(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
) -> None:
    from packager.errors import IncompatibleModelError
    from packager.instance.smoke import SmokeLimits

    store = Store(tmp_path / "home")
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    # A smoke test with no time to run fails the install after the files were staged.
    starved = replace(trusted(keypair), smoke=SmokeLimits(seconds=0.001))
    with pytest.raises(IncompatibleModelError):
        install("iris@1.1.0", registry=registry, store=store, now=T0, options=starved)
    # Cleaning up its staging directory unlinked links to the installed inodes: their
    # ctime moved, so they are hashed once, then recorded again.
    result = install("iris@1.1.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    assert set(result.files(REHASHED)) == shared(bundles)
    assert not result.files(UNCHANGED)
    rows = {(d, i) for d, i, _ in fingerprint_rows(store.home)}
    infos = [os.lstat(store.installed_dir("iris", "1.1.0") / p) for p in files_of(bundles["1.1.0"])]
    assert {(str(info.st_dev), str(info.st_ino)) for info in infos} <= rows


def test_the_inode_checked_is_the_inode_linked(
    tmp_path: Path,
    registry: LayoutRegistry,
    bundles: dict[str, Path],
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store(tmp_path / "home")
    install("iris@1.0.0", registry=registry, store=store, now=T0, options=trusted(keypair))
    path = store.installed_dir("iris", "1.0.0") / "model.onnx"
    held = {h.path: h for h in store.installed_files().values()}[path]
    signed = path.read_bytes()
    assert held.recorded is not None
    fstat = os.fstat
    swapped = []

    def fstat_then_swap(fd: int) -> os.stat_result:
        found = fstat(fd)
        if not swapped:
            # Once checked, the path is made to name another file.
            other = path.with_name("other")
            other.write_bytes(b"x" * len(signed))
            os.replace(other, path)
            swapped.append(True)
        return found

    monkeypatch.setattr(os, "fstat", fstat_then_swap)
    digest = files_of(bundles["1.0.0"])["model.onnx"]
    desc = Descriptor("application/octet-stream", digest, len(signed))
    how = _reuse(held, desc, tmp_path / "staged")
    monkeypatch.undo()
    # Never the file the path names now, unhashed: the inode opened and checked is linked
    # through /proc/self/fd where the system can (reused unhashed); elsewhere the path is
    # linked, found to be another inode, hashed, and refused.
    assert swapped
    if how == UNCHANGED:
        assert (tmp_path / "staged").read_bytes() == signed
    else:
        assert how is None and not (tmp_path / "staged").exists()
