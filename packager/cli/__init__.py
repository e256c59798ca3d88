"""The ``packager`` command line: each command parses, calls one library function, prints.

Errors are caught in exactly one place, :func:`main`, and become a one-line
message on stderr and the exit code documented in the README.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from packager import __version__
from packager._io.config import resolve_home, resolve_registry
from packager.errors import PackagerError, RegistryError, UsageError

if TYPE_CHECKING:
    from packager.registry.options import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, home: Path, quiet: bool) -> None:
        self.home = home
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)


def registry_option(f: F) -> F:
    return click.option(
        "--registry",
        "registry_ref",
        metavar="REF",
        help="Registry: a directory (default $PACKAGER_HOME/registry, or $PACKAGER_REGISTRY), "
        "oci://HOST[:PORT]/NAMESPACE, an https:// static mirror, or an archive .tar.",
    )(f)


def _remember(click_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    click_ctx.meta[f"packager.registry.{param.name}"] = value
    return value


def remote_options(f: F) -> F:
    """How to reach an oci:// registry or https:// mirror; open_registry_at turns these
    into RegistryOptions."""
    options = [
        click.option(
            "--username",
            metavar="USER",
            expose_value=False,
            callback=_remember,
            help="Registry user (or $PACKAGER_REGISTRY_USERNAME; else docker config.json).",
        ),
        click.option(
            "--password-stdin",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Read the registry password or token from stdin (or $PACKAGER_REGISTRY_PASSWORD).",
        ),
        click.option(
            "--ca-cert",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            expose_value=False,
            callback=_remember,
            help="PEM CA bundle to verify the registry's TLS certificate with.",
        ),
        click.option(
            "--plain-http",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Allow unencrypted HTTP to the registry (always allowed for loopback).",
        ),
        click.option(
            "--chunk-size",
            metavar="SIZE",
            expose_value=False,
            callback=_remember,
            help="Upload blobs larger than SIZE in chunks of SIZE (e.g. 16M; default 64M).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def registry_options(ctx: Context) -> RegistryOptions:
    """RegistryOptions from the remote options of this command and the environment."""
    from packager.registry.options import DEFAULT_CHUNK_SIZE, options_from_environment, parse_size

    meta = click.get_current_context().meta
    if "packager.registry.options" not in meta:
        password = None
        if meta.get("packager.registry.password_stdin"):
            password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
            if not password:
                raise UsageError("--password-stdin: stdin is empty; pipe the password in")
        chunk_size = meta.get("packager.registry.chunk_size")
        meta["packager.registry.options"] = options_from_environment(
            username=meta.get("packager.registry.username"),
            password=password,
            ca_cert=meta.get("packager.registry.ca_cert"),
            plain_http=bool(meta.get("packager.registry.plain_http")),
            chunk_size=parse_size(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE,
            progress=not ctx.quiet and sys.stderr.isatty(),
        )
    options: RegistryOptions = meta["packager.registry.options"]
    return options


def key_option(required: bool) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "--key",
            "key_paths",
            multiple=True,
            required=required,
            type=click.Path(path_type=Path, dir_okay=False),
            help="Trusted public key (cosign.pub); repeat for several.",
        )(f)

    return decorate


def trust_option(f: F) -> F:
    return click.option(
        "--trust",
        "trust_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Trust policy (default $PACKAGER_HOME/trust.toml, then /etc/packager/trust.toml).",
    )(f)


def signing_key_option(f: F) -> F:
    return click.option(
        "--key",
        "key_path",
        required=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="Signing key: cosign.key, or a PKCS#8 / SEC1 EC PEM key.",
    )(f)


def exact_ref(ref: str, command: str) -> tuple[str, str]:
    """NAME@VERSION, or UsageError naming ``command``."""
    from packager.core.names import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"{command} needs NAME@VERSION")
    return name, version


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def now() -> datetime:
    return datetime.now(UTC)


def open_registry_at(ctx: Context, ref: str | None):  # type: ignore[no-untyped-def]
    from packager.registry import open_registry

    return open_registry(resolve_registry(ref), home=ctx.home, options=registry_options(ctx))


def load_public_keys(paths: tuple[Path, ...]) -> list[Any]:
    from packager._io.keys import load_public_key

    return [load_public_key(p) for p in paths]


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packager")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="PACKAGER_HOME",
    help="State directory (default ~/.local/share/packager; env PACKAGER_HOME).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
@click.pass_context
def cli(click_ctx: click.Context, home: Path | None, quiet: bool) -> None:
    """Package trained models as signed ONNX bundles, publish, verify, install and run them.

    Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 verification or trust
    failure, 4 registry failure, 5 model incompatible or smoke test failed.
    """
    click_ctx.obj = Context(resolve_home(home), quiet)


@cli.command()
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


def _input_shape(
    click_ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise click.BadParameter("give positive whole numbers separated by commas, e.g. 1,28,28")
    return shape


def conversion_options(f: F) -> F:
    """How to convert: precision for all models; input shape and task for PyTorch."""
    f = click.option(
        "--task",
        type=click.Choice(["classification", "regression"]),
        help="PyTorch: classification adds an argmax 'label' output.",
    )(f)
    f = click.option(
        "--input-shape",
        callback=_input_shape,
        metavar="DIMS",
        help="PyTorch: one row's shape without the batch, e.g. 1,28,28 (default: column count).",
    )(f)
    return click.option(
        "--precision",
        type=click.Choice(["float32", "float64"]),
        default="float32",
        show_default=True,
        help="float64: a double-precision graph where the converter has one, else a recorded cast.",
    )(f)


@cli.command("benchmark")
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


@cli.command("package")
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
    validation = manifest.validation
    if as_json:
        emit(
            {
                "bundle": str(bundle),
                "name": name,
                "version": version,
                "validation": validation.to_dict(),
                "metrics": dict(manifest.metrics or {}),
            }
        )
    else:
        ctx.say(
            f"packaged {manifest.ref} -> {bundle} "
            f"(max abs diff {validation.max_abs_diff:.3g}, {validation.rows} test vectors)"
        )
        click.echo(str(bundle))


@cli.command()
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
                "files": [f.to_dict() for f in manifest.files],
            }
        )
    else:
        click.echo(f"OK: {manifest.ref} verified ({len(manifest.files) + 1} files)")


def _tensor(spec: Any) -> str:
    return f"{spec.name}:{spec.dtype}{list(spec.shape or [])}"


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False))
@json_option
def inspect(bundle: Path, as_json: bool) -> None:
    """Show a bundle's manifest (not a verification: use `packager verify`)."""
    from packager._io.bundledir import read_manifest_unverified

    manifest = read_manifest_unverified(bundle)
    if as_json:
        emit(manifest.to_dict())
        return
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
        ("outputs", ", ".join(_tensor(t) for t in manifest.model.outputs)),
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
        click.echo(f"{k:<{width}}  {v}")
    click.echo("files:")
    for f in manifest.files:
        click.echo(f"  {f.path:<24} {f.role:<12} {f.size:>12}  sha256:{f.digest.hex[:16]}…")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
