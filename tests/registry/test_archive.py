"""Archives: export an OCI image layout in a tar, install from it offline, refuse hostile tars."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from packager.cli import main
from packager.core.digests import Digest
from packager.core.policy import Trusted, Unverified, adhoc_policy
from packager.distribution.mirror import export
from packager.distribution.publish import publish_bundle
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry import ArchiveRegistry, LayoutRegistry, open_destination, open_registry

from ..conftest import KeyPair
from .test_layout import make_bundle

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
UNSIGNED = Unverified("publish without --key")
Member = tuple[tarfile.TarInfo, bytes]


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def layout(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    """The embedded registry holding iris 1.0.0, 1.1.0 and 2.0.0, signed by ``keypair``."""
    registry = LayoutRegistry(tmp_path / "registry")
    for version in VERSIONS:
        publish_bundle(
            bundles[version], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
        )
    return registry


@pytest.fixture
def archive(tmp_path: Path, layout: LayoutRegistry) -> Path:
    out = tmp_path / "carry" / "models.tar"
    out.parent.mkdir()
    export([f"iris@{v}" for v in VERSIONS], registry=layout, out=out)
    return out


def members(path: Path) -> list[Member]:
    with tarfile.open(path) as tar:
        return [
            (info, tar.extractfile(info).read() if info.isreg() else b"")  # type: ignore[union-attr]
            for info in tar.getmembers()
        ]


def write_tar(path: Path, entries: list[Member]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- export -------------------------------------------------------------------------------


def test_export_writes_a_deterministic_oci_layout_tar(
    archive: Path, layout: LayoutRegistry
) -> None:
    entries = members(archive)
    names = [info.name for info, _ in entries]
    assert names == sorted(names)
    assert names[-2:] == ["index.json", "oci-layout"]
    assert all(name.startswith("blobs/sha256/") for name in names[:-2])
    for info, data in entries:
        assert info.isreg(), info.name
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (
            0,
            0,
            0,
            "",
            "",
            0o644,
        )
        if info.name.startswith("blobs/"):
            assert Digest.of(data).hex == info.name.removeprefix("blobs/sha256/")
    files = {info.name: data for info, data in entries}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    refs = [
        entry["annotations"]["org.opencontainers.image.ref.name"] for entry in index["manifests"]
    ]
    assert refs == [f"iris:{v}" for v in VERSIONS]
    for version, entry in zip(VERSIONS, index["manifests"], strict=True):
        original = layout.resolve("iris", version)
        assert entry["annotations"]["org.opencontainers.image.version"] == version
        assert entry["digest"] == str(original.manifest_digest)
        # Copied, not rebuilt: the very bytes the embedded registry stores.
        blob = layout.root / "iris" / "blobs" / "sha256" / original.manifest_digest.hex
        assert files[f"blobs/sha256/{original.manifest_digest.hex}"] == blob.read_bytes()


def test_export_twice_gives_identical_bytes(
    archive: Path, layout: LayoutRegistry, tmp_path: Path
) -> None:
    again = tmp_path / "again.tar"
    # Another order of the same refs, and NAME@VERSION given twice: still the same archive.
    export(["iris@2.0.0", "iris@1.0.0", "iris@1.1.0", "iris@1.0.0"], registry=layout, out=again)
    assert again.read_bytes() == archive.read_bytes()


def test_export_without_version_takes_the_latest(layout: LayoutRegistry, tmp_path: Path) -> None:
    out = tmp_path / "latest.tar"
    [artifact] = export(["iris"], registry=layout, out=out)
    assert artifact.version == "2.0.0"
    assert ArchiveRegistry(out).versions("iris") == ["2.0.0"]


def test_export_checks_digests_and_leaves_nothing_on_failure(
    layout: LayoutRegistry, tmp_path: Path
) -> None:
    artifact = layout.resolve("iris", "1.1.0")
    blob = layout.root / "iris" / "blobs" / "sha256" / artifact.files["model.onnx"].digest.hex
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(TamperedError):
        export(["iris@1.1.0"], registry=layout, out=out_dir / "models.tar")
    assert list(out_dir.iterdir()) == []


def test_export_refuses_names_other_than_tar(layout: LayoutRegistry, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.tar"):
        export(["iris"], registry=layout, out=tmp_path / "models.tgz")


def test_export_cli(
    capsys: pytest.CaptureFixture[str], layout: LayoutRegistry, tmp_path: Path
) -> None:
    out = tmp_path / "cli.tar"
    code, stdout, err = cli(
        capsys, "export", "iris", "iris@1.0.0", "--registry", layout.root, "-o", out, "--json"
    )
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["archive"] == str(out)
    assert [(m["reference"], m["digest"]) for m in doc["models"]] == [
        (f"iris:{v}", str(layout.resolve("iris", v).manifest_digest)) for v in ("2.0.0", "1.0.0")
    ]
    code, _, err = cli(capsys, "export", "nosuch", "--registry", layout.root, "-o", out)
    assert code == 4, err


# --- the archive as a registry ------------------------------------------------------------


def test_archive_is_a_registry_read_in_place(archive: Path, layout: LayoutRegistry) -> None:
    registry = open_registry(archive, home=archive.parent)
    assert isinstance(registry, ArchiveRegistry)
    assert registry.path == archive
    assert registry.names() == ["iris"]
    assert registry.versions("iris") == list(VERSIONS)
    for version in VERSIONS:
        assert registry.resolve("iris", version) == layout.resolve("iris", version)
    with pytest.raises(NotFoundError):
        registry.resolve("iris", "3.0.0")
    with pytest.raises(UsageError):
        registry.publish(archive.parent, layout_manifest(layout))


def test_publishing_to_an_archive_rebuilds_it_keeping_everything(
    tmp_path: Path, layout: LayoutRegistry, bundles: dict[str, Path]
) -> None:
    out = tmp_path / "grown.tar"
    export(["iris@1.0.0"], registry=layout, out=out)
    archive = open_destination(out, home=tmp_path)
    assert isinstance(archive, ArchiveRegistry)
    manifest = layout_manifest(layout)
    again = archive.publish(bundles["1.0.0"], manifest)
    assert again == layout.resolve("iris", "1.0.0")
    artifact = publish_bundle(bundles["2.0.0"], registry=archive, mode=UNSIGNED)
    assert archive.versions("iris") == ["1.0.0", "2.0.0"]
    assert archive.resolve("iris", "2.0.0") == artifact == layout.resolve("iris", "2.0.0")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # Writes in a batch land together, or not at all.
    before = out.read_bytes()

    def fail_in_a_batch() -> None:
        with archive.batch():
            publish_bundle(bundles["1.1.0"], registry=archive, mode=UNSIGNED)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        fail_in_a_batch()
    assert out.read_bytes() == before
    with pytest.raises(UsageError, match="not a directory"):
        open_destination(tmp_path / "missing" / "x.tar", home=tmp_path).put_document(
            "iris", "channel.stable", b"{}", artifact_type="application/x-test"
        )


def layout_manifest(layout: LayoutRegistry) -> Any:
    from packager.core.manifest import parse_manifest

    artifact = layout.resolve("iris", "1.0.0")
    return parse_manifest(
        layout.read_blob("iris", artifact.files["manifest.json"], max_size=1 << 20)
    )


def test_read_blob_cap_and_missing_archive(archive: Path, tmp_path: Path) -> None:
    registry = ArchiveRegistry(archive)
    artifact = registry.resolve("iris", "1.0.0")
    desc = artifact.files["model.sig"]
    with pytest.raises(TamperedError, match="more than"):
        registry.read_blob("iris", desc, max_size=desc.size - 1)
    with pytest.raises(RegistryError, match="no archive"):
        ArchiveRegistry(tmp_path / "missing.tar").names()


def test_search_cli_lists_the_archive(capsys: pytest.CaptureFixture[str], archive: Path) -> None:
    code, out, err = cli(capsys, "search", "--registry", archive, "--json")
    assert code == 0, err
    assert json.loads(out)["models"] == {"iris": list(VERSIONS)}


def test_install_from_archive_gives_the_original_bytes(
    capsys: pytest.CaptureFixture[str],
    archive: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    code, _, err = cli(
        capsys, "install", "iris@1.1.0", "--registry", archive, "--key", keypair.pub_path
    )
    assert code == 0, err
    installed = home / "models" / "iris" / "1.1.0"
    assert tree(installed) == tree(bundles["1.1.0"])


def test_install_an_archive_file_directly(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    layout: LayoutRegistry,
    archive: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    home: Path,
) -> None:
    """`packager install ./x.tar` takes the archive's only model, at its latest version."""
    single = tmp_path / "iris.tar"
    export(["iris@1.1.0"], registry=layout, out=single)
    code, _, err = cli(capsys, "install", str(single), "--key", keypair.pub_path)
    assert code == 0, err
    assert tree(home / "models" / "iris" / "1.1.0") == tree(bundles["1.1.0"])
    spam = tmp_path / "spam.tar"
    export(["iris@1.1.0"], registry=layout, out=spam)
    code, _, err = cli(
        capsys, "install", str(single), "--registry", spam, "--key", keypair.pub_path
    )
    assert code == 2
    assert "not both" in err


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way this process could reach the network now raises, and is recorded."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def guard(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network disabled by the test: {what}")

        return guard

    for method in ("connect", "connect_ex", "sendto", "sendmsg"):
        monkeypatch.setattr(socket.socket, method, refuse(f"socket.{method}"))
    for function in ("create_connection", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(socket, function, refuse(function))
    return attempts


def test_install_from_archive_opens_no_connection(
    capsys: pytest.CaptureFixture[str],
    archive: Path,
    keypair: KeyPair,
    no_network: list[str],
    home: Path,
) -> None:
    code, out, err = cli(
        capsys, "install", "iris", "--registry", archive, "--key", keypair.pub_path
    )
    assert code == 0, err
    assert "installed iris@2.0.0" in out
    assert no_network == []
    # The guard is live: the install above would have been caught had it tried.
    with pytest.raises(OSError, match="network disabled"):
        socket.create_connection(("127.0.0.1", 9))
    assert len(no_network) == 1


def test_install_from_archive_in_a_namespace_without_network(
    archive: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    in_ci = os.environ.get("CI") == "true"
    if shutil.which("unshare") is None:
        if in_ci:
            pytest.fail("unshare is required in CI: apt-get install util-linux")
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        reason = f"cannot create a network namespace here: {probe.stderr.decode().strip()}"
        if in_ci:
            pytest.fail(reason)
        pytest.skip(reason)
    # Inside the namespace the only interface is the loopback, and it is down.
    script = (
        "import socket, sys\n"
        "assert [n for _, n in socket.if_nameindex()] == ['lo'], socket.if_nameindex()\n"
        "from packager.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PACKAGER_HOME": str(tmp_path / "offline-home")}
    result = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-c",
            script,
            "install",
            "iris@1.0.0",
            "--registry",
            str(archive),
            "--key",
            str(keypair.pub_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "offline-home" / "models" / "iris" / "1.0.0" / "model.onnx").is_file()


# --- skopeo interoperability --------------------------------------------------------------


def skopeo(*args: str) -> bytes:
    path = shutil.which("skopeo")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "skopeo is required in CI for the archive interop tests: apt-get install skopeo"
            )
        pytest.skip("skopeo is not installed: apt-get install skopeo")
    # Local copies only: no signature policy applies, so none is configured.
    return subprocess.run(
        [path, "--insecure-policy", *args], check=True, capture_output=True
    ).stdout


def test_skopeo_reads_each_version_by_name_and_version(
    archive: Path, layout: LayoutRegistry, tmp_path: Path
) -> None:
    for version in ("1.0.0", "2.0.0"):
        original = layout.resolve("iris", version)
        raw = skopeo("inspect", "--raw", f"oci-archive:{archive}:iris:{version}")
        assert Digest.of(raw) == original.manifest_digest
        copy = tmp_path / f"copy-{version}"
        copy.mkdir()
        skopeo("copy", f"oci-archive:{archive}:iris:{version}", f"oci:{copy / 'iris'}:{version}")
        # The copy is an embedded registry again, with the same manifest digest and files.
        assert LayoutRegistry(copy).resolve("iris", version) == original


def test_several_models_share_one_archive(tmp_path: Path) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    for name, version in (("iris", "1.0.0"), ("wine", "1.0.0"), ("wine", "2.0.0-rc.1")):
        registry.publish(*make_bundle(tmp_path / "bundles", name=name, version=version))
    out = tmp_path / "models.tar"
    export(["iris", "wine@1.0.0", "wine@2.0.0-rc.1"], registry=registry, out=out)
    archive = ArchiveRegistry(out)
    assert archive.names() == ["iris", "wine"]
    assert archive.versions("wine") == ["1.0.0", "2.0.0-rc.1"]
    for name, version in (("iris", "1.0.0"), ("wine", "1.0.0"), ("wine", "2.0.0-rc.1")):
        original = registry.resolve(name, version)
        assert archive.resolve(name, version) == original
        raw = skopeo("inspect", "--raw", f"oci-archive:{out}:{name}:{version}")
        assert Digest.of(raw) == original.manifest_digest


def test_archive_written_by_skopeo_is_a_registry(layout: LayoutRegistry, tmp_path: Path) -> None:
    written = tmp_path / "skopeo.tar"
    skopeo("copy", f"oci:{layout.root / 'iris'}:1.1.0", f"oci-archive:{written}:iris:1.1.0")
    registry = ArchiveRegistry(written)
    assert registry.versions("iris") == ["1.1.0"]
    assert registry.resolve("iris", "1.1.0") == layout.resolve("iris", "1.1.0")


# --- hostile archives ---------------------------------------------------------------------


def blob_name(layout: LayoutRegistry, path: str) -> str:
    return "blobs/sha256/" + layout.resolve("iris", "2.0.0").files[path].digest.hex


def _add(
    name: str, data: bytes = b"evil\n", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, data


def _replace(entries: list[Member], name: str, new: Member) -> list[Member]:
    assert any(info.name == name for info, _ in entries)
    return [new if info.name == name else (info, data) for info, data in entries]


def _resize(entries: list[Member], name: str, change: Callable[[bytes], bytes]) -> list[Member]:
    return [(info, change(data) if info.name == name else data) for info, data in entries]


def _flip(data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 1]) + data[11:]


Mutation = Callable[[list[Member], LayoutRegistry, Path], list[Member]]
HOSTILE: dict[str, tuple[Mutation, str]] = {
    "dotdot": (lambda m, _, __: [*m, _add("../evil")], "points outside the archive"),
    "nested dotdot": (
        lambda m, _, __: [*m, _add("blobs/../../evil")],
        "points outside the archive",
    ),
    "absolute path": (lambda m, _, tmp: [*m, _add(str(tmp / "evil"))], "absolute path"),
    "symlink blob": (
        lambda m, reg, tmp: _replace(
            m,
            blob_name(reg, "model.onnx"),
            _add(blob_name(reg, "model.onnx"), b"", tarfile.SYMTYPE, str(tmp / "outside")),
        ),
        "is a symbolic link",
    ),
    "hard link blob": (
        lambda m, reg, _: _replace(
            m,
            blob_name(reg, "model.onnx"),
            _add(blob_name(reg, "model.onnx"), b"", tarfile.LNKTYPE, "oci-layout"),
        ),
        "is a hard link",
    ),
    "fifo": (
        lambda m, _, __: [*m, _add("blobs/sha256/" + "f" * 64, b"", tarfile.FIFOTYPE)],
        "is a FIFO",
    ),
    "character device": (
        lambda m, _, __: [*m, _add("dev-null", b"", tarfile.CHRTYPE)],
        "is a character device",
    ),
    "block device": (
        lambda m, _, __: [*m, _add("dev-sda", b"", tarfile.BLKTYPE)],
        "is a block device",
    ),
    "duplicate index": (
        lambda m, _, __: [*m, _add("index.json", b'{"schemaVersion": 2, "manifests": []}')],
        "holds 'index.json' twice",
    ),
    "duplicate blob": (
        lambda m, reg, _: [
            *m,
            next((i, d) for i, d in m if i.name == blob_name(reg, "model.onnx")),
        ],
        "twice",
    ),
    "blob longer than its descriptor": (
        lambda m, reg, _: _resize(m, blob_name(reg, "model.onnx"), lambda d: d + b"\0"),
        "its descriptor declares",
    ),
    "blob shorter than its descriptor": (
        lambda m, reg, _: _resize(m, blob_name(reg, "testvectors.npz"), lambda d: d[:-1]),
        "its descriptor declares",
    ),
    "blob with wrong bytes": (
        lambda m, reg, _: _resize(m, blob_name(reg, "model.onnx"), _flip),
        "does not match its digest",
    ),
    "signature with wrong bytes": (
        lambda m, reg, _: _resize(m, blob_name(reg, "model.sig"), _flip),
        "does not match its digest",
    ),
}


@pytest.mark.parametrize("mutation", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_is_written(
    mutation: str,
    capsys: pytest.CaptureFixture[str],
    archive: Path,
    layout: LayoutRegistry,
    keypair: KeyPair,
    home: Path,
    tmp_path: Path,
) -> None:
    change, reason = HOSTILE[mutation]
    (tmp_path / "outside").write_bytes(b"not a model\n")
    hostile = tmp_path / "carry" / "hostile.tar"
    write_tar(hostile, change(members(archive), layout, tmp_path))

    def outside_home() -> dict[str, bytes]:
        return {p: data for p, data in tree(tmp_path).items() if not p.startswith("home/")}

    before = outside_home()
    code, _, err = cli(
        capsys, "install", "iris@2.0.0", "--registry", hostile, "--key", keypair.pub_path
    )
    assert code == 3, err
    last = err.splitlines()[-1]
    assert last.startswith("packager: error:") and reason in last, last
    assert outside_home() == before
    assert not (tmp_path.parent / "evil").exists()
    assert not any((home / "models").glob("*/*")), "nothing may be installed"
    assert not [p for p in (home / "tmp").rglob("*") if p.is_file()], "staging left behind"


def test_truncated_archive_is_refused_wherever_it_is_cut(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    last = members(archive)[-1][0]
    end = last.offset_data + -(-last.size // 512) * 512  # where the end-of-archive blocks start
    cut = tmp_path / "cut.tar"
    # Inside headers, inside data, and exactly between members.
    for size in sorted({*range(100, end, 389), *range(512, end + 1, 512)}):
        cut.write_bytes(data[:size])
        with pytest.raises(TamperedError, match="truncated|damaged"):
            ArchiveRegistry(cut).names()


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    with pytest.raises(TamperedError, match="not an uncompressed tar"):
        ArchiveRegistry(junk).names()


def index_with(archive: Path, change: Callable[[dict[str, Any]], None], out: Path) -> Path:
    entries = members(archive)
    [index] = [data for info, data in entries if info.name == "index.json"]
    doc = json.loads(index)
    change(doc)
    write_tar(out, _replace(entries, "index.json", _add("index.json", json.dumps(doc).encode())))
    return out


def test_index_contradictions_are_refused(archive: Path, tmp_path: Path) -> None:
    def twice(doc: dict[str, Any]) -> None:
        doc["manifests"].append(dict(doc["manifests"][0]))

    def mislabelled(doc: dict[str, Any]) -> None:
        doc["manifests"][0]["annotations"]["org.opencontainers.image.version"] = "9.9.9"

    def swapped(doc: dict[str, Any]) -> None:
        first, second = doc["manifests"][:2]
        first["digest"], second["digest"] = second["digest"], first["digest"]
        first["size"], second["size"] = second["size"], first["size"]

    for change in (twice, mislabelled):
        with pytest.raises(TamperedError):
            ArchiveRegistry(
                index_with(archive, change, tmp_path / f"{change.__name__}.tar")
            ).names()
    # The index of 1.0.0 names the manifest of 1.1.0: every digest holds, the version does not.
    with pytest.raises(TamperedError, match="version"):
        ArchiveRegistry(index_with(archive, swapped, tmp_path / "swapped.tar")).resolve(
            "iris", "1.0.0"
        )


def test_other_tools_entries_are_ignored(archive: Path, tmp_path: Path) -> None:
    def foreign(doc: dict[str, Any]) -> None:
        extra = dict(doc["manifests"][0])
        extra["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
        doc["manifests"].append(extra)

    registry = ArchiveRegistry(index_with(archive, foreign, tmp_path / "foreign.tar"))
    assert registry.versions("iris") == list(VERSIONS)


# --- across a real OCI registry -----------------------------------------------------------


def test_mirror_through_an_oci_registry_keeps_digests(
    layout: LayoutRegistry,
    keypair: KeyPair,
    registry_host: str,
    namespace: str,
    tmp_path: Path,
    home: Path,
) -> None:
    from packager.distribution.mirror import mirror

    remote = open_registry(f"oci://{registry_host}/{namespace}", home=home)
    mirror(layout, remote, mode=Trusted(adhoc_policy([keypair.public])))
    carried = ArchiveRegistry(tmp_path / "from-oci.tar")
    report = mirror(
        remote, carried, ["iris@1.0.0", "iris@2.0.0"], mode=Trusted(adhoc_policy([keypair.public]))
    )
    assert [c.version for c in report.copied] == ["1.0.0", "2.0.0"]
    back = LayoutRegistry(tmp_path / "back")
    mirror(carried, back, mode=Trusted(adhoc_policy([keypair.public])))
    for version in ("1.0.0", "2.0.0"):
        original = layout.resolve("iris", version).manifest_digest
        assert remote.resolve("iris", version).manifest_digest == original
        assert carried.resolve("iris", version).manifest_digest == original
        assert back.resolve("iris", version).manifest_digest == original
    # And an export straight from the OCI registry gives the same archive bytes.
    exported = tmp_path / "exported.tar"
    export(["iris@2.0.0", "iris@1.0.0"], registry=remote, out=exported)
    assert exported.read_bytes() == carried.path.read_bytes()
