"""What every performance benchmark shares: fixtures, timing, peak memory, the report.

Each ``bench_*.py`` script measures one target against its reference IN THE SAME RUN on
this machine: subject and reference alternate, run after run, so that a busy moment
slows both; the figure kept is the median of the runs. Page caches are warm (a warm-up
run reads every byte first) unless a script says otherwise.

Fixtures are made in a temporary directory and removed afterwards (``--keep DIR``
keeps and reuses them between runs of the scripts):

- ``big-1.0.0``: one model whose 1 GiB initializer is ONNX external data, packaged and
  signed by ``packager package model.onnx`` like any user's model: y = x @ W with W a
  16384 x 16384 float32 matrix, so that every prediction reads every weight;
- ``big4-1.0.0``: the same model with its weights repeated to 4 GiB (four matrices,
  y = ((x @ W0 + x @ W1) + (x @ W2 + x @ W3)) / 4, exactly x @ W), and
  ``eight-1.0.0``: its 1 GiB of weights split over eight 128 MiB files (a ``Concat``
  rebuilds the matrix). ``packager package`` cannot make these two: a model over 2 GiB
  exceeds protobuf's limit in onnx's checker, and packaging writes one data file. So
  they are derived from the first with the library: graph and data files replaced,
  manifest rewritten, signed with packager's signature module. Their answers are the
  first one's, so its test vectors still hold and they install like it;
- ``sharded-1.0.0``: big's graph and 1 GiB data file, signed by shards of 256 MiB (the
  size ``packager package`` picks for larger files), and ``sharded-2.0.0``: the same with
  rows of W swapped within its second shard (answers unchanged, as ``eight-2.0.0``);
- ``iris-1.0.0``: a scikit-learn pipeline, for the runtime benchmark.

Peak memory is the measured process's own high-water mark (VmHWM), without its children:
commands run through ``benchmarks/rss.py``, which runs the CLI in-process and reports
its own peak (the install's smoke test runs in a child process, reported apart).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGER = BIN / "packager"
RSS = Path(__file__).resolve().parent / "rss.py"
PASSWORD = "benchmark-password"
GIB = 1 << 30
MIB = 1 << 20
# The weights: a WIDTH x WIDTH float32 matrix, 1 GiB; one row of it is ROW_BYTES.
WIDTH = 16384
ROW_BYTES = 4 * WIDTH
# The shard size ``packager package`` signs files over 1 GiB with.
SHARD = 256 * MIB


@dataclass
class Sample:
    """One run of a command: wall time, what it printed and, when measured (see
    :func:`packager_self_rss`), its own peak resident set in bytes."""

    seconds: float
    stdout: str
    peak_rss: int = 0


@dataclass
class Row:
    """One line of the report: a figure, its reference and the target it must meet.

    ``value`` and ``reference`` are seconds (or bytes for memory rows, with
    ``unit="bytes"``); ``limit`` is the largest acceptable ratio, or for memory rows
    with no reference the largest acceptable value.
    """

    target: str
    what: str
    value: float
    limit: float
    reference: float | None = None
    reference_what: str = ""
    unit: str = "s"
    note: str = ""
    # A reason the target is missed whatever the figures say (e.g. a forbidden import).
    problem: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.value / self.reference

    @property
    def ok(self) -> bool:
        measured = self.ratio if self.ratio is not None else self.value
        return measured <= self.limit and not self.problem

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
            "reference": self.reference,
            "referenceWhat": self.reference_what,
            "ratio": self.ratio,
            "limit": self.limit,
            "ok": self.ok,
            "note": self.note,
            "problem": self.problem,
        }


def fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / MIB:.0f} MiB"
    if unit == "us":
        return f"{value * 1e6:.1f} µs"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def table(rows: Sequence[Row]) -> str:
    """The report as a Markdown table."""
    lines = [
        "| target | measured | median | reference | median | ratio | limit | met |",
        "|---|---|---:|---|---:|---:|---:|:---:|",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        limit = f"≤ {r.limit:.2f}" if r.reference is not None else f"≤ {fmt(r.limit, r.unit)}"
        reference = "" if r.reference is None else fmt(r.reference, r.unit)
        lines.append(
            f"| {r.target} | {r.what} | {fmt(r.value, r.unit)} | {r.reference_what} | "
            f"{reference} | {ratio} | {limit} | {'yes' if r.ok else '**no**'} |"
        )
    return "\n".join(lines)


def print_rows(rows: Sequence[Row]) -> None:
    print(table(rows))
    for r in rows:
        for text in (r.problem, r.note):
            if text:
                print(f"- {r.target}: {text}")


# --- running commands --------------------------------------------------------------


def run(command: Sequence[str | Path], *, env: Mapping[str, str], check: bool = True) -> Sample:
    """Run ``command``; its wall time and output.

    Raises:
        RuntimeError: it failed and ``check`` is set.
    """
    argv = [str(c) for c in command]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=dict(env))
        process.wait()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if check and process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {process.returncode}: "
                f"{err.read().decode(errors='replace')[-2000:]}"
            )
    return Sample(seconds, stdout)


def packager_self_rss(args: Sequence[str | Path], *, env: Mapping[str, str]) -> Sample:
    """Run ``packager ARGS`` through rss.py: ``peak_rss`` is the CLI process's own peak,
    without the children it started (the install's smoke test)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        sample = run(
            [sys.executable, RSS, report.name, *args], env={**env, "PYTHONPATH": str(ROOT)}
        )
        sample.peak_rss = int(json.loads(Path(report.name).read_text())["peakRss"])
    return sample


