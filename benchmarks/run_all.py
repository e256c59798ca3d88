"""Every performance benchmark, one table: what `make bench` runs.

    python benchmarks/run_all.py [--runs N] [--keep DIR] [--write BENCHMARKS.md]
                                 [--readme README.md]

Makes the fixtures once (several GiB, in a temporary directory removed afterwards unless
--keep), runs bench_verify, bench_install, bench_pull, bench_memory, bench_startup,
bench_runtime, bench_serve (which needs wrk), bench_benchmark and bench_delta, prints the
table of medians and ratios, and with --write writes it to BENCHMARKS.md with the method,
the machine and, for every target missed, by how much and why; --readme refreshes the
headline figures between the performance markers of the README. Exit status 1 when a
benchmark could not run (a tool missing, say); a target missed is reported, not an error.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import bench_benchmark
import bench_delta
import bench_install
import bench_memory
import bench_pull
import bench_runtime
import bench_serve
import bench_startup
import bench_verify
from harness import Fixtures, Row, fixtures, fmt, print_rows, table

BENCHMARKS: list[tuple[str, Callable[[Fixtures, int], list[Row]]]] = [
    ("1 verify", bench_verify.rows),
    ("2 install", bench_install.rows),
    ("3 OCI pull", bench_pull.rows),
    ("4 memory", bench_memory.rows),
    ("5 start-up", bench_startup.rows),
    ("6 runtime", bench_runtime.rows),
    ("7 serve", bench_serve.rows),
    ("8 benchmark", bench_benchmark.rows),
    ("9 delta", bench_delta.rows),
]
START = "<!-- performance:start -->"
END = "<!-- performance:end -->"

# What bounds each figure: quoted for every target missed.
LIMITS = {
    "1 verify": (
        "SHA-256 is a chain: one file's digest is computed on one core, whatever the "
        "number of cores, at about 1.3 GiB/s here (openssl's own rate). With several "
        "files packager hashes one per core, starting as soon as Python and click are up "
        "and the bundle's files are listed; cryptography and jsonschema-rs (which validates "
        "manifest.json) are imported while the files hash, on a 2-core machine busy "
        "hashing, with the GIL handed to the hashing threads within 0.5 ms. Those starts "
        "and imports are what separates 0.5 x (two cores, no overhead) from the figure "
        "measured."
    ),
    "2 install": (
        "The weights are copied in the kernel (copy_file_range), hashed from the page "
        "cache right behind the copy and written back to disk as they go (sync_file_range "
        "queues the write-back without waiting for it): the install is bound by one core's "
        "SHA-256 plus the fsync of the last MiB."
    ),
    "3 OCI pull": (
        "Layers are received, written and flushed on one thread and hashed on another; "
        "several layers download at once. The registry runs on the same two cores."
    ),
    "4 memory": (
        "Hashing reads 1 MiB of a file at a time into one buffer; copies go through the "
        "kernel; downloads keep at most 8 chunks of 1 MiB in flight; the model is loaded "
        "only in the smoke test's child process."
    ),
    "5 start-up": (
        "`packager` imports click and its own small modules; onnxruntime, numpy, "
        "cryptography, jsonschema-rs and the HTTP client (http.client, ssl) are imported by "
        "the commands that need them."
    ),
    "9 delta": (
        "The unchanged files are hard-linked from the installed version and, their inodes' "
        "fingerprints unchanged since this instance verified them, not hashed again "
        "(docs/adr/0011): only the changed file crosses the network and is hashed. What is "
        "left is Python's start, the signature and manifest checks, that file's transfer "
        "and hash, and the fsync at commit. A file signed by shards: the shards the "
        "installed file holds are copied from it in the kernel and hashed where they land "
        "against the new signed shard digests; only the changed shard is fetched."
    ),
    "6 runtime": (
        "Output names and input dtypes are worked out at load; a 2-D array of the input's "
        "dtype goes to onnxruntime unconverted. What is left is a Python call and a dict. "
        "Weights held as external data stay mapped from their file (target 4): one row "
        "through a MatMul reads each weight once either way, but a batch through it packs "
        "the weights as it runs where onnxruntime's defaults packed them once at load "
        "(twice the memory); `packager.load(name, prepack=True)` makes that trade."
    ),
    "7 serve": (
        "One event loop (uvicorn, httptools, uvloop) parses HTTP for every request, as the "
        "echo server's does, and inference skips Starlette (no Request, routing or "
        "Response objects): what the echo server does not do is the protocol's work, the "
        "JSON parse (orjson, with unique keys proved by counting), the tensors checked and "
        "turned into numpy arrays, the missing-value check, the onnxruntime call and the "
        "answer (orjson). An answer's head and body leave in one write (one segment, one "
        "wake-up of the client; uvicorn alone writes them apart, as the echo server does). "
        "Between two requests other processes use the two cores (wrk "
        "among them): inside a running server that work took about three times the CPU "
        "time it takes in a loop in one process (caches and cores shared); at one client "
        "the forest's onnxruntime call alone took about 30 µs of its answer (measured once, "
        "2026-12-03, by a server answering without it), against about 6 of the µs its "
        "in-process predict takes in a loop: its trees are read again from memory the "
        "other processes used meanwhile. "
        "A model that answered its last request in under 2 ms of CPU runs on the event loop "
        "(a thread hop costs more); slower ones on the inference threads. With "
        "--max-batch-size the requests read in the same turn of the event loop, and in the "
        "next poll of the sockets, run as one onnxruntime call (at 16 clients, nearly every "
        "client's request in each call, against about six with the first turn alone): the "
        "model's cost per run is paid once for them, and the loop's turns and system calls "
        "are shared by more requests; nothing waits for a batch to fill. MLServer's "
        "inference worker is a process of its own."
    ),
    "8 benchmark": (
        "The timing loop is a perf_counter_ns pair and a list append per call; what else "
        "the benchmark costs (loading the model, reading the machine, the metrics) is paid "
        "once per model, not per call."
    ),
}


def machine() -> list[str]:
    """A few lines describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"- {cpu}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB RAM; "
        f"Linux {platform.release()}; Python {platform.python_version()}",
    ]
    versions = []
    for tool, args in (
        ("openssl", ["version"]),
        ("skopeo", ["--version"]),
        ("docker-registry", ["--version"]),
    ):
        path = shutil.which(tool)
        if path is not None:
            done = subprocess.run([path, *args], capture_output=True, text=True, check=False)
            versions.append((done.stdout or done.stderr).strip().splitlines()[0])
    if versions:
        lines.append("- " + "; ".join(versions))
    return lines


