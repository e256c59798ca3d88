"""`packager verify` on a bundle directory that works against it: a file cut short while it
is hashed, a signature or manifest far past the size any can have. Each is a one-line
refusal with exit 3, never a fault of the process and never a large file read whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import KeyPair

GIB = 1 << 30


def verify_process(bundle: Path, keypair: KeyPair) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "packager", "verify", str(bundle), "--key", str(keypair.pub_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def test_a_file_cut_short_while_it_is_hashed_is_refused(
    bundle_copy: Path, keypair: KeyPair
) -> None:
    """Someone truncates a file of the bundle while verify reads it: exit 3 naming the file,
    where a memory-mapped read would end the process with SIGBUS and no word."""
    big = bundle_copy / "big.bin"
    with big.open("wb") as f:
        f.truncate(4 * GIB)  # holes: read as zeros, at the speed of hashing
    process = verify_process(bundle_copy, keypair)
    deadline = time.monotonic() + 60
    while not opened(process.pid, big):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "verify never opened big.bin"
        time.sleep(0.005)
    os.truncate(big, 0)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3, (process.returncode, err)
    assert "big.bin" in err and "changed while read" in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# Runs the command given and writes its exit code and peak RSS (KiB) last on stderr. The
# command is started from this small process, not from the test's: a child counts the
# memory of the process it was forked from until it runs the command.
MEASURED = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)
"""


def peak_rss_kib(command: list[str]) -> tuple[int, str, int]:
    """Run ``command``: its exit code, its standard error and its own peak RSS (KiB)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    *lines, last = done.stderr.strip().splitlines()
    code, peak = map(int, last.split())
    return code, "\n".join(lines), peak


def test_an_oversized_signature_or_manifest_is_refused_without_being_read_whole(
    bundle_copy: Path, keypair: KeyPair
) -> None:
    command = [sys.executable, "-m", "packager", "verify", str(bundle_copy), "--key"]
    command.append(str(keypair.pub_path))
    for name in ("model.sig", "manifest.json"):
        path = bundle_copy / name
        original = path.read_bytes()
        with path.open("ab") as f:
            f.write(b" " * (512 << 20))
        code, err, peak = peak_rss_kib(command)
        path.write_bytes(original)
        assert code == 3, (name, err)
        assert name in err and "Traceback" not in err, err
        assert peak < 200 << 10, f"{name}: peak RSS {peak >> 10} MiB for a 512 MiB file"
