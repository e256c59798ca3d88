"""``packager gc``: a registry directory loses only the blobs no manifest references, even
while another process publishes and promotes into it; skopeo reads every version after."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packager.cli import main
from packager.core.policy import Trusted, adhoc_policy
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.errors import RegistryError
from packager.registry import LayoutRegistry
from packager.registry.verified import Source, fetch_verified, read_channel

from .conftest import KeyPair

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
RACING_PUBLISHER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from packager._io.keys import load_private_key
from packager.core.policy import Unverified
from packager.distribution.promote import promote
from packager.distribution.publish import publish_bundle
from packager.registry import LayoutRegistry

registry = LayoutRegistry(Path(sys.argv[1]))
key = load_private_key(Path(sys.argv[2]), password=lambda: b"test-password")
versions = sys.argv[4:]
for i in range(int(sys.argv[3])):
    if i < len(versions):
        publish_bundle(Path(versions[i]), registry=registry, mode=Unverified("test"))
    published = versions[: i + 1]
    version = Path(published[i % len(published)]).name.split("-", 1)[1]
    promote(f"iris@{version}", channel="stable", registry=registry, private_key=key,
            now=datetime.now(UTC) + timedelta(seconds=i))
"""


def blobs(registry: LayoutRegistry) -> set[str]:
    return {p.name for p in (registry.root / "iris" / "blobs" / "sha256").iterdir()}


def skopeo(*args: str) -> None:
    path = shutil.which("skopeo")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("skopeo is required in CI for the gc tests: apt-get install skopeo")
        pytest.skip("skopeo is not installed: apt-get install skopeo")
    subprocess.run([path, "--insecure-policy", *args], check=True, capture_output=True)


def check_whole(registry: LayoutRegistry, keypair: KeyPair, tmp_path: Path) -> None:
    """Every version verifies and skopeo copies it (checking every digest); the channel
    document verifies."""
    mode = Trusted(adhoc_policy([keypair.public]))
    for version in VERSIONS:
        dest = tmp_path / f"fetched-{version}"
        dest.mkdir()
        fetch_verified(Source(registry, mode), registry.resolve("iris", version), dest)
        skopeo("copy", f"oci:{registry.root / 'iris'}:{version}", f"dir:{tmp_path / version}")
    read_channel(registry, "iris", "stable", mode=mode, now=datetime.now(UTC), last_seen=None)


def with_iris(tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair) -> LayoutRegistry:
    """A registry directory under ``tmp_path`` holding iris 1.0.0."""
    registry = LayoutRegistry(tmp_path / "registry")
    publish_bundle(
        bundles["1.0.0"], registry=registry, mode=Trusted(adhoc_policy([keypair.public]))
    )
    return registry


