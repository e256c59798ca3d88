"""Build-side commands: keygen, package, verify, inspect, benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from packager import __version__
from packager.cli.options import (
    Context,
    conversion_options,
    json_option,
    key_option,
    load_public_keys,
    pass_ctx,
    signing_key_option,
)
from packager.cli.render import emit
from packager.errors import UsageError


@click.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory for cosign.key and cosign.pub.",
)
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
    if as_json:
        emit({"privateKey": str(key), "publicKey": str(pub)})
    else:
        ctx.say(f"wrote {key} (keep it secret) and {pub} (give it to installers)")


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} must be KEY=VALUE")
        params[key] = value
    return params


@click.command("benchmark")
@click.argument("ref", metavar="MODEL_OR_BUNDLE_OR_INSTALLED_NAME")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Rows to run (.csv with header, .npy, .json), with --target the true answers.",
)
@click.option("--target", help="Column holding the true answers (class or value).")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads (0: onnxruntime's default).",
)
@click.option(
    "--chart",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a PNG chart (needs packager[plot]).",
)
@conversion_options
@json_option
@pass_ctx
def benchmark_cmd(
    ctx: Context,
    ref: str,
    data_path: Path,
    target: str | None,
    threads: int,
    chart: Path | None,
    precision: str,
    input_shape: tuple[int, ...] | None,
    task: str | None,
    as_json: bool,
) -> None:
    """Accuracy or error, latency and size: the original framework (for a model file)
    against onnxruntime. A bundle directory or installed model runs on onnxruntime
    alone; a bundle's signature is not checked here (use `packager verify`)."""
    from packager._io.table import read_table
    from packager.build.benchmark import Settings, benchmark_reference, write_chart

    if not Path(ref).exists():
        from packager.core.names import parse_ref
        from packager.instance.store import Store

        ref = str(Store(ctx.home).installed_dir(*parse_ref(ref)))
    report = benchmark_reference(
        ref,
        read_table(data_path),
        target=target,
        settings=Settings(threads=threads),
        precision=precision,
        input_shape=input_shape,
        task=task,
    )
    if chart is not None:
        write_chart(report, chart)
        ctx.say(f"wrote {chart}")
    if as_json:
        emit(report.to_json())
    else:
        click.echo(report.table())


