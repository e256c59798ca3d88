"""Build-side commands: keygen, package, sign, verify, inspect, benchmark."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from packager.build.options import DEFAULT_BUDGET_SECONDS, ConvertOptions, PackageOptions
from packager.cli import render, render_build
from packager.cli.build_options import conversion_options, package_options, shard_size
from packager.cli.options import (
    DIRECTORY,
    FILE,
    Context,
    cert_chain_option,
    json_option,
    key_option,
    labelled_rows_options,
    load_signing_key,
    now,
    open_registry_at,
    option_group,
    output_option,
    pass_ctx,
    registry_option,
    remote_options,
    rows_option,
    signing_key_option,
    with_pinned_root,
)
from packager.errors import GateFailedError, UsageError

if TYPE_CHECKING:
    from packager.build.benchmark import Report
    from packager.build.options import Settings
    from packager.core.benchstats import Limit


@click.command()
@output_option(Path("."), "Directory for cosign.key and cosign.pub.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@json_option
@pass_ctx
def keygen(ctx: Context, out_dir: Path, force: bool, as_json: bool) -> None:
    """Write a cosign-compatible key pair (ECDSA P-256): cosign.key and cosign.pub.

    The password comes from PACKAGER_KEY_PASSWORD, then COSIGN_PASSWORD, then a prompt.
    """
    from packager._io.keys import keygen as make_keys
    from packager._io.keys import password_from_environment

    key, pub = make_keys(out_dir, password=password_from_environment(confirm=True), force=force)
    render.show(ctx, render_build.KEYS, render_build.KeyPair(key, pub), as_json=as_json)


@dataclass(frozen=True)
class _Rows:
    """What every model runs on, and how it is measured."""

    data_path: Path | None
    target: str | None
    threads: int
    time_budget: float


@dataclass(frozen=True)
class _Gate:
    """The baseline, the limits and the report files of a gate."""

    baseline: str | None
    max_drop: tuple[str, ...]
    max_ratio: tuple[str, ...]
    junit: Path | None
    metrics_file: Path | None


@dataclass(frozen=True)
class _Source:
    """Where NAME[@VERSION|@CHANNEL] references come from and which keys to trust."""

    registry_ref: str | None
    key_paths: tuple[Path, ...]


_rows_options = option_group(
    "rows",
    _Rows,
    *labelled_rows_options(
        "--data",
        "data_path",
        help="Rows to run (.csv with header, .npy, .json), with --target the true answers "
        "(default for a bundle or installed model: its test vectors).",
        target_help="Column holding the true answers (class or value).",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help="onnxruntime intra-op threads (0: onnxruntime's default).",
    ),
    click.option(
        "--time-budget",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_BUDGET_SECONDS,
        show_default=True,
        metavar="SECONDS",
        help="At most this long per latency figure (fewer calls once the median is stable).",
    ),
)
_gate_options = option_group(
    "gate",
    _Gate,
    click.option("--baseline", metavar="REF", help="Gate the first model against this one."),
    click.option(
        "--max-drop",
        multiple=True,
        metavar="METRIC=X",
        help="Gate: METRIC may worsen by at most X (e.g. accuracy=0.01); repeatable.",
    ),
    click.option(
        "--max-ratio",
        multiple=True,
        metavar="METRIC=X",
        help="Gate: candidate/baseline at most X (e.g. latency_p95=1.2); repeatable.",
    ),
    click.option("--junit", type=FILE, help="Write the gate as a JUnit XML report."),
    click.option("--metrics", "metrics_file", type=FILE, help="Write OpenMetrics text."),
)
_source_options = option_group("source", _Source, registry_option, key_option(required=False))


@click.command("benchmark")
@click.argument("refs", nargs=-1, required=True, metavar="MODEL_OR_BUNDLE_OR_NAME...")
@_rows_options
@_gate_options
@click.option(
    "--publish",
    "publish_key",
    type=FILE,
    metavar="KEY",
    help="Sign the first model's result with KEY (cosign.key) and attach it to its version "
    "in --registry.",
)
@click.option("--metric", help="history: the quality metric to follow (default the task's).")
@click.option(
    "--chart",
    type=FILE,
    help="Write a PNG chart (needs onnx-packager[plot]).",
)
@_source_options
@remote_options
@conversion_options
@json_option
@pass_ctx
def benchmark_cmd(
    ctx: Context,
    refs: tuple[str, ...],
    rows: _Rows,
    gate: _Gate,
    publish_key: Path | None,
    metric: str | None,
    chart: Path | None,
    source: _Source,
    conversion: ConvertOptions,
    as_json: bool,
) -> None:
    """Quality, latency, memory and size of models on the same rows, side by side.

    Each MODEL is a model file (scikit-learn, XGBoost, LightGBM, PyTorch, .onnx: the
    original framework is measured against onnxruntime), a bundle directory, or
    NAME[@VERSION|@CHANNEL]: from --registry when given (fetched and verified, trusted
    keys as for install), else the installed model. A bundle's signature is not checked
    here (use `packager verify`).

    With --baseline REF, the first MODEL is gated against REF on --max-drop and
    --max-ratio limits: exit code 6 when a limit is exceeded beyond the measurement
    noise (the 95% bootstrap interval lies past it). On an installed model or bundle,
    latency much slower than the figures recorded at packaging is reported as a warning.

    --publish KEY signs the first model's result (an in-toto statement) and attaches it
    to that version in --registry; `packager benchmark history NAME [--metric M]
    [--chart PNG]` shows the verified results of every version of NAME there.
    """
    from packager.build.options import Settings
    from packager.core.benchstats import parse_limits

    if refs[0] == "history" and not Path("history").exists():
        if len(refs) != 2:
            raise UsageError("usage: packager benchmark history NAME [--metric M] [--chart PNG]")
        _history(ctx, refs[1], source, (metric, chart), as_json)
        return
    baseline = gate.baseline
    limits = parse_limits(gate.max_drop, gate.max_ratio)
    if limits and baseline is None:
        raise UsageError("--max-drop and --max-ratio need --baseline")
    settings = Settings(threads=rows.threads, budget_seconds=rows.time_budget)
    with tempfile.TemporaryDirectory(prefix="packager-bench-") as tmp:
        locate = _locator(ctx, source, Path(tmp))
        measure = _Measure(rows.data_path, rows.target, settings, conversion)
        located = [locate(ref) for ref in refs]
        reports = [measure(path, ref) for path, ref in zip(located, refs, strict=True)]
        base = None if baseline is None else measure(locate(baseline), baseline)
        if publish_key is not None:
            _publish(ctx, located[0], reports[0], publish_key, source.registry_ref)
    for report in (*reports, *([] if base is None else [base])):
        for slower in report.slower:
            render.warn(slower)
    if len(reports) == 1 and base is None and not (gate.junit or gate.metrics_file):
        _single(ctx, reports[0], chart, as_json)
        return
    # On a leaderboard each model is named as it was given.
    reports = [replace(r, model=ref) for r, ref in zip(reports, refs, strict=True)]
    if base is not None and baseline is not None:
        base = replace(base, model=baseline)
    _board(ctx, reports, base, limits, (chart, gate.junit, gate.metrics_file), as_json)


class _Measure:
    """Benchmark one located model on the command's data and settings."""

    def __init__(
        self,
        data_path: Path | None,
        target: str | None,
        settings: Settings,
        conversion: ConvertOptions,
    ) -> None:
        from packager._io.table import read_table

        self.data = None if data_path is None else read_table(data_path)
        self.target, self.settings, self.conversion = target, settings, conversion
        if data_path is None and target is not None:
            raise UsageError("--target names a column of --data; give --data")

    def __call__(self, path: Path, ref: str) -> Report:
        from packager.build.benchmark import benchmark_reference

        return benchmark_reference(
            str(path),
            self.data,
            target=self.target,
            settings=self.settings,
            conversion=self.conversion,
        )


