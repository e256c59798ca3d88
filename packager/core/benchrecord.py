"""Benchmark results as signed documents attached to the version they measured (pure).

A result says "on this machine, at this time, the bundle NAME@VERSION whose signed
manifest.json has digest D gave these figures". It is an in-toto Statement v1 (subject:
``NAME@VERSION`` with the manifest.json sha256; predicate type :data:`PREDICATE_TYPE`) in
a DSSE envelope inside a Sigstore bundle v0.3, like model.sig, with its own payload type.

The predicate (``https://packager.dev/benchmark/v1``)::

    {"model": NAME, "version": VERSION, "measured": "2026-12-02T13:00:00Z",
     "result": {...}}

``result`` is the JSON of ``packager benchmark --json`` for that model (task, rows,
engines with their latency and quality figures, sizes, machine). Whether a document
counts is decided in :func:`packager.core.verify.accept_benchmark_result`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.digests import Digest
from packager.core.signature import sign_envelope
from packager.core.statements import Form, parse_statement, statement_payload, timestamp

PAYLOAD_TYPE = "application/vnd.packager.benchmark.v1+json"
PREDICATE_TYPE = "https://packager.dev/benchmark/v1"
KIND = "benchmark"
MAX_RESULT_BYTES = 256 << 10
FORM = Form.statement("benchmark result", PREDICATE_TYPE, {"measured", "result"})


@dataclass(frozen=True)
class BenchmarkResult:
    """One signed benchmark of one exact bundle."""

    name: str
    version: str
    manifest_digest: Digest
    measured: datetime
    result: Mapping[str, Any]

    def payload(self) -> bytes:
        """The canonical JSON statement that is signed."""
        predicate = {"measured": timestamp(self.measured), "result": dict(self.result)}
        return statement_payload(
            self.name, self.version, self.manifest_digest, PREDICATE_TYPE, predicate
        )


def sign_result(result: BenchmarkResult, *, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed document's bytes."""
    return sign_envelope(PAYLOAD_TYPE, result.payload(), private_key=private_key)


def parse_result_payload(payload: bytes) -> BenchmarkResult:
    """Parse a benchmark statement (its signature already checked).

    Raises:
        TamperedError: malformed, another predicate type, or a subject that does not
            name the predicate's model and version.
    """
    doc = parse_statement(payload, FORM)
    result = doc.mapping("result", problem="result is not a JSON object")
    return BenchmarkResult(doc.name, doc.version, doc.manifest_digest, doc.time("measured"), result)


@dataclass(frozen=True)
class Entry:
    """One result of one version: verified (``result``, and ``key`` the hint of the key
    that signed it), or not (``problem`` says why; no figures)."""

    version: str
    tag: str
    result: BenchmarkResult | None = None
    key: str | None = None
    problem: str | None = None


# The main quality metric of each task, followed by default.
PRIMARY = {
    "classification": "accuracy",
    "regression": "mae",
    "anomaly": "outlierF1",
    "clustering": "adjustedRand",
}


@dataclass(frozen=True)
class Point:
    """What the history shows of one verified result: the quality metric followed,
    onnxruntime's one-row median and 95th percentile, where and when it was measured."""

    version: str
    measured: datetime
    quality: float | None
    p50_us: float | None
    p95_us: float | None
    cpu: str
    threads: Any
    key: str


@dataclass(frozen=True)
class History:
    """A model's results across versions, the metric followed, and the results that did
    not verify (version, reason)."""

    name: str
    metric: str | None
    points: tuple[Point, ...]
    refused: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, name: str, entries: list[Entry], metric: str | None) -> History:
        verified = [e for e in entries if e.result is not None]
        if metric is None and verified:
            task = verified[0].result.result.get("task") if verified[0].result else None
            metric = PRIMARY.get(str(task))
        points = tuple(_point(e, metric) for e in verified)
        refused = tuple((e.version, e.problem or "") for e in entries if e.result is None)
        return cls(name, metric, points, refused)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "metric": self.metric,
            "results": [
                {
                    "version": p.version,
                    "measured": p.measured.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "quality": p.quality,
                    "oneRowP50Us": p.p50_us,
                    "oneRowP95Us": p.p95_us,
                    "cpu": p.cpu,
                    "threads": p.threads,
                    "key": p.key,
                }
                for p in self.points
            ],
            "refused": [{"version": v, "problem": why} for v, why in self.refused],
        }

    def table(self) -> str:
        lines = [f"{self.name}: {len(self.points)} verified benchmark results"]
        rows = [["version", "measured", self.metric or "quality", "1 row p50", "p95", "machine"]]
        for p in self.points:
            rows.append(
                [
                    p.version,
                    p.measured.strftime("%Y-%m-%d %H:%M"),
                    "-" if p.quality is None else f"{p.quality:.4g}",
                    "-" if p.p50_us is None else f"{p.p50_us:.0f} us",
                    "-" if p.p95_us is None else f"{p.p95_us:.0f} us",
                    f"{p.cpu}, {p.threads} threads, key {p.key[:16]}",
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines += [f"not counted ({v}): {why}" for v, why in self.refused]
        return "\n".join(lines)


def _point(entry: Entry, metric: str | None) -> Point:
    """The figures of a verified entry; anything missing or not a number shows as None."""
    if entry.result is None or entry.key is None:
        raise ValueError("only verified entries have figures")
    doc = entry.result.result
    engines = doc.get("engines")
    runtime: Mapping[str, Any] = {}
    if isinstance(engines, list):
        runtime = next(
            (
                e
                for e in engines
                if isinstance(e, dict) and str(e.get("engine", "")).startswith("onnxruntime")
            ),
            {},
        )
    machine = _mapping(doc.get("machine"))
    one_row = _mapping(runtime.get("oneRow"))
    return Point(
        entry.version,
        entry.result.measured,
        _number(runtime.get(metric or "")),
        _number(one_row.get("p50Us")),
        _number(one_row.get("p95Us")),
        str(machine.get("cpu", "unknown machine")),
        machine.get("threads"),
        entry.key,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
