"""The command line where users and systems get it wrong: nothing installed, a missing
registry, Ctrl-C, a closed pipe, options in any place, a read-only or full disk."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import packager
from packager.core.policy import Unverified
from packager.distribution.publish import publish_bundle
from packager.errors import NotFoundError
from packager.instance.store import Store
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair, cli


def packager_process(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "packager", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def assert_one_line_error(err: str) -> None:
    assert err.startswith("packager: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path]) -> Path:
    """A registry directory holding iris 1.0.0 and 1.1.0."""
    root = tmp_path_factory.mktemp("registry") / "reg"
    for version in ("1.0.0", "1.1.0"):
        publish_bundle(
            bundles[version], registry=LayoutRegistry(root), mode=Unverified("test fixture")
        )
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, registry: Path, keypair: KeyPair) -> Path:
    """A PACKAGER_HOME where iris 1.0.0 and then 1.1.0 (current) were installed."""
    home = tmp_path_factory.mktemp("installed") / "home"
    for version in ("1.0.0", "1.1.0"):
        result = packager_process(
            "--home", home, "install", f"iris@{version}", "--registry", registry,
            "--key", keypair.pub_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return home


@pytest.fixture
def home_copy(installed: Path, tmp_path: Path) -> Path:
    home = tmp_path / "installed-home"
    shutil.copytree(installed, home, symlinks=True)
    return home


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    return path


def test_what_is_not_installed_here_is_a_usage_error_and_json_failures_go_to_stdout(
    capsys: pytest.CaptureFixture[str], home_copy: Path, rows: Path
) -> None:
    for args in (
        ("predict", "nosuch", "--input", rows),
        ("predict", "iris@9.9.9", "--input", rows),
        ("rollback", "nosuch"),
        ("remove", "iris@9.9.9"),
        ("uninstall", "nosuch", "--yes"),
    ):
        code, out, err = cli(capsys, *args, "--home", home_copy, "--json")
        assert code == 2, (args, err)
        assert_one_line_error(err)
        assert json.loads(out) == {
            "error": err.removeprefix("packager: error: ")[:-1],
            "exitCode": 2,
        }
        code, out, err = cli(capsys, *args, "--home", home_copy)
        assert code == 2 and out == ""
    # The Python API still raises NotFoundError for it.
    with pytest.raises(NotFoundError, match="not installed"):
        packager.load("nosuch", home=home_copy)
    # Lines click cannot parse, and failures of other kinds, answer in JSON too.
    code, out, _ = cli(capsys, "list", "--bogus", "--json")
    assert code == 2 and json.loads(out)["exitCode"] == 2 and "--bogus" in json.loads(out)["error"]
    code, out, _ = cli(capsys, "verify", home_copy / "models/iris/1.1.0", "--json")
    assert code == 2 and json.loads(out)["exitCode"] == 2


def test_search_of_a_missing_model_or_registry_exits_4(
    capsys: pytest.CaptureFixture[str], registry: Path, tmp_path: Path
) -> None:
    code, out, err = cli(capsys, "search", "nosuch", "--registry", registry, "--json")
    assert code == 4 and "'nosuch' not found" in err
    assert json.loads(out)["exitCode"] == 4
    code, _, err = cli(capsys, "search", "--registry", tmp_path / "none")
    assert code == 4 and "no registry at" in err
    assert_one_line_error(err)
    code, out, _ = cli(capsys, "search", "iris", "--registry", registry, "--json")
    assert code == 0 and json.loads(out)["models"] == {"iris": ["1.0.0", "1.1.0"]}
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "search", "--registry", tmp_path / "empty")
    assert code == 0 and out == "" and "no models in" in err


def test_ctrl_c_exits_130(home_copy: Path) -> None:
    (home_copy / "locks").mkdir(exist_ok=True)
    with open(home_copy / "locks" / "iris.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(
            [sys.executable, "-m", "packager", "--home", str(home_copy), "remove", "iris@1.0.0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        assert "waiting for another install of iris" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        err = process.stderr.read()
    assert "packager: error: interrupted" in err and "Traceback" not in err
    assert (home_copy / "models/iris/1.0.0").is_dir()


def test_a_closed_pipe_ends_the_command_quietly(home_copy: Path) -> None:
    from datetime import UTC, datetime

    store = Store(home_copy)
    for i in range(100):  # far more than a pipe holds
        store.audit(action="test", outcome="ok", now=datetime.now(UTC), detail=f"{i} " * 500)
    for args in (("log",), ("log", "--json")):
        process = subprocess.Popen(
            [sys.executable, "-m", "packager", "--home", str(home_copy), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()
        process.stdout.close()  # `| head -1`
        # 141 when a write failed; 0 when the last write was cut short without an error.
        assert process.wait(timeout=60) in (0, 141)
        assert process.stderr.read() == b""
    shell = subprocess.run(
        ["bash", "-c", f'{sys.executable} -m packager --home "$1" log | head -1; '
         'echo "${PIPESTATUS[0]}" >&2', "-", str(home_copy)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert shell.stdout.count("\n") == 1 and shell.stderr in ("0\n", "141\n")


def test_global_options_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str],
    home_copy: Path,
    bundles: dict[str, Path],
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    assert cli(capsys, "trust", "add-key", "k", keypair.pub_path, "--trust", good)[0] == 0
    assert cli(capsys, "--trust", bad, "trust", "add-key", "o", other_keypair.pub_path)[0] == 0
    listed = json.loads(cli(capsys, "trust", "--trust", bad, "list", "--json")[1])
    assert [k["name"] for k in listed["keys"]] == ["o"]
    bundle = bundles["1.0.0"]
    assert cli(capsys, "verify", bundle, "--trust", good)[0] == 0
    assert cli(capsys, "--trust", good, "verify", bundle)[0] == 0
    assert cli(capsys, "verify", bundle, "--trust", bad)[0] == 3
    assert cli(capsys, "--trust", bad, "verify", bundle)[0] == 3

    listings = {
        cli(capsys, *args)[1]
        for args in (
            ("--home", home_copy, "list", "--json"),
            ("list", "--home", home_copy, "--json"),
            ("list", "--json", "--home", home_copy),
        )
    }
    assert len(listings) == 1 and '"1.1.0"' in listings.pop()

    code, _, err = cli(capsys, "keygen", "-o", tmp_path / "loud")
    assert code == 0 and "wrote" in err
    for args in (("-q", "keygen", "-o", tmp_path / "q1"), ("keygen", "-o", tmp_path / "q2", "-q")):
        code, _, err = cli(capsys, *args)
        assert code == 0 and err == ""


def test_upload_only_options_are_only_on_commands_that_upload(
    capsys: pytest.CaptureFixture[str], bundles: dict[str, Path], tmp_path: Path
) -> None:
    for command in ("install", "search", "pull", "export", "update"):
        assert "--chunk-size" not in cli(capsys, command, "--help")[1]
        code, _, err = cli(capsys, command, "x", "--chunk-size", "1M")
        assert code == 2 and "No such option" in err
    writers = ("publish", "promote", "approve", "revoke-approval", "mirror", "delegate")
    for command in (*((c,) for c in writers), ("root", "publish")):
        assert "--chunk-size" in cli(capsys, *command, "--help")[1]
    reg = tmp_path / "reg"
    assert cli(capsys, "publish", bundles["1.0.0"], "--registry", reg, "--chunk-size", "1M")[0] == 0


@pytest.mark.parametrize(
    "command",
    [
        ("promote", "iris@1.0.0", "--channel", "stable", "--key"),
        ("approve", "iris@1.0.0", "--role", "legal", "--key"),
        ("delegate", "iris*", "--delegation-key"),
    ],
)
def test_a_malformed_duration_is_refused_before_any_key_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = (*command, tmp_path / "missing.key", "--registry", tmp_path / "reg", "--expires")
    code, _, err = cli(capsys, *line, "soon")
    assert code == 2 and "invalid duration 'soon'" in err and "missing.key" not in err
    assert_one_line_error(err)
    code, out, _ = cli(capsys, *line, "soon", "--json")
    assert code == 2 and "invalid duration 'soon'" in json.loads(out)["error"]
    code, out, _ = cli(capsys, *line, "2w", "--json")
    assert code == 2 and "missing.key" in json.loads(out)["error"]


def test_uninstall_removes_every_version_and_keeps_the_floor_and_the_log(
    capsys: pytest.CaptureFixture[str], home_copy: Path, registry: Path, keypair: KeyPair
) -> None:
    # iris is current: without a terminal, uninstall needs --yes.
    refused = packager_process("uninstall", "iris", "--home", home_copy)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert_one_line_error(refused.stderr)
    assert (home_copy / "models/iris/current").is_symlink()

    code, out, _ = cli(capsys, "uninstall", "iris", "--yes", "--home", home_copy, "--json")
    assert code == 0
    assert json.loads(out) == {"name": "iris", "removed": ["1.0.0", "1.1.0"]}
    assert not os.path.lexists(home_copy / "models/iris")
    assert list((home_copy / "tmp").rglob("*.onnx")) == []
    assert json.loads(cli(capsys, "list", "--home", home_copy, "--json")[1]) == []
    log = json.loads(cli(capsys, "log", "iris", "--home", home_copy, "--json")[1])
    assert [e["action"] for e in log] == ["install", "install", "uninstall"]
    assert Store(home_copy).floor("iris") == "1.1.0"
    # The rollback floor stays: the lower version is still refused.
    code, _, err = cli(
        capsys, "install", "iris@1.0.0", "--registry", registry, "--key", keypair.pub_path,
        "--home", home_copy,
    )  # fmt: skip
    assert code == 3 and "1.1.0" in err


def test_uninstall_asks_on_a_terminal_and_stops_following_the_channel(home_copy: Path) -> None:
    from datetime import UTC, datetime

    from packager.core.channel import Seen
    from packager.instance.store import ChannelRecord, Following

    store = Store(home_copy)
    digest = store.manifest_digest("iris", "1.1.0")
    follow = ChannelRecord(Following("iris", "stable", None), Seen(1, "1.1.0", digest), None)
    store.record_channel(follow, now=datetime.now(UTC))
    for answer, code in (("n", 2), ("y", 0)):
        controller, terminal = os.openpty()
        with os.fdopen(controller, "r+b", buffering=0) as keyboard:
            process = subprocess.Popen(
                [sys.executable, "-m", "packager", "--home", str(home_copy), "uninstall", "iris"],
                stdin=terminal,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.close(terminal)
            keyboard.write(f"{answer}\n".encode())
            assert process.wait(timeout=60) == code
        assert process.stderr is not None
        assert "iris@1.1.0 is current" in process.stderr.read()
        assert (home_copy / "models/iris").is_dir() == (answer == "n")
    assert store.following() == []


def test_log_json_gives_the_facts_of_each_entry_in_fields(
    capsys: pytest.CaptureFixture[str], home_copy: Path, registry: Path, keypair: KeyPair
) -> None:
    assert cli(capsys, "rollback", "iris", "--home", home_copy)[0] == 0
    out = cli(capsys, "log", "iris", "--home", home_copy, "--json")[1]
    first, second, back = json.loads(out)
    hint = keypair.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for entry, version, previous in ((first, "1.0.0", None), (second, "1.1.0", "1.0.0")):
        assert entry["action"] == "install" and entry["version"] == version
        assert entry["key"] == hashlib.sha256(hint).hexdigest()
        assert entry["source"] == str(registry) and entry["previous"] == previous
        installed = home_copy / "models/iris" / version / "manifest.json"
        assert entry["digest"] == f"sha256:{hashlib.sha256(installed.read_bytes()).hexdigest()}"
        assert entry["channel"] is None and entry["sequence"] is None
    assert back["action"] == "rollback" and back["version"] == "1.0.0"
    assert back["previous"] == "1.1.0"


def test_log_reads_entries_written_before_their_facts_had_fields(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from packager.instance.store import SCHEMA_VERSION, STATE_DB

    from .test_store import V0_SCHEMA, make_db, user_version

    home = tmp_path / "old"
    make_db(home / STATE_DB, V0_SCHEMA)
    expected = {
        "at": "2026-11-02T00:00:00",
        "action": "install",
        "name": "iris",
        "version": "1.2.0",
        "outcome": "ok",
        "detail": "from the old code",
        "key": None,
        "digest": None,
        "source": None,
        "channel": None,
        "sequence": None,
        "previous": None,
    }
    _need_mounts()
    # Read-only: read as it is, not migrated.
    result = in_namespace(READ_ONLY, home, "log", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [expected]
    assert user_version(home / STATE_DB) == 0
    code, out, err = cli(capsys, "log", "--json", "--home", home)
    assert code == 0, err
    assert json.loads(out) == [expected]
    assert user_version(home / STATE_DB) == SCHEMA_VERSION


def test_remove_json(capsys: pytest.CaptureFixture[str], home_copy: Path) -> None:
    code, out, _ = cli(capsys, "remove", "iris@1.0.0", "--home", home_copy, "--json")
    assert code == 0 and json.loads(out) == {"name": "iris", "removed": ["1.0.0"]}
    assert not (home_copy / "models/iris/1.0.0").exists()


def _need_mounts() -> None:
    """Skip, or fail under CI, where a private mount namespace cannot be made."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("mount"):
        return
    message = "needs root with unshare and mount (util-linux) for a read-only or full home"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# Run a command with $1 mounted read-only, in a private mount namespace.