def _locator(ctx: Context, source: _Source, tmp: Path) -> Callable[[str], Path]:
    """REF to a path: itself when it exists; else from --registry (verified) when given;
    else the installed model."""
    from packager.instance.models import model_path

    def locate(ref: str) -> Path:
        if Path(ref).exists() or source.registry_ref is None:
            return model_path(ref, home=ctx.home)
        return _fetch(ctx, ref, source, tmp)

    return locate


def _fetch(ctx: Context, ref: str, source: _Source, tmp: Path) -> Path:
    """Pull NAME[@VERSION|@CHANNEL] from the registry into ``tmp``, verified."""
    from packager.core.names import parse_target
    from packager.distribution.pull import pull
    from packager.instance.roots import instance_policy
    from packager.instance.store import Store

    target = parse_target(ref)
    policy = instance_policy(home=ctx.home, trust_file=ctx.trust_file, key_paths=source.key_paths)
    registry = open_registry_at(ctx, source.registry_ref)
    mode = with_pinned_root(ctx, policy, registry, target.name)
    out = tmp / str(len(list(tmp.iterdir())))
    # The instance's last accepted document of the channel: an older one is a replay.
    channel = target.channel
    seen = None if channel is None else Store(ctx.home).channel_seen(target.name, channel)
    return pull(
        ref, registry=registry, mode=mode, out_dir=out, now=now(), progress=ctx.say, last_seen=seen
    )


