"""Target 7: a delta upgrade. ``eight`` 1.0.0 holds 1 GiB of weights in eight files of
128 MiB; 2.0.0 changes one of them. Upgrading an instance that has 1.0.0 must transfer at
most 1/8 of the bytes of a full install of 2.0.0 plus 1 MiB, and take at most 0.25 x its
time.

    python benchmarks/bench_delta.py [--runs N] [--keep DIR]

Both versions are served by a static web server on 127.0.0.1 (a static mirror of the
registry directory), which counts the bytes of every response. The reference is the full
install of 2.0.0 into an empty PACKAGER_HOME, alternating with the upgrade (1.0.0 current,
then 2.0.0 installed; between runs 2.0.0 is rolled back and removed, untimed). Both
figures leave out the onnxruntime smoke test (child process), as target 2 does: it loads
the same model either way; the whole installs are in the note.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness import MIB, PACKAGER, Fixtures, Row, Sample, interleave, run, standalone, warm


class _Counting(SimpleHTTPRequestHandler):
    """Python's static file server, adding up the bytes it sends."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        counter: list[int] = self.server.sent  # type: ignore[attr-defined]
        while chunk := source.read(MIB):
            outputfile.write(chunk)
            counter[0] += len(chunk)


@contextmanager
def mirror(root: Path) -> Iterator[tuple[str, list[int]]]:
    """Serve ``root`` on 127.0.0.1; yields its URL and the counter of bytes sent."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Counting, directory=str(root)))
    server.daemon_threads = True
    server.sent = [0]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/registry", server.sent  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def rows(fx: Fixtures, runs: int) -> list[Row]:
    old, new = fx.eight(), fx.eight_next()
    site = fx.root / "delta-site"
    registry = site / "registry"
    if not registry.exists():
        for bundle in (old, new):
            run([PACKAGER, "-q", "publish", bundle, "--registry", registry], env=fx.env())
    warm(registry)
    full_home, upgrade_home = fx.root / "delta-full", fx.root / "delta-upgrade"
    shutil.rmtree(upgrade_home, ignore_errors=True)
    sent: dict[str, list[int]] = {"full": [], "upgrade": []}
    with mirror(site) as (url, counter):
        install = [PACKAGER, "-q", "install", "--registry", url, "--key", fx.pub, "--json"]
        run([*install, "eight@1.0.0"], env=fx.env(upgrade_home))

        def before(case: str) -> None:
            if case == "full":
                shutil.rmtree(full_home, ignore_errors=True)
            elif (upgrade_home / "models" / "eight" / "2.0.0").exists():
                run([PACKAGER, "-q", "rollback", "eight"], env=fx.env(upgrade_home))
                run([PACKAGER, "-q", "remove", "eight@2.0.0"], env=fx.env(upgrade_home))
            counter[0] = 0

        def measured(case: str, home: Path) -> Sample:
            sample = run([*install, "eight@2.0.0"], env=fx.env(home))
            sent[case].append(counter[0])
            return sample

        samples = interleave(
            {
                "full": lambda: measured("full", full_home),
                "upgrade": lambda: measured("upgrade", upgrade_home),
            },
            runs=runs,
            before=before,
        )
    shutil.rmtree(full_home, ignore_errors=True)
    shutil.rmtree(upgrade_home, ignore_errors=True)
    seconds = {case: _without_smoke(s) for case, s in samples.items()}
    whole = {case: statistics.median(s.seconds for s in ss) for case, ss in samples.items()}
    full_bytes, upgrade_bytes = (statistics.median(sent[c][-runs:]) for c in ("full", "upgrade"))
    return [
        Row(
            "9 delta",
            "bytes sent by the mirror for the upgrade 1.0.0 -> 2.0.0 (1 of 8 files changed)",
            upgrade_bytes,
            (full_bytes / 8 + MIB) / full_bytes,
            full_bytes,
            "bytes of a full install of 2.0.0",
            unit="bytes",
            note="limit: 1/8 of the full install's bytes plus 1 MiB",
        ),
        Row(
            "9 delta",
            "the upgrade 1.0.0 -> 2.0.0, static mirror, without the smoke test",
            statistics.median(seconds["upgrade"]),
            0.25,
            statistics.median(seconds["full"]),
            "full install of 2.0.0, without the smoke test",
            note=(
                f"whole installs, smoke test included: upgrade {whole['upgrade']:.2f} s, "
                f"full {whole['full']:.2f} s; the 7 unchanged files (896 MiB) are hashed "
                "again where they are linked"
            ),
        ),
    ]


def _without_smoke(samples: list[Sample]) -> list[float]:
    return [s.seconds - float(json.loads(s.stdout)["smokeTestSeconds"]) for s in samples]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