@registry_option
@remote_options
@key_option(required=False)
@json_option
@pass_ctx
def publish(
    ctx: Context,
    bundle: Path,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Publish a bundle directory to a registry (default: the embedded one).

    With --key the signature is verified first; without it the files are still
    checked against manifest.json so a damaged bundle is never published.
    """
    from packager.distribution.publish import publish_bundle

    registry = open_registry_at(ctx, registry_ref)
    artifact = publish_bundle(bundle, registry=registry, keys=load_public_keys(key_paths))
    ref = f"{registry.location}/{artifact.name}:{artifact.version}"
    if as_json:
        emit(
            {
                "name": artifact.name,
                "version": artifact.version,
                "digest": str(artifact.manifest_digest),
                "reference": ref,
            }
        )
    else:
        ctx.say(f"published {artifact.name}@{artifact.version} to {registry.location}")
        click.echo(f"{ref}@{artifact.manifest_digest}")


@cli.command()
@click.argument("name", required=False)
@registry_option
@remote_options
@json_option
@pass_ctx
def search(ctx: Context, name: str | None, registry_ref: str | None, as_json: bool) -> None:
    """List the models and versions in a registry."""
    registry = open_registry_at(ctx, registry_ref)
    names = [name] if name else registry.names()
    found = {n: registry.versions(n) for n in names}
    if as_json:
        emit({"registry": registry.location, "models": found})
        return
    if not any(found.values()):
        ctx.say(f"no models in {registry.location}; publish one with `packager publish BUNDLE`")
    for n, versions in found.items():
        click.echo(f"{n}  {', '.join(versions)}")


@cli.command()
@click.argument("ref", metavar="NAME[@VERSION|@CHANNEL] | ARCHIVE.tar")
@registry_option
@remote_options
@key_option(required=False)
@trust_option
@click.option("--allow-downgrade", is_flag=True, help="Install below the rollback floor.")
@click.option(
    "--insecure-skip-verify",
    is_flag=True,
    help="DANGEROUS: do not check the signature (digests are still checked); audited.",
)
@json_option
@pass_ctx
def install(
    ctx: Context,
    ref: str,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    trust_file: Path | None,
    allow_downgrade: bool,
    insecure_skip_verify: bool,
    as_json: bool,
) -> None:
    """Fetch, verify, smoke-test and atomically install a model version.

    NAME@CHANNEL (e.g. iris@stable) installs the version the channel's signed document
    names, and the model then follows the channel (`packager update`); installing by
    version stops following. Trusted keys come from --key, else --trust FILE, else
    $PACKAGER_HOME/trust.toml, else /etc/packager/trust.toml; with none, install refuses.
    """
    from packager.instance.install import install as do_install
    from packager.instance.store import Store
    from packager.instance.trust import resolve_policy

    if ref.endswith(".tar") and Path(ref).is_file():
        # `packager install ./models.tar`: the archive is the registry; it must hold one model.
        if registry_ref:
            raise UsageError("give either an archive or --registry, not both")
        registry_ref = ref
        names = open_registry_at(ctx, ref).names()
        if len(names) != 1:
            raise UsageError(
                f"{ref} holds {len(names)} models ({', '.join(names) or 'none'}); "
                f"run `packager install NAME --registry {ref}`"
            )
        ref = names[0]
    if insecure_skip_verify:
        click.echo(
            "packager: WARNING: --insecure-skip-verify: the model's signature will NOT be "
            "checked; anyone who can write to the registry can choose what runs here",
            err=True,
        )
        trust = None
    else:
        trust = resolve_policy(home=ctx.home, trust_file=trust_file, key_paths=key_paths)
    result = do_install(
        ref,
        registry=open_registry_at(ctx, registry_ref),
        registry_ref=resolve_registry(registry_ref),
        trust=trust,
        store=Store(ctx.home),
        now=now(),
        allow_downgrade=allow_downgrade,
        insecure_skip_verify=insecure_skip_verify,
        progress=ctx.say,
    )
    smoke, channel = result.smoke_test, result.channel
    if as_json:
        emit(
            {
                "name": result.name,
                "version": result.version,
                "path": str(result.directory),
                "manifestSha256": result.manifest_sha256,
                "previous": result.previous,
                "installed": smoke is not None,
                "testVectors": None if smoke is None else smoke.rows,
                "maxAbsDiff": None if smoke is None else smoke.max_abs_diff,
                "smokeTestSeconds": result.smoke_seconds,
                "smokeTestPeakRss": result.smoke_peak_rss,
                "channel": None
                if channel is None
                else {
                    "channel": channel.channel,
                    "sequence": channel.sequence,
                    "expires": channel.expires.isoformat(),
                },
            }
        )
    elif smoke is None:
        click.echo(f"{result.name}@{result.version} is already current -> {result.directory}")
    else:
        click.echo(f"installed {result.name}@{result.version} -> {result.directory}")


@cli.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@registry_option
@remote_options
@key_option(required=True)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory to write NAME-VERSION/ into.",
)
@json_option
@pass_ctx
def pull(
    ctx: Context,
    ref: str,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    out_dir: Path,
    as_json: bool,
) -> None:
    """Fetch and verify a model version into a bundle directory, without installing it."""
    from packager.distribution.pull import pull as do_pull

    bundle = do_pull(
        ref,
        registry=open_registry_at(ctx, registry_ref),
        keys=load_public_keys(key_paths),
        out_dir=out_dir,
        progress=ctx.say,
    )
    if as_json:
        emit({"bundle": str(bundle)})
    else:
        click.echo(str(bundle))


@cli.command("list")
@json_option
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List installed models (* marks the current version)."""
    from packager.instance.store import Store

    installed = Store(ctx.home).installed()
    if as_json:
        emit(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "current": i.current,
                    "path": str(i.directory),
                }
                for i in installed
            ]
        )
        return
    if not installed:
        ctx.say("no models installed; run `packager install NAME --key cosign.pub`")
    for i in installed:
        click.echo(f"{'*' if i.current else ' '} {i.name}  {i.version}")


