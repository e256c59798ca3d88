"""Target 9: delta upgrades, by files and by shards.

``eight`` 1.0.0 holds 1 GiB of weights in eight files of 128 MiB; 2.0.0 changes one of
them. Upgrading an instance that has 1.0.0 must transfer at most 1/8 of the bytes of a full
install of 2.0.0 plus 1 MiB, and take at most 0.25 x its time.

``sharded`` 1.0.0 holds its 1 GiB of weights in one file signed by shards of 256 MiB;
2.0.0 changes one shard. Upgrading an instance that has 1.0.0 must transfer at most
256 MiB + 1 MiB (the shards it holds are copied from the installed file and checked
against the new signed shard digests).

    python benchmarks/bench_delta.py [--runs N] [--keep DIR]

Both versions are served by a static web server on 127.0.0.1 (a static mirror of the
registry directory, answering single ``Range`` requests as nginx does), which counts the
bytes of every response. The reference is the full install of 2.0.0 into an empty
PACKAGER_HOME, alternating with the upgrade (an instance with 1.0.0 installed, made anew
before each run, untimed, then 2.0.0 installed). Both figures leave out the onnxruntime
smoke test (child process), as target 2 does: it loads the same model either way; the
whole installs are in the note.
"""

from __future__ import annotations

import json
import re
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

from harness import MIB, PACKAGER, SHARD, Fixtures, Row, Sample, interleave, run, standalone, warm

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class _Counting(SimpleHTTPRequestHandler):
    """Python's static file server, adding up the bytes it sends; it answers a single
    ``Range: bytes=A-B`` with 206 and those bytes, as static web servers do."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        found = _RANGE.fullmatch(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if found is None or not path.is_file():
            self._range = None
            return super().send_head()
        size = path.stat().st_size
        start, end = int(found[1]), min(int(found[2]), size - 1)
        if start > end:
            self.send_error(416)
            return None
        source = open(path, "rb")  # noqa: SIM115 (closed by the caller, as send_head's is)
        source.seek(start)
        self._range = end + 1 - start
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._range))
        self.end_headers()
        return source

    def copyfile(self, source: Any, outputfile: Any) -> None:
        counter: list[int] = self.server.sent  # type: ignore[attr-defined]
        left = self._range
        while chunk := source.read(MIB if left is None else min(MIB, left)):
            outputfile.write(chunk)
            counter[0] += len(chunk)
            if left is not None:
                left -= len(chunk)


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


def _upgrades(
    fx: Fixtures, name: str, bundles: tuple[Path, Path], runs: int
) -> tuple[dict[str, list[Sample]], dict[str, float]]:
    """Full installs of ``name`` 2.0.0 alternating with upgrades to it from 1.0.0, both from
    a static mirror of a registry holding ``bundles``: the samples of each and the median
    bytes the mirror sent for each."""
    site = fx.root / f"{name}-site"
    registry = site / "registry"
    if not registry.exists():
        for bundle in bundles:
            run([PACKAGER, "-q", "publish", bundle, "--registry", registry], env=fx.env())
    warm(registry)
    full_home, upgrade_home = fx.root / f"{name}-full", fx.root / f"{name}-upgrade"
    shutil.rmtree(upgrade_home, ignore_errors=True)
    sent: dict[str, list[int]] = {"full": [], "upgrade": []}
    with mirror(site) as (url, counter):
        install = [PACKAGER, "-q", "install", "--registry", url, "--key", fx.pub, "--json"]

        def before(case: str) -> None:
            if case == "full":
                shutil.rmtree(full_home, ignore_errors=True)
            else:
                # An instance that runs 1.0.0, as installed (untimed). Removing 2.0.0 instead
                # would move the ctime of the files it shares with 1.0.0, and the next
                # upgrade would rightly hash them again (ADR 0011).
                shutil.rmtree(upgrade_home, ignore_errors=True)
                run([*install, f"{name}@1.0.0"], env=fx.env(upgrade_home))
            counter[0] = 0

        def measured(case: str, home: Path) -> Sample:
            sample = run([*install, f"{name}@2.0.0"], env=fx.env(home))
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
    return samples, {case: statistics.median(sent[case][-runs:]) for case in sent}


def rows(fx: Fixtures, runs: int) -> list[Row]:
    return _by_files(fx, runs) + _by_shards(fx, runs)


def _by_files(fx: Fixtures, runs: int) -> list[Row]:
    samples, sent = _upgrades(fx, "eight", (fx.eight(), fx.eight_next()), runs)
    seconds = {case: _without_smoke(s) for case, s in samples.items()}
    whole = {case: statistics.median(s.seconds for s in ss) for case, ss in samples.items()}
    reused = _files(samples["upgrade"][-1])
    return [
        Row(
            "9 delta",
            "bytes sent by the mirror for the upgrade 1.0.0 -> 2.0.0 (1 of 8 files changed)",
            sent["upgrade"],
            (sent["full"] / 8 + MIB) / sent["full"],
            sent["full"],
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
                f"full {whole['full']:.2f} s; files of the upgrade reused unhashed (their "
                f"inodes' fingerprints unchanged since verified): "
                f"{len(reused['reusedByFingerprint'])}, hashed again: "
                f"{len(reused['reusedHashed'])}, fetched: {len(reused['fetched'])}"
            ),
        ),
    ]


def _by_shards(fx: Fixtures, runs: int) -> list[Row]:
    samples, sent = _upgrades(fx, "sharded", (fx.sharded(), fx.sharded_next()), runs)
    seconds = {case: _without_smoke(s) for case, s in samples.items()}
    return [
        Row(
            "9 delta",
            "bytes sent by the mirror for the upgrade 1.0.0 -> 2.0.0 (1 GiB file signed by "
            "256 MiB shards, 1 shard changed)",
            sent["upgrade"],
            (SHARD + MIB) / sent["full"],
            sent["full"],
            "bytes of a full install of 2.0.0",
            unit="bytes",
            note=(
                "limit: 256 MiB + 1 MiB; without the smoke test, upgrade "
                f"{statistics.median(seconds['upgrade']):.2f} s, full install "
                f"{statistics.median(seconds['full']):.2f} s"
            ),
        ),
    ]


def _files(sample: Sample) -> dict[str, list[str]]:
    files: dict[str, list[str]] = json.loads(sample.stdout)["files"]
    return files


def _without_smoke(samples: list[Sample]) -> list[float]:
    return [s.seconds - float(json.loads(s.stdout)["smokeTestSeconds"]) for s in samples]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