def interleave(
    cases: Mapping[str, Callable[[], Sample]],
    *,
    runs: int,
    warmup: int = 1,
    before: Callable[[str], None] | None = None,
) -> dict[str, list[Sample]]:
    """Run every case ``warmup`` times unmeasured, then ``runs`` times measured, the cases
    alternating; ``before(case)`` prepares each run (untimed)."""
    samples: dict[str, list[Sample]] = {name: [] for name in cases}
    for index in range(warmup + runs):
        for name, case in cases.items():
            if before is not None:
                before(name)
            sample = case()
            if index >= warmup:
                samples[name].append(sample)
    return samples


def median(samples: Sequence[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


# --- fixtures ------------------------------------------------------------------------


@dataclass
class Fixtures:
    """Bundles, keys and registries under ``root``; see the module doc."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "keys" / "cosign.key"

    @property
    def pub(self) -> Path:
        return self.root / "keys" / "cosign.pub"

    def env(self, home: Path | None = None) -> dict[str, str]:
        """The environment of every measured command.

        Bytecode caches are allowed (into a directory of the fixtures'): an installed
        packager has them, and compiling its modules on every start would be measured
        otherwise.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        env["PACKAGER_KEY_PASSWORD"] = PASSWORD
        env.pop("PACKAGER_REGISTRY", None)
        if home is not None:
            env["PACKAGER_HOME"] = str(home)
        return env

    def bundle(self, name: str) -> Path:
        return self.root / "dist" / f"{name}-1.0.0"

    def keys(self) -> None:
        if not self.pub.exists():
            run([PACKAGER, "keygen", "-o", self.root / "keys"], env=self.env())

    def big(self) -> Path:
        """The 1 GiB bundle, packaged by ``packager package``."""
        bundle = self.bundle("big")
        if bundle.exists():
            return bundle
        self.keys()
        source = self.root / "source"
        source.mkdir(parents=True, exist_ok=True)
        rows = GIB // ROW_BYTES
        _write_weights(source / "model.onnx.data", rows)
        _write_graph(source / "model.onnx", [("model.onnx.data", rows)])
        rng_rows = [[0.5 + ((i * 7 + j) % 13) * 0.01 for j in range(WIDTH)] for i in range(8)]
        (source / "sample.csv").write_text(
            ",".join(f"c{j}" for j in range(WIDTH))
            + "\n"
            + "".join(",".join(f"{v:.2f}" for v in r) + "\n" for r in rng_rows)
        )
        # onnx refuses to write external data named like a file in the working directory.
        run(
            [
                PACKAGER, "-q", "package", source / "model.onnx", "--name", "big",
                "--version", "1.0.0", "--sample", source / "sample.csv", "--key", self.key,
                "-o", self.root / "dist",
            ],
            env=self.env(),
        )  # fmt: skip
        shutil.rmtree(source)
        return bundle

    def big4(self) -> Path:
        """The 4 GiB bundle: big's weights four times over."""
        bundle = self.bundle("big4")
        if bundle.exists():
            return bundle
        base = self.big()
        rows = GIB // ROW_BYTES
        work = _fresh(self.root / "dist" / ".big4")
        data = work / "model.onnx.data"
        with open(base / "model.onnx.data", "rb") as src, open(data, "wb") as dst:
            for _ in range(4):
                _copy_range(src.fileno(), dst.fileno(), 0, GIB)
        _write_graph(work / "model.onnx", [("model.onnx.data", rows)], copies=4)
        _derive(base, work, "big4", self.key)
        work.rename(bundle)
        return bundle

    def eight(self) -> Path:
        """The 1 GiB of weights of big as eight files of 128 MiB."""
        bundle = self.bundle("eight")
        if bundle.exists():
            return bundle
        base = self.big()
        rows = GIB // ROW_BYTES
        part = rows // 8
        work = _fresh(self.root / "dist" / ".eight")
        parts = [(f"weights-{i}.data", part) for i in range(8)]
        with open(base / "model.onnx.data", "rb") as src:
            for i, (path, _) in enumerate(parts):
                with open(work / path, "wb") as dst:
                    _copy_range(src.fileno(), dst.fileno(), i * part * ROW_BYTES, part * ROW_BYTES)
        _write_graph(work / "model.onnx", parts)
        _derive(base, work, "eight", self.key)
        work.rename(bundle)
        return bundle

    def eight_next(self) -> Path:
        """Version 2.0.0 of ``eight``: one of its eight weight files changed (in a way that
        keeps the model's answers, so the test vectors still hold), the seven others the
        same bytes."""
        bundle = self.root / "dist" / "eight-2.0.0"
        if bundle.exists():
            return bundle
        base = self.eight()
        work = _fresh(self.root / "dist" / ".eight-next")
        for path in bundle_files(base):
            if path.name.endswith(".data") or path.name == "model.onnx":
                with open(path, "rb") as src, open(work / path.name, "wb") as dst:
                    _copy_range(src.fileno(), dst.fileno(), 0, path.stat().st_size)
        _swap_rows(work / "weights-1.data", 0)
        _derive(base, work, "eight", self.key, version="2.0.0")
        work.rename(bundle)
        return bundle

    def sharded(self) -> Path:
        """big's model signed by shards of 256 MiB, as ``sharded`` 1.0.0."""
        bundle = self.root / "dist" / "sharded-1.0.0"
        if bundle.exists():
            return bundle
        base = self.big()
        work = _fresh(self.root / "dist" / ".sharded")
        for name in ("model.onnx", "model.onnx.data"):
            with open(base / name, "rb") as src, open(work / name, "wb") as dst:
                _copy_range(src.fileno(), dst.fileno(), 0, (base / name).stat().st_size)
        _derive(base, work, "sharded", self.key, shard_size=SHARD)
        work.rename(bundle)
        return bundle

    def sharded_next(self) -> Path:
        """``sharded`` 2.0.0: one shard of its 1 GiB file changed, keeping its answers."""
        bundle = self.root / "dist" / "sharded-2.0.0"
        if bundle.exists():
            return bundle
        base = self.sharded()
        work = _fresh(self.root / "dist" / ".sharded-next")
        for name in ("model.onnx", "model.onnx.data"):
            with open(base / name, "rb") as src, open(work / name, "wb") as dst:
                _copy_range(src.fileno(), dst.fileno(), 0, (base / name).stat().st_size)
        _swap_rows(work / "model.onnx.data", SHARD)
        _derive(base, work, "sharded", self.key, version="2.0.0", shard_size=SHARD)
        work.rename(bundle)
        return bundle

    def iris(self) -> Path:
        """PACKAGER_HOME with a scikit-learn iris pipeline installed as ``iris``."""
        home = self.root / "iris-home"
        if (home / "models" / "iris" / "current").exists():
            return home
        self.keys()
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from packager._io.keys import load_private_key
        from packager.build.api import package

        x, y = load_iris(return_X_y=True)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
        key = load_private_key(self.key, password=lambda: PASSWORD.encode())
        bundle = package(
            model, sample=x[::5], name="iris", version="1.0.0", key=key, out_dir=self.root / "dist"
        )
        registry = self.layout(bundle)
        run(
            [PACKAGER, "-q", "install", "iris@1.0.0", "--registry", registry, "--key", self.pub],
            env=self.env(home),
        )
        return home

    def layout(self, bundle: Path) -> Path:
        """An embedded registry holding ``bundle``."""
        registry = self.root / "registries" / bundle.name
        if not registry.exists():
            run([PACKAGER, "-q", "publish", bundle, "--registry", registry], env=self.env())
        return registry


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        moved = os.copy_file_range(src, dst, length - done, offset + done)
        if moved == 0:
            raise OSError("short copy")
        done += moved


def _swap_rows(path: Path, offset: int) -> None:
    """Swap the 13 rows of W from byte ``offset`` of ``path`` with the 13 after them. The
    sample's columns j and j + 13 hold the same values (see big), so x @ W stays the same
    but for the order of its sums, within the test vectors' tolerance."""
    with open(path, "r+b") as f:
        f.seek(offset)
        first, second = f.read(13 * ROW_BYTES), f.read(13 * ROW_BYTES)
        f.seek(offset)
        f.write(second + first)


def _write_weights(path: Path, rows: int) -> None:
    """``rows`` x WIDTH float32 in [0, 1): pseudo-random, the same every time."""
    import numpy as np

    rng = np.random.default_rng(0)
    block = rng.random(16 * MIB // 4, dtype=np.float32)
    with open(path, "wb") as f:
        left = rows * ROW_BYTES
        round_ = 0
        while left:
            # Every block differs from the others: a whole file of one repeated block
            # would be a poor stand-in for weights.
            data = (block + np.float32(round_ * 1e-3)).tobytes()[:left]
            f.write(data)
            left -= len(data)
            round_ += 1


def _write_graph(path: Path, parts: Sequence[tuple[str, int]], *, copies: int = 1) -> None:
    """y = x @ W, where W is float32 [rows, WIDTH] (rows: the rows of 1 GiB) held as
    external data in ``parts`` (file, rows), concatenated when there are several. With
    ``copies`` (1, 2 or 4) the one file holds W that many times over, and y is their mean,
    summed pairwise: exactly x @ W, since every sum doubles and the mean halves exactly."""
    from onnx import TensorProto, helper, save

    def weights(name: str, location: str, count: int, offset: int) -> TensorProto:
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[count, WIDTH])
        tensor.data_location = TensorProto.EXTERNAL
        entries = (("location", location), ("offset", offset), ("length", count * ROW_BYTES))
        for key, value in entries:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        return tensor

    nodes = []
    if copies > 1:
        location, count = parts[0]
        initializers = [weights(f"w{i}", location, count, i * GIB) for i in range(copies)]
        terms = [f"w{i}" for i in range(copies)]
        nodes += [helper.make_node("MatMul", ["x", w], [f"y{w}"]) for w in terms]
        sums = [f"y{w}" for w in terms]
        while len(sums) > 1:
            pairs = list(zip(sums[::2], sums[1::2], strict=True))
            nodes += [helper.make_node("Add", [a, b], [f"{a}+{b}"]) for a, b in pairs]
            sums = [f"{a}+{b}" for a, b in pairs]
        initializers.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / copies]))
        nodes.append(helper.make_node("Mul", [sums[0], "scale"], ["y"]))
    else:
        names = ["w"] if len(parts) == 1 else [f"w{i}" for i in range(len(parts))]
        initializers = [
            weights(name, location, count, 0)
            for name, (location, count) in zip(names, parts, strict=True)
        ]
        if len(parts) > 1:
            nodes.append(helper.make_node("Concat", names, ["w"], axis=0))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def _derive(
    base: Path,
    work: Path,
    name: str,
    key_path: Path,
    version: str = "1.0.0",
    shard_size: int | None = None,
) -> None:
    """Complete ``work`` (new graph and data files already there) into a signed bundle
    ``name``@``version``, with ``base``'s test vectors and manifest otherwise; signed by
    shards of ``shard_size`` if given, else as ``packager package`` chooses."""
    from packager._io.hashing import digest_files
    from packager._io.keys import load_private_key
    from packager.build.bundle import shard_digests
    from packager.core import signature
    from packager.core.digests import Digest
    from packager.core.manifest import (
        MANIFEST,
        SIGNATURE,
        FileEntry,
        parse_manifest,
        validate_document,
    )

    shutil.copyfile(base / "testvectors.npz", work / "testvectors.npz")
    roles = {p.name: "weights" for p in work.iterdir() if p.name.endswith(".data")}
    roles |= {"model.onnx": "model", "testvectors.npz": "testvectors"}
    paths = sorted(roles)
    files = tuple(
        FileEntry(path, digest, size, roles[path])
        for path, (digest, size) in zip(paths, digest_files(work / p for p in paths), strict=True)
    )
    manifest = replace(
        parse_manifest((base / MANIFEST).read_bytes()), name=name, version=version, files=files
    )
    validate_document(manifest.to_dict())
    manifest_bytes = manifest.to_bytes()
    (work / MANIFEST).write_bytes(manifest_bytes)
    resources = {f.path: f.digest for f in files}
    resources[MANIFEST] = Digest.of(manifest_bytes)
    key = load_private_key(key_path, password=lambda: PASSWORD.encode())
    # Signed as `packager package` signs: by shards when a file is over the threshold.
    chosen, shards = shard_digests(work, resources, shard_size)
    sig = signature.sign(
        subject_name=f"{name}-{version}",
        resources=resources,
        private_key=key,
        shard_size=chosen,
        shards=shards,
    )
    (work / SIGNATURE).write_bytes(sig)