@cli.command()
@click.argument("name")
@json_option
@pass_ctx
def rollback(ctx: Context, name: str, as_json: bool) -> None:
    """Make the previously active installed version current again."""
    from packager.instance.install import rollback as do_rollback
    from packager.instance.store import Store

    version = do_rollback(name, store=Store(ctx.home), now=now())
    if as_json:
        emit({"name": name, "current": version})
    else:
        click.echo(f"{name} current -> {version}")


@cli.command()
@click.argument("ref", metavar="NAME@VERSION")
@pass_ctx
def remove(ctx: Context, ref: str) -> None:
    """Delete an installed version that is not current."""
    from packager.instance.install import remove as do_remove
    from packager.instance.store import Store

    name, version = exact_ref(ref, "remove")
    do_remove(name, version, store=Store(ctx.home), now=now())
    ctx.say(f"removed {name}@{version}")


@cli.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Rows to predict (.csv with header, .json, .npy).",
)
@json_option
@pass_ctx
def predict(ctx: Context, ref: str, input_path: Path, as_json: bool) -> None:
    """Run an installed model on the rows of a file."""
    from packager._io.table import read_table
    from packager.core.names import parse_ref
    from packager.instance.models import load

    name, version = parse_ref(ref)
    model = load(name, version, home=ctx.home)
    outputs = model.predict(read_table(input_path))
    data = {k: v.tolist() for k, v in outputs.items()}
    if as_json:
        emit({"model": model.manifest.ref, "outputs": data})
        return
    names = list(data)
    click.echo("\t".join(["row", *names]))
    rows = len(next(iter(data.values()))) if data else 0
    for i in range(rows):
        click.echo("\t".join([str(i), *(json.dumps(data[n][i]) for n in names)]))


