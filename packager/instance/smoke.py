"""The install's smoke test (step 5 of the verification order), run in a child process.

Loading a model brings all of its weights into the process that loads it: a 4 GiB model
makes a 4 GiB process, and the memory is not given back when the session is dropped.
The installer itself only streams, hashes and copies, in a few MiB whatever the model's
size; so the compatibility check, the load and the test vectors run in a child Python
process, and the installer learns the outcome, how long it took and the child's peak
memory. A child that crashes (onnxruntime aborting on a hostile graph, the kernel's
out-of-memory killer) is a failed smoke test, not a dead installer.

The child runs isolated (``python -I``: neither the working directory nor the user's site
directory is on its path; packager's own location is put first explicitly), in the bundle's
private staging directory, with an environment holding only what the runtime needs (no
registry or key password reaches it). It runs in a session of its own under a memory cap
(RLIMIT_DATA) and a deadline; it is killed, with anything it started, when the deadline
passes, when the installer is interrupted and, on Linux, when the installer dies. The
verified manifest.json comes on stdin, the result goes back as one JSON object on a
descriptor of its own, so that nothing the runtime prints can be mistaken for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from packager import errors
from packager._io.process import leave
from packager.core.compare import Comparison
from packager.core.jsonio import loads_object
from packager.core.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from packager.errors import PackagerError, SmokeTestError

# The child's stderr is kept only to quote its end when the child dies.
STDERR_TAIL = 2000
# Default bounds, scaled to the bundle's size: loading a model takes a few times its size
# in memory, and time roughly in proportion to it. --smoke-timeout/--smoke-memory override.
BASE_SECONDS = 120.0
SECONDS_PER_GIB = 60.0
MIN_MEMORY = 2 << 30
MEMORY_PER_BYTE = 4
# The only variables the child inherits: what the runtime, numpy and their BLAS read.
# Credentials (registry and key passwords, tokens) never reach the code that loads a model.
_ENV_NAMES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"})
_ENV_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "GOTO_", "ORT_", "CUDA_")
_SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "CREDENTIAL")
# `python -I -c _CHILD SOURCE DIRECTORY FD`: -I leaves the working directory, the user's
# site directory and every PYTHON* variable out; packager's own location comes first.
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from packager.instance.smoke import child; child(sys.argv[2:])"
)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SmokeLimits:
    """Bounds of the smoke test's child process: wall time in seconds and memory
    (RLIMIT_DATA) in bytes. None scales with the bundle's size: 120 s + 60 s per GiB, and
    four times the size but at least 2 GiB."""

    seconds: float | None = None
    memory: int | None = None

    def resolve(self, manifest: Manifest) -> tuple[float, int]:
        size = sum(entry.size for entry in manifest.files)
        seconds = BASE_SECONDS + SECONDS_PER_GIB * size / 2**30
        memory = max(MEMORY_PER_BYTE * size, MIN_MEMORY)
        return (
            seconds if self.seconds is None else self.seconds,
            memory if self.memory is None else self.memory,
        )


@dataclass(frozen=True)
class SmokeTest:
    """A passed smoke test: the comparison, the child's wall time and its peak resident
    set in bytes."""

    comparison: Comparison
    seconds: float
    peak_rss: int


def run_smoke_test(
    directory: Path, manifest: Manifest, *, limits: SmokeLimits | None = None
) -> SmokeTest:
    """Check the runtime, load the bundle in ``directory`` and run its test vectors, in an
    isolated child process bounded by ``limits``.

    Raises:
        IncompatibleModelError: this instance's onnxruntime cannot load the model
            (SmokeTestError: it does not reproduce the test vectors, the child died, ran
            out of memory or time).
        TamperedError: the graph does not match the manifest.
        UsageError: the model file cannot be read.
    """
    seconds, memory = (limits or SmokeLimits()).resolve(manifest)
    bounds = f"limits {seconds:.0f} s, {memory >> 20} MiB"
    # The child starts in the bundle's directory: a relative path would name another one.
    directory = directory.absolute()
    # The child must import this very packager, wherever it was imported from.
    source = str(Path(__file__).resolve().parents[2])
    start = time.monotonic()
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(manifest.to_bytes())
        stdin.seek(0)
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb") as results:
            try:
                child = subprocess.Popen(
                    [sys.executable, "-I", "-c", _CHILD, source, str(directory), str(write_end)],
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    pass_fds=(write_end,),
                    env=child_environment(os.environ),
                    cwd=directory,
                    start_new_session=True,
                    preexec_fn=_confine(memory),  # does no lookup or import after the fork
                )
            except (OSError, subprocess.SubprocessError) as e:
                raise SmokeTestError(
                    f"{manifest.ref}: cannot start the smoke test ({sys.executable}): "
                    f"{getattr(e, 'strerror', None) or e}"
                ) from e
            finally:
                os.close(write_end)  # the child holds its own copy: EOF comes when it exits
            with child:
                data = _wait(child, results, start + seconds, f"{manifest.ref}: {bounds}")
        elapsed = time.monotonic() - start
        if child.returncode != 0 or not data:
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - STDERR_TAIL))
            tail = stderr.read().decode(errors="replace").strip().splitlines()
            raise SmokeTestError(
                f"{manifest.ref}: the smoke test process {_death(child.returncode)}"
                + (f": {tail[-1][:300]}" if tail else "")
                + f" ({bounds}: --smoke-timeout, --smoke-memory)"
            )
    result = loads_object(data, what=f"{manifest.ref}: the smoke test result", error=SmokeTestError)
    if "error" in result:
        kind = getattr(errors, str(result["error"]), None)
        if not (isinstance(kind, type) and issubclass(kind, PackagerError)):
            kind = SmokeTestError
        raise kind(str(result["message"]))
    found = result["comparison"]
    # The child sends an infinite difference (NaN on one side) as a string: JSON has no inf.
    comparison = Comparison(
        **{
            **found,
            "max_abs_diff": float(found["max_abs_diff"]),
            "max_rel_diff": float(found["max_rel_diff"]),
            "worst": tuple(found["worst"]),
        }
    )
    return SmokeTest(comparison, elapsed, int(result["peakRss"]))


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` the smoke test's child may see."""
    return {
        key: value
        for key, value in environ.items()
        if (key in _ENV_NAMES or key.startswith(_ENV_PREFIXES))
        and not any(word in key.upper() for word in _SECRET_WORDS)
    }