def _publish(
    ctx: Context, path: Path, report: Report, key_path: Path, registry_ref: str | None
) -> None:
    """Sign ``report`` and attach it to the measured bundle's version in the registry."""
    from packager._io.bundledir import read_manifest_unverified
    from packager.core.digests import Digest
    from packager.core.manifest import MANIFEST
    from packager.distribution.benchresults import publish_result

    if not path.is_dir():
        raise UsageError(
            "--publish attaches a result to a version: benchmark a bundle, an installed "
            "model or a registry version first"
        )
    manifest = read_manifest_unverified(path)
    published = publish_result(
        report.to_json(),
        name=manifest.name,
        version=manifest.version,
        manifest_digest=Digest.of((path / MANIFEST).read_bytes()),
        registry=open_registry_at(ctx, registry_ref, writing=True),
        private_key=load_signing_key(key_path),
        now=now(),
    )
    ctx.say(f"published the result beside {published.ref} in {published.location}")


def _history(
    ctx: Context,
    name: str,
    source: _Source,
    view: tuple[str | None, Path | None],
    as_json: bool,
) -> None:
    from packager.build.benchreport import write_history_chart
    from packager.core.benchrecord import History
    from packager.distribution.benchresults import history
    from packager.instance.roots import instance_policy

    policy = instance_policy(home=ctx.home, trust_file=ctx.trust_file, key_paths=source.key_paths)
    registry = open_registry_at(ctx, source.registry_ref)
    entries = history(registry, name, with_pinned_root(ctx, policy, registry, name).policy)
    metric, chart = view
    past = History.of(name, entries, metric)
    if chart is not None:
        write_history_chart(past, chart)
        ctx.say(f"wrote {chart}")
    render.show(ctx, render_build.HISTORY, past, as_json=as_json)


def _single(ctx: Context, report: Report, chart: Path | None, as_json: bool) -> None:
    from packager.build.benchmark import write_chart

    if chart is not None:
        write_chart(report, chart)
        ctx.say(f"wrote {chart}")
    render.show(ctx, render_build.BENCHMARK, report, as_json=as_json)


def _board(
    ctx: Context,
    reports: list[Report],
    base: Report | None,
    limits: tuple[Limit, ...],
    files: tuple[Path | None, Path | None, Path | None],
    as_json: bool,
) -> None:
    """The leaderboard: shown, written to the files asked for, then the gate's verdict."""
    from packager._io.fs import atomic_write
    from packager.build.benchreport import junit_xml, openmetrics, write_leaderboard_chart
    from packager.build.leaderboard import leaderboard

    board = leaderboard(reports, baseline=base, limits=limits)
    chart, junit, metrics_file = files
    if chart is not None:
        write_leaderboard_chart(board, chart)
        ctx.say(f"wrote {chart}")
    for path, data in ((junit, junit_xml(board)), (metrics_file, openmetrics(board).encode())):
        if path is not None:
            try:
                atomic_write(path, data)
            except OSError as e:
                raise UsageError(f"cannot write {path}: {e.strerror}") from e
            ctx.say(f"wrote {path}")
    render.show(ctx, render_build.LEADERBOARD, board, as_json=as_json)
    if board.failed:
        failed = "; ".join(v.message for v in board.failed)
        raise GateFailedError(f"benchmark gate failed: {failed}")