@cli.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--channel", required=True, help="Channel to point at the version, e.g. stable.")
@signing_key_option
@click.option(
    "--expires",
    default="30d",
    show_default=True,
    metavar="DURATION",
    help="How long installers accept the document (e.g. 30d, 12h, 2w); promote again before.",
)
@click.option(
    "--sequence",
    type=click.IntRange(min=1),
    help="Sequence number to sign, when the current document is not this key's.",
)
@registry_option
@remote_options
@json_option
@pass_ctx
def promote(
    ctx: Context,
    ref: str,
    channel: str,
    key_path: Path,
    expires: str,
    sequence: int | None,
    registry_ref: str | None,
    as_json: bool,
) -> None:
    """Point CHANNEL of a model at NAME@VERSION with a signed, expiring document.

    Instances that installed NAME@CHANNEL move to it at their next `packager update`.
    """
    from packager._io.keys import load_private_key, password_from_environment
    from packager.core.channel import parse_duration
    from packager.distribution.promote import promote as do_promote

    expires_in = parse_duration(expires)
    promotion = do_promote(
        ref,
        channel=channel,
        registry=open_registry_at(ctx, registry_ref),
        private_key=load_private_key(key_path, password=password_from_environment),
        now=now(),
        expires_in=expires_in,
        sequence=sequence,
        progress=ctx.say,
    )
    doc = promotion.channel
    if as_json:
        emit(promotion.to_json())
    else:
        click.echo(
            f"{doc.name}@{doc.channel} -> {doc.version}  sequence {doc.sequence}  "
            f"expires {doc.expires.isoformat()}  {doc.manifest_digest}"
        )