def document(rows: Sequence[Row], runs: int, seconds: float) -> str:
    """BENCHMARKS.md."""
    missed = [r for r in rows if not r.ok]
    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({datetime.date.today().isoformat()}, {seconds / 60:.0f} "
        f"min); do not edit by hand. Each figure is the median of {runs} runs (start-up: "
        "at least 20), measured side by side with its reference in the same run: subject "
        "and reference alternate, so a busy moment slows both. Page caches warm. Python "
        "bytecode caches on (in the fixtures' directory), as an installed packager has them: "
        "with PYTHONDONTWRITEBYTECODE=1, as in this project's development environment, "
        "every start compiles packager's modules again, some 10-45 ms more.",
        "",
        *machine(),
        "",
        table(rows),
        "",
    ]
    notes = [f"- {r.target}, {r.what}: {r.note}" for r in rows if r.note]
    if notes:
        parts += ["Notes:", "", *notes, ""]
    if missed:
        parts += ["## Missed", ""]
        for r in missed:
            if r.problem:
                parts.append(f"- {r.target}, {r.what}: {r.problem}.")
                continue
            measured = r.ratio if r.ratio is not None else r.value
            over = (measured / r.limit - 1) * 100
            parts.append(
                f"- {r.target}, {r.what}: {over:.0f}% over the limit "
                f"({f'{measured:.2f}' if r.ratio is not None else fmt(measured, r.unit)} "
                f"against {f'{r.limit:.2f}' if r.ratio is not None else fmt(r.limit, r.unit)})."
                f" {LIMITS.get(r.target, '')}"
            )
        parts.append("")
    parts += [
        "## What bounds each figure",
        "",
        *(f"- **{target}**: {text}" for target, text in LIMITS.items()),
        "",
        "Scripts: `benchmarks/bench_*.py` (each runs alone too, `--keep DIR` reuses the "
        "fixtures), `benchmarks/harness.py` (fixtures, timing, the table), "
        "`benchmarks/rss.py` (peak memory of the CLI process alone). The fixtures and their "
        "making are described in harness.py: a 1 GiB model packaged by `packager package "
        "model.onnx`, a 4 GiB and an eight-file variant derived from it and signed with "
        "the library, and a scikit-learn iris pipeline.",
        "",
        "The install's onnxruntime smoke test runs in a child process: loading a model "
        "takes memory in proportion to its weights (about their size with the weights kept "
        "mapped, twice it with onnxruntime's defaults: target 4's notes), which would "
        "otherwise stay with the installer. Its time and peak memory are reported apart "
        "(`packager install --json`: `smokeTestSeconds`, `smokeTestPeakRss`).",
        "",
    ]
    return "\n".join(parts)