@click.command("package")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path, exists=True))
@click.option("--name", required=True, help="Model name, e.g. iris-classifier.")
@click.option("--version", "version", required=True, help="SemVer version, e.g. 1.2.0.")
@rows_option(
    "--sample",
    help="Sample input rows (.csv with header, .npy, .json): checked and kept as test vectors.",
)
@signing_key_option
@cert_chain_option
@output_option(Path("dist"))
@package_options
@click.option("--force", is_flag=True, help="Replace OUTPUT/NAME-VERSION if it exists.")
@json_option
@pass_ctx
def package_cmd(
    ctx: Context,
    model_path: Path,
    name: str,
    version: str,
    sample: Path,
    key_path: Path,
    cert_chain: Path | None,
    out_dir: Path,
    options: PackageOptions,
    force: bool,
    as_json: bool,
) -> None:
    """Convert MODEL to a signed ONNX bundle in OUTPUT/NAME-VERSION (an existing one is
    refused unless --force).

    MODEL: a pickle/joblib scikit-learn, XGBoost or LightGBM model; a PyTorch
    module (.pt/.pth: TorchScript, or torch.save of the whole module, which is
    unpickled: only package files you trust); or an .onnx file.
    """
    from packager._io.bundledir import read_manifest_unverified
    from packager.build.api import package

    bundle = package(
        model_path,
        sample=sample,
        name=name,
        version=version,
        key=key_path,
        out_dir=out_dir,
        options=replace(options, overwrite=force),
        progress=ctx.say,
        certificate_chain=cert_chain,
    )
    packaged = render_build.Packaged(bundle, read_manifest_unverified(bundle))
    render.show(ctx, render_build.PACKAGED, packaged, as_json=as_json)


@click.command()
@click.argument("bundle", type=DIRECTORY)
@click.option(
    "--provenance",
    "show_provenance",
    is_flag=True,
    help="Show the SLSA provenance and the CycloneDX ML-BOM instead of the manifest.",
)
@click.option("--sbom-out", type=FILE, help="Write the CycloneDX ML-BOM (JSON) to this file.")
@click.option(
    "--provenance-out", type=FILE, help="Write the SLSA provenance statement to this file."
)
@json_option
@pass_ctx
def inspect(
    ctx: Context,
    bundle: Path,
    show_provenance: bool,
    sbom_out: Path | None,
    provenance_out: Path | None,
    as_json: bool,
) -> None:
    """Show a bundle's manifest, or its provenance (not a verification: use `packager
    verify`, which checks that model.sig covers every file, these included)."""
    from packager._io.bundledir import read_manifest_unverified, read_provenance_unverified

    if not (show_provenance or sbom_out or provenance_out):
        render.show(ctx, render_build.MANIFEST, read_manifest_unverified(bundle), as_json=as_json)
        return
    from packager._io.fs import atomic_write
    from packager.core.provenance import summarise

    slsa, sbom = read_provenance_unverified(bundle)
    summary = summarise(slsa, sbom)
    for out, data in ((sbom_out, sbom), (provenance_out, slsa)):
        if out is not None:
            atomic_write(out, data, mode=0o644)
            ctx.say(f"wrote {out}")
    if show_provenance:
        render.show(ctx, render_build.PROVENANCE, summary, as_json=as_json)


@click.command("sign")
@click.argument("bundle", type=DIRECTORY)
@signing_key_option
@click.option(
    "--certificate",
    "--cert-chain",
    "cert_chain",
    type=FILE,
    metavar="CHAIN",
    help="PEM certificate chain for --key (its certificate first, then intermediates).",
)
@click.option(
    "--shard-size",
    "shard_size_text",
    metavar="SIZE",
    help="Sign each file in shards of SIZE (e.g. 256MiB). Default: as `package` chooses.",
)
@click.option("--whole-files", is_flag=True, help="Sign every file whole.")
@json_option
@pass_ctx
def sign_cmd(
    ctx: Context,
    bundle: Path,
    key_path: Path,
    cert_chain: Path | None,
    shard_size_text: str | None,
    whole_files: bool,
    as_json: bool,
) -> None:
    """Sign BUNDLE again with --key: a new model.sig over the same files, e.g. after a key
    rotation, or to sign a large model by shards.

    Every file is first checked against manifest.json (size and sha256): a bundle whose
    files differ is refused (exit 3) and its model.sig left as it was. The old signature
    is not checked. manifest.json is not changed.
    """
    from packager.build.api import resign

    if whole_files and shard_size_text is not None:
        raise UsageError("--shard-size and --whole-files exclude each other: give one")
    resigned = resign(
        bundle,
        key=key_path,
        certificate_chain=cert_chain,
        shard_size=0 if whole_files else shard_size(shard_size_text),
    )
    render.show(ctx, render_build.RESIGNED, resigned, as_json=as_json)


COMMANDS = (keygen, package_cmd, sign_cmd, inspect, benchmark_cmd)