@cli.command()
@registry_option
@remote_options
@key_option(required=False)
@trust_option
@json_option
@pass_ctx
def update(
    ctx: Context,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    trust_file: Path | None,
    as_json: bool,
) -> None:
    """Install what their channel names for every model that follows one.

    Each model is read from the registry it was installed from (--registry: from REF,
    for this run only), with every check of `install NAME@CHANNEL`. A failing model does
    not stop the others; the exit code is then the most important failure's (3, then 5,
    then 4).
    """
    from packager.instance.store import Store
    from packager.instance.trust import resolve_policy
    from packager.instance.update import update as do_update

    report = do_update(
        store=Store(ctx.home),
        trust=resolve_policy(home=ctx.home, trust_file=trust_file, key_paths=key_paths),
        now=now(),
        # A model recorded without a registry uses the default one ($PACKAGER_REGISTRY, else
        # the embedded one); only --registry overrides what each model recorded.
        open_registry=lambda ref: open_registry_at(ctx, ref),
        registry_ref=registry_ref,
        progress=ctx.say,
    )
    if as_json:
        emit(report.to_json())
    else:
        if not report.models:
            ctx.say("no model follows a channel; install one with `packager install NAME@CHANNEL`")
        for m in report.models:
            what = {
                "updated": f"{m.previous or '-'} -> {m.version}",
                "current": m.version,
                "refused": str(m.error),
            }[m.status]
            click.echo(f"{m.status:<8} {m.name}@{m.channel}  {what}")
    report.check()


@cli.command()
@click.argument("name", required=False)
@json_option
@pass_ctx
def log(ctx: Context, name: str | None, as_json: bool) -> None:
    """Show the audit log: every install, refusal, rollback, removal and channel event."""
    from packager.instance.store import Store

    entries = Store(ctx.home).audit_log(name)
    if as_json:
        emit([e.__dict__ for e in entries])
        return
    for e in entries:
        what = f"{e.name}@{e.version}" if e.version else (e.name or "-")
        click.echo(f"{e.at}  {e.action:<8} {e.outcome:<8} {what}  {e.detail}")


@cli.group()
@click.option(
    "--trust",
    "trust_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Policy file to edit (default $PACKAGER_HOME/trust.toml).",
)
@click.pass_context
def trust(click_ctx: click.Context, trust_file: Path | None) -> None:
    """Manage the trust policy: which keys may sign which models."""
    ctx = click_ctx.find_object(Context)
    assert ctx is not None
    click_ctx.obj = ctx
    click_ctx.meta["trust_file"] = trust_file or ctx.home / "trust.toml"


def _trust_file() -> Path:
    path: Path = click.get_current_context().meta["trust_file"]
    return path


@trust.command("add-key")
@click.argument("name")
@click.argument("pub", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--models", default="*", show_default=True, help="Glob of model names it may sign.")
@pass_ctx
def trust_add_key(ctx: Context, name: str, pub: Path, models: str) -> None:
    """Trust the public key PUB, under NAME, for models matching --models."""
    from packager.instance.trust import add_key

    path = _trust_file()
    add_key(path, name, pub, models=models)
    ctx.say(f"{path}: key {name} trusted for models {models!r}")


@trust.command("revoke")
@click.argument("name")
@pass_ctx
def trust_revoke(ctx: Context, name: str) -> None:
    """Revoke key NAME: refused from now on, even where a rule lists it."""
    from packager.instance.trust import revoke_key

    path = _trust_file()
    revoke_key(path, name)
    ctx.say(f"{path}: key {name} revoked")


@trust.command("minimum")
@click.argument("ref", metavar="NAME@VERSION")
@pass_ctx
def trust_minimum(ctx: Context, ref: str) -> None:
    """Never install NAME below VERSION on this instance."""
    from packager.instance.trust import set_minimum

    name, version = exact_ref(ref, "trust minimum")
    path = _trust_file()
    set_minimum(path, name, version)
    ctx.say(f"{path}: {name} >= {version}")


@trust.command("list")
@json_option
def trust_list(as_json: bool) -> None:
    """Show the trusted keys, rules and minimum versions."""
    from packager.instance.trust import read_policy

    path = _trust_file()
    if not path.exists():
        raise UsageError(f"no trust policy at {path}; add a key with `packager trust add-key`")
    policy = read_policy(path)
    keys = sorted(policy.keys.values(), key=lambda k: k.name)
    if as_json:
        emit(
            {
                "policy": str(path),
                "keys": [{"name": k.name, "hint": k.hint, "revoked": k.revoked} for k in keys],
                "rules": [{"models": r.models, "keys": list(r.keys)} for r in policy.rules],
                "minimum": dict(policy.minimum),
            }
        )
        return
    click.echo(f"policy: {path}")
    for k in keys:
        click.echo(f"key  {k.name:<20} {k.hint[:16]}{'  REVOKED' if k.revoked else ''}")
    for r in policy.rules:
        click.echo(f"rule {r.models:<20} {', '.join(r.keys)}")
    for model, version in sorted(policy.minimum.items()):
        click.echo(f"min  {model:<20} {version}")


@cli.command("export")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[@VERSION]...")
@registry_option
@remote_options
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Archive to write, ending in .tar (replaced if it exists).",
)
@json_option
@pass_ctx
def export_cmd(
    ctx: Context, refs: tuple[str, ...], registry_ref: str | None, out: Path, as_json: bool
) -> None:
    """Write model versions into an archive to carry across an air gap.

    The archive is an OCI image layout in a tar; NAME without @VERSION exports the
    latest release. On the other side: `packager install NAME --registry models.tar
    --key cosign.pub`, or `packager mirror models.tar DIR --key cosign.pub`.
    """
    from packager.distribution.mirror import export
    from packager.registry.archive import archive_ref

    artifacts = export(
        list(refs), registry=open_registry_at(ctx, registry_ref), out=out, progress=ctx.say
    )
    if as_json:
        emit(
            {
                "archive": str(out),
                "models": [
                    {
                        "name": a.name,
                        "version": a.version,
                        "digest": str(a.manifest_digest),
                        "reference": archive_ref(a.name, a.version),
                    }
                    for a in artifacts
                ],
            }
        )
    else:
        ctx.say(f"wrote {len(artifacts)} version(s) to {out}")
        click.echo(str(out))