def headline(rows: Sequence[Row]) -> str:
    """The README's short version: one line per target."""
    lines = [START, ""]
    for target, _ in BENCHMARKS:
        found = [r for r in rows if r.target == target]
        if not found:
            continue
        if all(r.unit == "bytes" for r in found):
            peak = fmt(max(r.value for r in found if r.ratio is None), "bytes")
            figures = f"peak RSS at most {peak} (verify, publish, install; 1 and 4 GiB)"
            loaded = [r.ratio for r in found if r.ratio is not None]
            if loaded:
                figures += (
                    f"; a loaded model at most {max(loaded):.2f} x its weights "
                    "(smoke test, packager.load; 1 and 4 GiB)"
                )
        else:
            figures = "; ".join(
                f"{r.what} {fmt(r.value, r.unit)}"
                + ("" if r.ratio is None else f" = {r.ratio:.2f} x {r.reference_what}")
                for r in found
            )
        missed = sum(not r.ok for r in found)
        lines.append(
            f"- **{target[2:]}**: {figures}" + (f" (**{missed} missed**)" if missed else "")
        )
    lines += ["", "Method, machine and every figure: [BENCHMARKS.md](BENCHMARKS.md).", "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command")
    parser.add_argument("--keep", type=Path, help="make and keep the fixtures here")
    parser.add_argument("--write", type=Path, help="write the report (BENCHMARKS.md) here")
    parser.add_argument("--readme", type=Path, help="refresh the README's headline figures")
    args = parser.parse_args(argv)
    start = time.monotonic()
    rows: list[Row] = []
    with fixtures(args.keep) as fx:
        for target, measure in BENCHMARKS:
            print(f"== {target}", file=sys.stderr, flush=True)
            try:
                rows += measure(fx, args.runs)
            except Exception as e:  # one missing tool must not lose the other figures
                rows.append(Row(target, "not measured", 0.0, 0.0, problem=f"not measured: {e}"))
    print_rows(rows)
    if args.write is not None:
        args.write.write_text(document(rows, args.runs, time.monotonic() - start))
    if args.readme is not None:
        text = args.readme.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
        if not pattern.search(text):
            print(f"{args.readme} has no {START} ... {END} section", file=sys.stderr)
            return 2
        args.readme.write_text(pattern.sub(lambda _: headline(rows), text))
    missed = [r for r in rows if not r.ok]
    if missed:
        print(f"{len(missed)} of {len(rows)} targets missed", file=sys.stderr)
    return 1 if any(r.problem.startswith("not measured") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