READ_ONLY = 'd=$1; shift; mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" && exec "$@"'
# Run a command with $1 a 256 KiB tmpfs filled but for what the filesystem keeps back,
# then print what it left there: any file in tmp/, anything in models/.
FULL = (
    'd=$1; shift; mount -t tmpfs -o size=256k tmpfs "$d" || exit 99; '
    'dd if=/dev/zero of="$d/filler" bs=4k 2>/dev/null; "$@"; code=$?; '
    'find "$d/models" -mindepth 1 2>/dev/null; find "$d/tmp" -type f 2>/dev/null; exit $code'
)


def in_namespace(
    setup: str, directory: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "packager", "--home", str(directory), *map(str, args)]
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", setup, "-", str(directory), *command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def snapshot(home: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(home)): os.readlink(p) if p.is_symlink() else p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_commands_that_only_read_work_on_a_read_only_home_and_writes_fail_cleanly(
    home_copy: Path, registry: Path, rows: Path, keypair: KeyPair, bundles: dict[str, Path]
) -> None:
    _need_mounts()
    before = snapshot(home_copy)
    bundle = home_copy / "models/iris/1.1.0"
    reads = (
        ("list", "--json"),
        ("log", "--json"),
        ("log", "iris"),
        ("search", "--registry", registry),
        ("predict", "iris", "--input", rows, "--json"),
        ("inspect", bundle),
    )
    outputs = []
    for args in reads:
        result = in_namespace(READ_ONLY, home_copy, *args)
        assert result.returncode == 0, (args, result.stderr)
        outputs.append(result.stdout)
    for args in (
        ("install", "iris@1.0.0", "--registry", registry, "--key", keypair.pub_path),
        ("rollback", "iris"),
        ("remove", "iris@1.0.0"),
        ("uninstall", "iris", "--yes"),
        ("trust", "add-key", "k", keypair.pub_path),
        # The embedded registry is on the local disk too: not a registry failure (4).
        ("publish", bundles["2.0.0"]),
    ):
        result = in_namespace(READ_ONLY, home_copy, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_line_error(result.stderr)
        assert "Read-only file system" in result.stderr or "local disk" in result.stderr
    assert snapshot(home_copy) == before
    # The same answers as on the home mounted read-write.
    assert outputs == [packager_process("--home", home_copy, *args).stdout for args in reads]


def test_a_full_disk_fails_cleanly_and_installs_nothing(
    tmp_path: Path, registry: Path, keypair: KeyPair
) -> None:
    _need_mounts()
    home = tmp_path / "full"
    home.mkdir()
    result = in_namespace(
        FULL, home, "install", "iris", "--registry", registry, "--key", keypair.pub_path
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "local disk" in result.stderr and "registry" not in result.stderr.split(";")[0]
    assert result.stdout == ""  # no model directory, no staging left behind


def test_the_process_ends_untorn_once_exit_handlers_ran_output_is_flushed_and_threads_done(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "thread-done"
    program = (
        "import atexit, os, sys, threading, time\n"
        "from pathlib import Path\n"
        "from packager.cli import run\n"
        "class Torn:\n"
        "    def __del__(self, write=os.write) -> None:\n"
        "        write(2, b'torn down\\n')\n"
        "torn = Torn()\n"
        "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
        "sys.stdout.write('still buffered; ')\n"
        "marker = Path(sys.argv[2])\n"
        "if sys.argv[1] == 'thread':\n"
        "    def late() -> None:\n"
        "        time.sleep(0.5)\n"
        "        marker.write_text('done')\n"
        "    threading.Thread(target=late).start()\n"
        "sys.argv = ['packager', *sys.argv[3:]]\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for threads, args, code in (
        ("none", ["--version"], 0),
        ("none", ["list", "--bogus"], 2),
        ("thread", ["--version"], 0),
    ):
        done = subprocess.run(
            [sys.executable, "-c", program, threads, str(marker), *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert done.returncode == code, done.stderr
        assert done.stdout.startswith("still buffered; ")
        assert "exit handler ran\n" in done.stderr
        assert ("packager, version" in done.stdout) == (code == 0)
        # Torn down object by object only while another thread ran to the end.
        assert ("torn down" in done.stderr) == (threads == "thread"), done.stderr
    assert marker.read_text() == "done"


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_the_installed_command_ends_through_run_and_a_closed_stream_is_no_failure(
    tmp_path: Path, closed: str
) -> None:
    """The console script runs :func:`packager.cli.run` (the process ends as above), and a
    stream closed before Python started (cron and service managers do this) is neither a
    traceback nor a failed exit code, from the script or from ``python -m packager``."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "packager"]
    assert script.value == "packager.cli:run"
    command = Path(sys.executable).with_name("packager")
    assert command.is_file(), "the packager console script is not installed beside python"
    descriptor = 1 if closed == "stdout" else 2
    for line in ([str(command)], [sys.executable, "-m", "packager"]):
        done = subprocess.run(
            ["sh", "-c", f'"$@" {descriptor}>&-', "sh", *line, "--home", str(tmp_path), "list"],
            capture_output=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if closed == "stderr" else None,
            stderr=subprocess.PIPE if closed == "stdout" else None,
            timeout=60,
        )
        assert done.returncode == 0, (line, done.stderr, done.stdout)
        leftover = done.stderr if closed == "stdout" else b""
        assert b"Traceback" not in leftover, leftover


def test_a_profiler_around_the_command_still_writes_its_results(tmp_path: Path) -> None:
    profile = tmp_path / "packager.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "packager", "--version"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "packager, version" in done.stdout
    assert "packager/cli/__init__.py" in str(pstats.Stats(str(profile)).stats)  # type: ignore[attr-defined]


def test_standard_streams_closed_at_start_are_dev_null_before_any_file_is_opened(
    tmp_path: Path,
) -> None:
    """With descriptors 0, 1 and 2 closed at start, the first file packager opens would
    take number 0, 1 or 2, and anything written to standard output or error (a C
    library's log, a child process) would land in it: they are /dev/null instead."""
    report = tmp_path / "descriptors.json"
    child = (
        "import atexit, json, os, sys\n"
        "sys.argv = ['packager', '--version']\n"
        "from packager.cli import run\n"
        "def note():\n"
        f"    fd = os.open({str(report)!r}, os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "    links = {n: os.readlink(f'/proc/self/fd/{n}') for n in (0, 1, 2) if n != fd}\n"
        "    os.write(fd, json.dumps({'opened': fd, 'links': links}).encode())\n"
        "atexit.register(note)\n"
        "run()\n"
    )
    done = subprocess.run(
        ["sh", "-c", '"$@" 0<&- 1>&- 2>&-', "sh", sys.executable, "-c", child], timeout=60
    )
    assert done.returncode == 0
    found = json.loads(report.read_text())
    assert found["opened"] > 2
    assert found["links"] == {str(n): os.devnull for n in (0, 1, 2)}