@cli.command("mirror")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.argument("refs", nargs=-1, metavar="[NAME[@VERSION]]...")
@remote_options
@key_option(required=False)
@click.option(
    "--no-verify",
    is_flag=True,
    help="DANGEROUS: copy without checking signatures (digests are still checked).",
)
@json_option
@pass_ctx
def mirror_cmd(
    ctx: Context,
    source: str,
    destination: str,
    refs: tuple[str, ...],
    key_paths: tuple[Path, ...],
    no_verify: bool,
    as_json: bool,
) -> None:
    """Copy models from registry SRC to registry DST, verifying every version first.

    SRC and DST are registries: a directory, an archive ending in .tar, oci://HOST/NS, or
    (SRC only) an https:// static mirror (the remote options apply to whichever of them is
    remote). Without NAME,
    every version of every model is copied; NAME alone copies all its versions. A version
    already in DST with the same content is skipped; one with other content is a conflict:
    left alone and listed, and the exit code is 4 once the others are copied. A .tar DST is
    rebuilt atomically and keeps what it held.
    """
    from packager.distribution.mirror import mirror

    if no_verify:
        click.echo(
            "packager: WARNING: --no-verify: signatures will NOT be checked; DST will serve "
            "whatever SRC holds, signed or not (digests are still checked)",
            err=True,
        )
    report = mirror(
        open_registry_at(ctx, source),
        open_registry_at(ctx, destination),
        list(refs),
        keys=load_public_keys(key_paths),
        verify=not no_verify,
        progress=ctx.say,
    )
    if as_json:
        emit(report.to_json())
    else:
        for label, items in (
            ("copied", report.copied),
            ("skipped", report.skipped),
            ("conflict", report.conflicts),
        ):
            for item in items:
                click.echo(f"{label:<8}  {item.name}@{item.version}  {item.destination_digest}")
        for c in report.channels:
            click.echo(f"{c.outcome:<8}  {c.name}@{c.channel}  {c.detail}")
        ctx.say(
            f"{len(report.copied)} copied, {len(report.skipped)} already there, "
            f"{len(report.conflicts)} conflicting"
        )
    if report.conflicts:
        listed = ", ".join(f"{c.name}@{c.version}" for c in report.conflicts)
        raise RegistryError(
            f"{listed} already in {report.destination} with other content and left alone; "
            "versions are immutable: publish a new version instead"
        )
    if report.channel_conflicts:
        listed = ", ".join(f"{c.name}@{c.channel}" for c in report.channel_conflicts)
        raise RegistryError(
            f"channel {listed} left alone in {report.destination}: "
            f"{report.channel_conflicts[0].detail}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning packager errors into messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="packager", standalone_mode=False)
    except PackagerError as e:
        click.echo(f"packager: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("packager: aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return 2 if isinstance(e, click.UsageError) else e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        click.echo("packager: interrupted", err=True)
        return 130
    return 0


def run() -> None:
    sys.exit(main())