@contextmanager
def fixtures(keep: Path | None) -> Iterator[Fixtures]:
    """Fixtures in ``keep`` (kept afterwards), or in a temporary directory (removed)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield Fixtures(keep.resolve())
        return
    root = Path(tempfile.mkdtemp(prefix="packager-bench-"))
    try:
        yield Fixtures(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def oci_registry(directory: Path) -> Iterator[str]:
    """``docker-registry serve`` on 127.0.0.1 (a free port); yields ``host:port``.

    Raises:
        RuntimeError: docker-registry is not installed or does not answer.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{probe.getsockname()[1]}"
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": host, "secret": uuid.uuid4().hex},
    }
    (directory / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(directory / "registry.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(directory / "config.yml")], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"docker-registry did not start on {host}") from None
                time.sleep(0.05)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


def warm(*paths: Path) -> None:
    """Read every file under ``paths`` once, so that the page cache holds them."""
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            with open(f, "rb") as handle:
                while handle.read(8 * MIB):
                    pass


def bundle_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.iterdir() if p.is_file())


def standalone(
    doc: str, run_rows: Callable[[Fixtures, int], list[Row]], argv: list[str] | None = None
) -> int:
    """The ``main`` of a bench script: parse --runs/--keep/--json, run, print."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command")
    parser.add_argument("--keep", type=Path, help="make and keep the fixtures here")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    with fixtures(args.keep) as fx:
        rows = run_rows(fx, args.runs)
    print_rows(rows)
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2))
    return 0 if all(r.ok for r in rows) else 1
