"""The install's smoke test (step 5 of the verification order), run in a child process.

Loading a model brings all of its weights into the process that loads it: a 4 GiB model
makes a 4 GiB process, and the memory is not given back when the session is dropped.
The installer itself only streams, hashes and copies, in a few MiB whatever the model's
size; so the compatibility check, the load and the test vectors run in a child Python
process, and the installer learns the outcome, how long it took and the child's peak
memory. A child that crashes (onnxruntime aborting on a hostile graph, the kernel's
out-of-memory killer) is a failed smoke test, not a dead installer.

The child is ``python -m packager.instance.smoke DIRECTORY``: the verified manifest.json comes on
stdin, the result goes back as one JSON object on a descriptor of its own, so that
nothing the runtime prints can be mistaken for it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packager import errors
from packager.core.compare import Comparison
from packager.core.jsonio import loads_object
from packager.core.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from packager.errors import PackagerError, SmokeTestError

# The child's stderr is kept only to quote its end when the child dies.
STDERR_TAIL = 2000


@dataclass(frozen=True)
class SmokeTest:
    """A passed smoke test: the comparison, the child's wall time and its peak resident
    set in bytes."""

    comparison: Comparison
    seconds: float
    peak_rss: int


def run_smoke_test(directory: Path, manifest: Manifest) -> SmokeTest:
    """Check the runtime, load the bundle in ``directory`` and run its test vectors, in a
    child process.

    Raises:
        IncompatibleModelError: this instance's onnxruntime cannot load the model
            (SmokeTestError: it does not reproduce the test vectors, or the child died).
        TamperedError: the graph does not match the manifest.
        UsageError: the model file cannot be read.
    """
    # The child must import this very packager, wherever it was imported from.
    source = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": source + (os.pathsep + path if path else "")}
    command = [sys.executable, "-m", "packager.instance.smoke", str(directory)]
    read_end, write_end = os.pipe()
    start = time.monotonic()
    with os.fdopen(read_end, "rb") as results, tempfile.TemporaryFile() as stderr:
        try:
            child = subprocess.Popen(
                [*command, str(write_end)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(write_end,),
                env=env,
            )
        except OSError as e:
            raise SmokeTestError(
                f"{manifest.ref}: cannot start the smoke test ({sys.executable}): {e.strerror}"
            ) from e
        finally:
            os.close(write_end)  # the child holds its own copy: EOF comes when it exits
        with child:
            assert child.stdin is not None
            try:
                child.stdin.write(manifest.to_bytes())
                child.stdin.close()
            except BrokenPipeError:
                pass  # it died before reading: its exit status says why
            data = results.read()
        seconds = time.monotonic() - start
        if child.returncode != 0 or not data:
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - STDERR_TAIL))
            tail = stderr.read().decode(errors="replace").strip().splitlines()
            raise SmokeTestError(
                f"{manifest.ref}: the smoke test process {_death(child.returncode)}"
                + (f": {tail[-1][:300]}" if tail else "")
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
    return SmokeTest(comparison, seconds, int(result["peakRss"]))


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