def _confine(memory: int) -> Callable[[], None]:
    """What the child does between fork and exec: cap its memory and, on Linux, ask to be
    killed when the installer dies. Everything is looked up here, before the fork."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
    parent = os.getpid()
    kill = ctypes.c_ulong(signal.SIGKILL)

    def confine() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, kill)
            if os.getppid() != parent:  # the installer died before the line above
                os._exit(1)

    return confine


def _wait(child: subprocess.Popen[bytes], results: BinaryIO, deadline: float, what: str) -> bytes:
    """The child's result, once it has exited; the child's whole session is killed when the
    deadline passes or the installer is interrupted."""
    done = False
    try:
        data = _read_until(results, deadline)
        if data is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
                done = True
    finally:
        if not done:
            # The session's id is the child's pid, held until it is reaped just below.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if data is None or not done:
        raise SmokeTestError(
            f"{what}: the smoke test did not finish in time and was killed; "
            "give it longer with --smoke-timeout SECONDS"
        )
    return data


def _read_until(results: BinaryIO, deadline: float) -> bytes | None:
    """Everything written to ``results`` until EOF, or None at the deadline."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([results], [], [], remaining)[0]:
            return None
        chunk = os.read(results.fileno(), 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _comparison_json(comparison: Comparison) -> dict[str, Any]:
    doc = asdict(comparison)
    for key in ("max_abs_diff", "max_rel_diff"):
        if not math.isfinite(doc[key]):
            doc[key] = str(doc[key])
    return doc


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"died of {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died of signal {-returncode}"
    return f"exited with code {returncode} and no result"


def main(argv: list[str]) -> int:
    """The child: smoke-test the bundle ``argv[0]``, write the result to descriptor
    ``argv[1]``; the manifest comes on stdin."""
    from packager.runtime import Model, check_compatible

    directory, results = Path(argv[0]), int(argv[1])
    result: dict[str, Any]
    try:
        manifest = parse_manifest(sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1))
        check_compatible(manifest)
        result = {"comparison": _comparison_json(Model(directory, manifest).smoke_test())}
    except PackagerError as e:
        result = {"error": type(e).__name__, "message": str(e)}
    # ru_maxrss is in KiB on Linux; it is at least the installer's own peak, which Linux
    # carries over into a child it starts, far below what loading a model takes.
    result["peakRss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with os.fdopen(results, "w") as out:
        json.dump(result, out)
    return 0


def child(argv: list[str]) -> NoReturn:
    """The child's whole life: :func:`main`, then the process ended as the command line's
    is (exit handlers run, output flushed) without tearing the interpreter down: freeing a
    loaded model and the runtime object by object takes tens of milliseconds, or more for a
    large model, while the installer waits for the process to end."""
    leave(main(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