def test_gc_removes_only_unreferenced_blobs(
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    for bundle in bundles.values():
        publish_bundle(bundle, registry=registry, mode=Trusted(adhoc_policy([keypair.public])))
    promote(
        "iris@1.1.0", channel="stable", registry=registry, private_key=keypair.private,
        now=datetime.now(UTC),
    )  # fmt: skip
    needed = blobs(registry)
    promote(
        "iris@2.0.0", channel="stable", registry=registry, private_key=keypair.private,
        now=datetime.now(UTC),
    )  # fmt: skip
    # A killed publish left a blob and a temporary file; the first channel document is replaced.
    sha = registry.root / "iris" / "blobs" / "sha256"
    (sha / ("ab" * 32)).write_bytes(b"left behind")
    (sha / f".{'cd' * 32}.x1y2.tmp").write_bytes(b"half")
    replaced = blobs(registry) - needed - {"ab" * 32, f".{'cd' * 32}.x1y2.tmp"}
    # The old document's manifest and its payload layer; the empty config is shared.
    assert len(replaced) == 2
    before = blobs(registry)

    code = main(["gc", "--registry", str(registry.root), "--dry-run", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert blobs(registry) == before
    would = {r["file"] for r in out["removed"]}
    assert out["dryRun"] and len(would) == 4 and "ab" * 32 in would

    code = main(["gc", "--registry", str(registry.root), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert {r["file"] for r in out["removed"]} == would
    assert blobs(registry) == before - would
    check_whole(registry, keypair, tmp_path)
    # The old channel document's blobs were the garbage, not the new one's.
    assert len(would & replaced) == 2 - len(replaced & blobs(registry))

    assert main(["gc", "--registry", str(registry.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == []


def test_gc_refuses_a_damaged_layout_and_removes_nothing(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = with_iris(tmp_path, bundles, keypair)
    manifest = registry.resolve("iris", "1.0.0").manifest_digest
    sha = registry.root / "iris" / "blobs" / "sha256"
    (sha / ("ab" * 32)).write_bytes(b"left behind")
    (sha / manifest.hex).unlink()
    before = blobs(registry)
    with pytest.raises(RegistryError, match="missing"):
        registry.collect_garbage()
    assert blobs(registry) == before


def test_gc_refuses_a_layout_that_lost_its_index_and_removes_nothing(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = with_iris(tmp_path, bundles, keypair)
    # A layout begun by a publish has its (empty) index before it is listed; this one's
    # first publish was killed after a blob.
    (registry._blob_dir(registry.root / "wine") / ("ab" * 32)).write_bytes(b"left behind")
    assert (registry.root / "wine" / "index.json").is_file()
    (registry.root / "iris" / "index.json").unlink()  # a bad restore, an rsync cut short
    before = blobs(registry)
    code = main(["gc", "--registry", str(registry.root)])
    out, err = capsys.readouterr()
    # iris is left whole; wine, after it, is swept all the same.
    assert code == 4 and out == f"wine  {'ab' * 32}  11\n"
    assert not (registry.root / "wine").exists()
    assert err.strip().endswith(
        "iris/index.json is missing in " + str(registry.root) + ": "
        "restore it from a backup (if no version of iris was ever "
        "published, remove iris/ instead)"
    )
    assert err.splitlines()[0] == "removed 1 unreferenced blobs (11 bytes)"
    assert len(err.splitlines()) == 2
    assert blobs(registry) == before
    assert json.loads((registry.root / "models.json").read_text()) == ["iris"]


def test_gc_racing_a_publisher_never_loses_a_blob(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    rounds = 24
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RACING_PUBLISHER,
            str(registry.root),
            str(keypair.key_path),
            str(rounds),
            *(str(bundles[v]) for v in VERSIONS),
        ],
        stderr=subprocess.PIPE,
    )
    removed = 0
    sweeps = 0
    while publisher.poll() is None:
        if (registry.root / "iris").is_dir():
            removed += len(registry.collect_garbage())
            sweeps += 1
    assert publisher.returncode == 0, publisher.stderr.read() if publisher.stderr else ""
    removed += len(registry.collect_garbage())
    # Each promotion after the first replaced a document: its manifest and payload went.
    assert sweeps > 1
    assert removed == 2 * (rounds - 1)
    check_whole(registry, keypair, tmp_path)


def test_gc_needs_a_registry_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gc", "--registry", str(tmp_path / "x.tar")]) == 2
    assert "registry directory" in capsys.readouterr().err


def test_gc_leaves_what_is_not_a_regular_file_says_so_and_removes_the_rest(
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = with_iris(tmp_path, bundles, keypair)
    sha = registry.root / "iris" / "blobs" / "sha256"
    needed = blobs(registry)
    (sha / ("a" * 64)).mkdir()
    (sha / ("b" * 64)).symlink_to(sha / sorted(needed)[0])
    for garbage in ("c" * 64, "d" * 64, "e" * 64):
        (sha / garbage).write_bytes(b"left behind")
    for dry_run in (["--dry-run"], []):
        code = main(["gc", "--registry", str(registry.root), "--json", *dry_run])
        out, err = capsys.readouterr()
        assert code == 0, err
        removed = json.loads(out)["removed"]
        assert sorted(r["file"] for r in removed) == ["c" * 64, "d" * 64, "e" * 64]
        assert f"{sha / ('a' * 64)} is not a regular file (no blob is): left where" in err
        assert f"{sha / ('b' * 64)} is not a regular file" in err
    assert blobs(registry) == needed | {"a" * 64, "b" * 64}


@pytest.mark.parametrize("where", ["missing", "empty", "file"])
def test_gc_refuses_what_is_not_a_registry_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    path = tmp_path / "registry"
    if where == "empty":
        path.mkdir()
        (path / "notes.txt").write_text("not a registry")
    elif where == "file":
        path.write_text("not a registry")
    code = main(["gc", "--registry", str(path)])
    _, err = capsys.readouterr()
    assert code == 4
    expected = "is not a registry directory" if where == "empty" else f"no registry at {path}"
    assert err.startswith("packager: error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert where != "missing" or not path.exists()


def test_gc_drops_the_empty_layout_a_killed_first_publish_left(
    tmp_path: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = with_iris(tmp_path, bundles, keypair)
    # A first publish of wine killed after its oci-layout file and one blob were written.
    (registry._blob_dir(registry.root / "wine") / ("ab" * 32)).write_bytes(b"left behind")
    code = main(["search", "--registry", str(registry.root), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["models"]["wine"] == []
    code = main(["gc", "--registry", str(registry.root), "--dry-run"])
    assert code == 0 and capsys.readouterr().out == f"wine  {'ab' * 32}  11\n"
    assert (registry.root / "wine" / "oci-layout").is_file()
    code = main(["gc", "--registry", str(registry.root), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [(r["name"], r["file"]) for r in json.loads(out)["removed"]] == [("wine", "ab" * 32)]
    assert sorted(p.name for p in registry.root.iterdir()) == [
        "iris",
        "models.json",
        "models.json.lock",
    ]
    code = main(["search", "--registry", str(registry.root), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["models"] == {"iris": ["1.0.0"]}
    assert json.loads((registry.root / "models.json").read_text()) == ["iris"]


def test_a_publish_waiting_while_gc_drops_its_empty_layout_makes_it_again(
    tmp_path: Path, bundles: dict[str, Path], keypair: KeyPair
) -> None:
    registry = LayoutRegistry(tmp_path / "registry")
    layout = registry.root / "iris"
    blobs_dir = registry._blob_dir(layout)
    mode = Trusted(adhoc_policy([keypair.public]))
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            publish_bundle(bundles["1.0.0"], registry=registry, mode=mode)
        except BaseException as e:  # reported by the test's thread
            errors.append(e)

    # Hold the write lock as gc does, while a publish waits for it; drop the layout.
    lock = os.open(layout / "blobs.lock", os.O_RDWR | os.O_CREAT)
    publisher = threading.Thread(target=publish, daemon=True)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        publisher.start()
        time.sleep(0.5)
        assert publisher.is_alive()
        assert registry._drop_if_empty(layout, blobs_dir)
    finally:
        os.close(lock)
    publisher.join(timeout=60)
    assert not publisher.is_alive()
    assert errors == []
    assert registry.versions("iris") == ["1.0.0"]
    dest = tmp_path / "fetched"
    dest.mkdir()
    fetch_verified(Source(registry, mode), registry.resolve("iris", "1.0.0"), dest)
