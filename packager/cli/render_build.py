"""Output of the build commands (keygen, package, verify, inspect, benchmark); the
shared helpers are in :mod:`packager.cli.render`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager.cli.options import Context
from packager.cli.render import Rendering, line, warn

if TYPE_CHECKING:
    from packager.build.benchmark import Report
    from packager.build.leaderboard import Leaderboard
    from packager.build.resign import Resigned
    from packager.core.benchrecord import History
    from packager.core.manifest import Manifest, TensorSpec
    from packager.core.provenance import ProvenanceSummary
    from packager.core.verify import Statement


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


KEYS: Rendering[KeyPair] = Rendering(
    json=lambda keys: {"privateKey": str(keys.private), "publicKey": str(keys.public)},
    text=lambda ctx, keys: ctx.say(
        f"wrote {keys.private} (keep it secret) and {keys.public} (give it to installers)"
    ),
)


@dataclass(frozen=True)
class Packaged:
    bundle: Path
    manifest: Manifest


def _packaged_json(result: Packaged) -> dict[str, Any]:
    return {
        "bundle": str(result.bundle),
        "name": result.manifest.name,
        "version": result.manifest.version,
        "validation": result.manifest.validation.to_dict(),
        "metrics": dict(result.manifest.metrics or {}),
        "outputs": [t.name for t in result.manifest.model.outputs],
    }


def _packaged_text(ctx: Context, result: Packaged) -> None:
    validation = result.manifest.validation
    ctx.say(
        f"packaged {result.manifest.ref} -> {result.bundle} "
        f"(max abs diff {validation.max_abs_diff:.3g}, {validation.rows} test vectors)"
    )
    if _scores(result.manifest):
        warn(f"{result.manifest.ref}: {SCORES_NOTE}")
    line(str(result.bundle))


# A classifier without predict_proba: what its second output is (packager.build.convert).
SCORES_NOTE = "output 'scores' holds decision scores, not probabilities"


def _scores(manifest: Manifest) -> bool:
    return any(t.name == "scores" for t in manifest.model.outputs)


def bundle_files(manifest: Manifest) -> int:
    """Files in a bundle directory: those manifest.json lists, itself and model.sig."""
    return len(manifest.files) + 2


PACKAGED = Rendering(_packaged_json, _packaged_text)


def _resigned_json(result: Resigned) -> dict[str, Any]:
    return {
        "bundle": str(result.bundle),
        "name": result.manifest.name,
        "version": result.manifest.version,
        "signer": result.signer,
        "serialization": "files" if result.shard_size is None else "shards",
        "shardSize": result.shard_size,
    }


def _resigned_text(ctx: Context, result: Resigned) -> None:
    how = "whole files" if result.shard_size is None else f"shards of {result.shard_size} bytes"
    ctx.say(f"signed {result.manifest.ref} again with key {result.signer[:16]} ({how})")
    line(str(result.bundle))


RESIGNED = Rendering(_resigned_json, _resigned_text)


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    statement: Statement
    revoked_in_policy: bool = False


def revoked_key_warning(name: str, source: str) -> str:
    return (
        f"the --key key that signed it is revoked in {source} (as {name!r}): verified "
        "only because --key trusts exactly the keys given"
    )


def _signed_by(statement: Statement) -> str:
    """``key NAME (HINT)``, or the certificate that vouches for the key."""
    if statement.certificate is not None:
        return statement.certificate
    hint = (statement.signer or "-")[:16]
    name = statement.signer_name()
    return f"key {name} ({hint})" if name is not None else f"key {hint}"


VERIFIED: Rendering[Verified] = Rendering(
    json=lambda result: {
        "verified": True,
        "name": result.manifest.name,
        "version": result.manifest.version,
        "signer": result.statement.signer,
        "signerName": result.statement.signer_name(),
        "certificate": result.statement.certificate,
        "revokedInPolicy": result.revoked_in_policy,
        "files": [f.to_dict() for f in result.manifest.files],
    },
    text=lambda _ctx, result: line(
        f"OK: {result.manifest.ref} verified ({bundle_files(result.manifest)} files), "
        f"signed by {_signed_by(result.statement)}"
    ),
)


def _tensor(spec: TensorSpec) -> str:
    return f"{spec.name}:{spec.dtype}{list(spec.shape or [])}"


def _manifest_text(_ctx: Context, manifest: Manifest) -> None:
    source = manifest.model.source
    val = manifest.validation
    rows = [
        ("name", manifest.name),
        ("version", manifest.version),
        ("created", manifest.created),
        ("source", f"{source.framework} {source.framework_version}: {source.estimator}"),
        ("converter", f"{source.converter} {source.converter_version}"),
        ("opsets", ", ".join(f"{k}={v}" for k, v in sorted(manifest.model.opsets.items()))),
        ("onnxruntime", f">= {manifest.runtime.onnxruntime}"),
        ("inputs", ", ".join(_tensor(t) for t in manifest.model.inputs)),
        (
            "outputs",
            ", ".join(_tensor(t) for t in manifest.model.outputs)
            + (f" ({SCORES_NOTE})" if _scores(manifest) else ""),
        ),
        (
            "validation",
            f"{val.rows} rows, max abs diff {val.max_abs_diff:.3g}, "
            f"rtol {val.rtol:g}, atol {val.atol:g}",
        ),
    ]
    if manifest.license:
        rows.append(("license", manifest.license))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        line(f"{k:<{width}}  {v}")
    line(f"files: {bundle_files(manifest)} (manifest.json, model.sig and these)")
    for f in manifest.files:
        line(f"  {f.path:<24} {f.role:<12} {f.size:>12}  sha256:{f.digest.hex[:16]}…")


MANIFEST: Rendering[Manifest] = Rendering(
    json=lambda manifest: manifest.to_dict(), text=_manifest_text
)


def _provenance_text(_ctx: Context, summary: ProvenanceSummary) -> None:
    line("SLSA provenance (provenance.intoto.json)")
    line(f"  builder      {summary.builder}")
    if summary.invocation:
        line(f"  invocation   {summary.invocation}")
    line(f"  built        {summary.built or '-'}")
    for name, digest in summary.subjects:
        line(f"  subject      {name}  {digest}")
    for key, value in sorted(summary.parameters.items()):
        line(f"  parameter    {key} = {json.dumps(value, sort_keys=True)}")
    for name, ref in summary.dependencies:
        line(f"  depends on   {name}  {ref}")
    line("CycloneDX ML-BOM (sbom.cdx.json)")
    for key, value in summary.model:
        line(f"  {key:<12} {value}")
    for kind, name, version, licences in summary.components:
        line(f"  component    {kind:<8} {name} {version}  licence {licences}")
    for metric, value in summary.metrics:
        line(f"  metric       {metric} = {value}")


PROVENANCE: Rendering[ProvenanceSummary] = Rendering(
    json=lambda s: {
        "builder": s.builder,
        "invocation": s.invocation,
        "built": s.built,
        "subjects": dict(s.subjects),
        "parameters": dict(s.parameters),
        "dependencies": [{"name": n, "ref": r} for n, r in s.dependencies],
        "model": dict(s.model),
        "components": [
            {"type": t, "name": n, "version": v, "licence": lic} for t, n, v, lic in s.components
        ],
        "metrics": dict(s.metrics),
    },
    text=_provenance_text,
)

BENCHMARK: Rendering[Report] = Rendering(
    json=lambda report: report.to_json(),
    text=lambda _ctx, report: click.echo(report.table()),
)


def _lines(_ctx: Context, result: History) -> None:
    for text in result.table().splitlines():
        line(text)


HISTORY: Rendering[History] = Rendering(json=lambda past: past.to_json(), text=_lines)
LEADERBOARD: Rendering[Leaderboard] = Rendering(
    json=lambda board: board.to_json(),
    text=lambda _ctx, board: click.echo(board.table()),
)
