"""Build-side commands: keygen, package, verify, inspect, benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from packager.build.options import ConvertOptions, PackageOptions
from packager.cli import render
from packager.cli.options import (
    DIRECTORY,
    FILE,
    Context,
    cert_chain_option,
    conversion_options,
    json_option,
    key_option,
    output_option,
    package_options,
    pass_ctx,
    rows_option,
    signing_key_option,
    trust_option,
)

if TYPE_CHECKING:
    from packager.core.policy import Trusted


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
    render.show(ctx, render.KEYS, render.KeyPair(key, pub), as_json=as_json)


@click.command("benchmark")
@click.argument("ref", metavar="MODEL_OR_BUNDLE_OR_INSTALLED_NAME")
@rows_option(
    "--data",
    "data_path",
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
    type=FILE,
    help="Write a PNG chart (needs onnx-packager[plot]).",
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
    conversion: ConvertOptions,
    as_json: bool,
) -> None:
    """Accuracy or error, latency and size: the original framework (for a model file)
    against onnxruntime. A bundle directory or installed model runs on onnxruntime
    alone; a bundle's signature is not checked here (use `packager verify`)."""
    from packager._io.table import read_table
    from packager.build.benchmark import benchmark_reference, write_chart
    from packager.build.options import Settings
    from packager.instance.models import model_path

    report = benchmark_reference(
        str(model_path(ref, home=ctx.home)),
        read_table(data_path),
        target=target,
        settings=Settings(threads=threads),
        conversion=conversion,
    )
    if chart is not None:
        write_chart(report, chart)
        ctx.say(f"wrote {chart}")
    render.show(ctx, render.BENCHMARK, report, as_json=as_json)


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
    packaged = render.Packaged(bundle, read_manifest_unverified(bundle))
    render.show(ctx, render.PACKAGED, packaged, as_json=as_json)


@click.command()
@click.argument("bundle", type=DIRECTORY)
@key_option(required=False)
@trust_option
@json_option
@pass_ctx
def verify(
    ctx: Context,
    bundle: Path,
    key_paths: tuple[Path, ...],
    trust_file: Path | None,
    as_json: bool,
) -> None:
    """Verify a bundle directory's signature and every file's digest.

    Trusted keys and CAs come from --key, else --trust FILE, else $PACKAGER_HOME/trust.toml,
    else /etc/packager/trust.toml.
    """
    from packager._io.bundledir import verify_bundle

    def mode() -> Trusted:
        # Imported here: verify_bundle calls this once hashing has started.
        from packager.core.policy import Trusted
        from packager.instance.trust import resolve_policy

        return Trusted(resolve_policy(home=ctx.home, trust_file=trust_file, key_paths=key_paths))

    manifest = verify_bundle(bundle, mode=mode)
    render.show(ctx, render.VERIFIED, manifest, as_json=as_json)


@click.command()
@click.argument("bundle", type=DIRECTORY)
@json_option
@pass_ctx
def inspect(ctx: Context, bundle: Path, as_json: bool) -> None:
    """Show a bundle's manifest (not a verification: use `packager verify`)."""
    from packager._io.bundledir import read_manifest_unverified

    render.show(ctx, render.MANIFEST, read_manifest_unverified(bundle), as_json=as_json)


COMMANDS = (keygen, package_cmd, verify, inspect, benchmark_cmd)