@click.command("package")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path, exists=True))
@click.option("--name", required=True, help="Model name, e.g. iris-classifier.")
@click.option("--version", "version", required=True, help="SemVer version, e.g. 1.2.0.")
@click.option(
    "--sample",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Sample input rows (.csv with header, .npy, .json): checked and kept as test vectors.",
)
@signing_key_option
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("dist"),
    show_default=True,
)
@click.option("--rtol", type=float, help="Relative tolerance for the parity check.")
@click.option("--atol", type=float, help="Absolute tolerance for the parity check.")
@click.option("--git-commit", help="Commit recorded as provenance (default: HEAD here, if any).")
@click.option(
    "--training-data",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Training data file whose sha256 is recorded; repeatable.",
)
@click.option("--param", "params", multiple=True, help="Hyperparameter KEY=VALUE; repeatable.")
@click.option("--license", "license_id", help="SPDX license identifier, e.g. Apache-2.0.")
@click.option("--description", help="One-line description.")
@click.option("--readme", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@conversion_options
@click.option(
    "--quantize",
    type=click.Choice(["dynamic"]),
    help="Quantize the graph (onnxruntime quantize_dynamic); kept only if parity still holds.",
)
@click.option("--quantize-rtol", type=float, help="Relative tolerance after quantizing.")
@click.option("--quantize-atol", type=float, help="Absolute tolerance after quantizing.")
@click.option(
    "--benchmark",
    "benchmark_data",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Labelled data (.csv, .npy, .json) to benchmark on; figures go to manifest metrics.",
)
@click.option("--target", help="Column of --benchmark data holding the true answers.")
@json_option
@pass_ctx
def package_cmd(
    ctx: Context,
    model_path: Path,
    name: str,
    version: str,
    sample: Path,
    key_path: Path,
    out_dir: Path,
    rtol: float | None,
    atol: float | None,
    git_commit: str | None,
    training_data: tuple[Path, ...],
    params: tuple[str, ...],
    license_id: str | None,
    description: str | None,
    readme: Path | None,
    precision: str,
    input_shape: tuple[int, ...] | None,
    task: str | None,
    quantize: str | None,
    quantize_rtol: float | None,
    quantize_atol: float | None,
    benchmark_data: Path | None,
    target: str | None,
    as_json: bool,
) -> None:
    """Convert MODEL to a signed ONNX bundle.

    MODEL: a pickle/joblib scikit-learn, XGBoost or LightGBM model; a PyTorch
    module (.pt/.pth: TorchScript, or torch.save of the whole module, which is
    unpickled: only package files you trust); or an .onnx file.
    """
    from packager._io.keys import load_private_key, password_from_environment
    from packager._io.table import read_table
    from packager.build.benchmark import BenchmarkData
    from packager.build.bundle import Provenance, git_head, package
    from packager.build.convert import load_model_file

    key = load_private_key(key_path, password=password_from_environment)
    table = read_table(sample)
    provenance = Provenance(
        git_commit=git_commit or git_head(Path.cwd()),
        training_data=training_data,
        hyperparameters=_parse_params(params),
        built_by=f"packager {__version__}",
    )
    if target is not None and benchmark_data is None:
        raise UsageError("--target names a column of the --benchmark data; give --benchmark")
    benchmark = None
    if benchmark_data is not None:
        benchmark = BenchmarkData(
            read_table(benchmark_data), target, original_size=model_path.stat().st_size
        )
    ctx.say(f"converting {model_path} and checking it against {table.rows} sample rows")
    bundle = package(
        load_model_file(model_path),
        sample=table,
        name=name,
        version=version,
        key=key,
        out_dir=out_dir,
        rtol=rtol,
        atol=atol,
        provenance=provenance,
        license=license_id,
        description=description,
        readme=readme,
        precision=precision,
        input_shape=input_shape,
        task=task,
        quantize=quantize,
        quantize_rtol=quantize_rtol,
        quantize_atol=quantize_atol,
        benchmark=benchmark,
        progress=ctx.say,
    )
    from packager._io.bundledir import read_manifest_unverified

    manifest = read_manifest_unverified(bundle)
    validation = manifest.data["validation"]
    if as_json:
        emit(
            {
                "bundle": str(bundle),
                "name": name,
                "version": version,
                "validation": validation,
                "metrics": manifest.data.get("metrics", {}),
            }
        )
    else:
        ctx.say(
            f"packaged {manifest.ref} -> {bundle} "
            f"(max abs diff {validation['maxAbsDiff']:.3g}, {validation['rows']} test vectors)"
        )
        click.echo(str(bundle))


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False))
@key_option(required=True)
@json_option
@pass_ctx
def verify(ctx: Context, bundle: Path, key_paths: tuple[Path, ...], as_json: bool) -> None:
    """Verify a bundle directory's signature and every file's digest."""
    from packager._io.bundledir import verify_bundle

    manifest = verify_bundle(bundle, keys=lambda: load_public_keys(key_paths))
    if as_json:
        emit(
            {
                "verified": True,
                "name": manifest.name,
                "version": manifest.version,
                "files": [f.to_json() for f in manifest.files],
            }
        )
    else:
        click.echo(f"OK: {manifest.ref} verified ({len(manifest.files) + 1} files)")


def _tensor(spec: Any) -> str:
    return f"{spec.name}:{spec.dtype}{list(spec.shape or [])}"


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False))
@json_option
def inspect(bundle: Path, as_json: bool) -> None:
    """Show a bundle's manifest (not a verification: use `packager verify`)."""
    from packager._io.bundledir import read_manifest_unverified

    manifest = read_manifest_unverified(bundle)
    if as_json:
        emit(manifest.data)
        return
    d = manifest.data
    source = d["model"]["source"]
    val = d["validation"]
    rows = [
        ("name", manifest.name),
        ("version", manifest.version),
        ("created", manifest.created),
        ("source", f"{source['framework']} {source['frameworkVersion']}: {source['estimator']}"),
        ("converter", f"{source['converter']} {source['converterVersion']}"),
        ("opsets", ", ".join(f"{k}={v}" for k, v in sorted(manifest.opsets.items()))),
        ("onnxruntime", f">= {manifest.min_onnxruntime}"),
        ("inputs", ", ".join(_tensor(t) for t in manifest.inputs)),
        ("outputs", ", ".join(_tensor(t) for t in manifest.outputs)),
        (
            "validation",
            f"{val['rows']} rows, max abs diff {val['maxAbsDiff']:.3g}, "
            f"rtol {val['rtol']:g}, atol {val['atol']:g}",
        ),
    ]
    if manifest.license:
        rows.append(("license", manifest.license))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    click.echo("files:")
    for f in manifest.files:
        click.echo(f"  {f.path:<24} {f.role:<12} {f.size:>12}  sha256:{f.digest.hex[:16]}…")


COMMANDS = (keygen, package_cmd, verify, inspect, benchmark_cmd)
