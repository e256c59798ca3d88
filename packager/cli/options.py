"""Shared click options and the context object every command receives."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from packager._io.config import resolve_registry
from packager.build.options import (
    BenchmarkData,
    ConvertOptions,
    Metadata,
    PackageOptions,
    Provenance,
    QuantizeOptions,
    Tolerance,
)
from packager.core.text import printable
from packager.errors import UsageError

if TYPE_CHECKING:
    from packager.registry.options import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])

# The kinds of path the commands take.
DIRECTORY = click.Path(path_type=Path, file_okay=False)
FILE = click.Path(path_type=Path, dir_okay=False)
EXISTING_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


class Context:
    def __init__(self, home: Path, quiet: bool) -> None:
        self.home = home
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            click.echo(printable(message, limit=None), err=True)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)


def output_option(default: Path, help: str | None = None) -> Callable[[F], F]:
    """``-o/--output DIR`` (``out_dir``): the directory a command writes into."""
    return click.option(
        "-o", "--output", "out_dir", type=DIRECTORY, default=default, show_default=True, help=help
    )


def rows_option(*names: str, help: str, required: bool = True) -> Callable[[F], F]:
    """An existing file of rows (.csv with header, .npy, .json)."""
    return click.option(*names, required=required, type=EXISTING_FILE, help=help)


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
            type=EXISTING_FILE,
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


def _key_option(dest: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option("--key", dest, type=FILE, help=help, **kwargs)


def keys_option(flag: str, dest: str, help: str, *, required: bool = False) -> Callable[[F], F]:
    """``flag``, repeatable, into ``dest``: key files."""
    return click.option(flag, dest, type=FILE, help=help, multiple=True, required=required)


def key_option(required: bool) -> Callable[[F], F]:
    """``--key``, repeatable (``key_paths``): the public keys to trust."""
    help = "Trusted public key (cosign.pub); repeat for several."
    return keys_option("--key", "key_paths", help, required=required)


signing_key_option = _key_option(
    "key_path", "Signing key: cosign.key, or a PKCS#8 / SEC1 EC PEM key.", required=True
)
cert_chain_option = click.option(
    "--cert-chain",
    "cert_chain",
    type=FILE,
    help="PEM certificate chain for --key (its certificate first, then intermediates).",
)


def trust_option(f: F) -> F:
    return click.option(
        "--trust",
        "trust_file",
        type=FILE,
        help="Trust policy (default $PACKAGER_HOME/trust.toml, then /etc/packager/trust.toml).",
    )(f)


def exact_ref(ref: str, command: str) -> tuple[str, str]:
    """NAME@VERSION, or UsageError naming ``command``."""
    from packager.core.names import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"{command} needs NAME@VERSION")
    return name, version


def now() -> datetime:
    return datetime.now(UTC)


def open_registry_at(ctx: Context, ref: str | None, *, writing: bool = False):  # type: ignore[no-untyped-def]
    """The registry ``ref`` names; ``writing`` refuses one that cannot be written (exit 2)."""
    from packager.registry import open_destination, open_registry

    opener = open_destination if writing else open_registry
    return opener(resolve_registry(ref), home=ctx.home, options=registry_options(ctx))


def load_public_keys(paths: tuple[Path, ...]) -> list[Any]:
    from packager._io.keys import load_public_key

    return [load_public_key(p) for p in paths]


pass_ctx = click.make_pass_decorator(Context)


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


def option_group(
    dest: str, make: Callable[..., Any], *options: Callable[[Any], Any]
) -> Callable[[F], F]:
    """Put ``options`` on a command and hand it one object instead of their values:
    ``make(**values)``, as its parameter ``dest``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return f(*args, **kwargs, **{dest: make(**values)})

        before = len(getattr(command, "__click_params__", ()))
        for option in reversed(options):
            command = option(command)
        params: list[click.Parameter] = getattr(command, "__click_params__", [])
        names = [param.name for param in params[before:] if param.name]
        return cast(F, command)

    return decorate


conversion_options = option_group(
    "conversion",
    ConvertOptions,
    click.option(
        "--precision",
        type=click.Choice(["float32", "float64"]),
        default="float32",
        show_default=True,
        help="float64: a double-precision graph where the converter has one, else a recorded cast.",
    ),
    click.option(
        "--input-shape",
        callback=_input_shape,
        metavar="DIMS",
        help="PyTorch: one row's shape without the batch, e.g. 1,28,28 (default: column count).",
    ),
    click.option(
        "--task",
        type=click.Choice(["classification", "regression"]),
        help="PyTorch: classification adds an argmax 'label' output.",
    ),
)
"""How to convert: precision for all models; input shape and task for PyTorch."""


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} must be KEY=VALUE")
        params[key] = value
    return params


def _provenance(
    git_commit: str | None, training_data: tuple[Path, ...], params: tuple[str, ...]
) -> Provenance:
    return Provenance(
        git_commit=git_commit, training_data=training_data, hyperparameters=_parse_params(params)
    )


def _metadata(
    license_id: str | None, description: str | None, readme: Path | None, target_name: str | None
) -> Metadata:
    return Metadata(license=license_id, description=description, readme=readme, target=target_name)


def _quantize(
    quantize: str | None, quantize_rtol: float | None, quantize_atol: float | None
) -> QuantizeOptions | None:
    if quantize is None:
        return None
    return QuantizeOptions(quantize, Tolerance(quantize_rtol, quantize_atol))


def _benchmark(benchmark_data: Path | None, target: str | None) -> BenchmarkData | None:
    if benchmark_data is None:
        if target is not None:
            raise UsageError("--target names a column of the --benchmark data; give --benchmark")
        return None
    from packager._io.table import read_table

    return BenchmarkData(read_table(benchmark_data), target)


_PACKAGE_GROUPS = (
    option_group(
        "validation",
        Tolerance,
        click.option("--rtol", type=float, help="Relative tolerance for the parity check."),
        click.option("--atol", type=float, help="Absolute tolerance for the parity check."),
    ),
    option_group(
        "provenance",
        _provenance,
        click.option(
            "--git-commit", help="Commit recorded as provenance (default: HEAD here, if any)."
        ),
        click.option(
            "--training-data",
            multiple=True,
            type=FILE,
            help="Training data file whose sha256 is recorded; repeatable.",
        ),
        click.option(
            "--param", "params", multiple=True, help="Hyperparameter KEY=VALUE; repeatable."
        ),
    ),
    option_group(
        "metadata",
        _metadata,
        click.option("--license", "license_id", help="SPDX license identifier, e.g. Apache-2.0."),
        click.option("--description", help="One-line description."),
        click.option("--readme", type=EXISTING_FILE),
        click.option(
            "--target-name",
            metavar="NAME",
            help="What a regressor predicts: `predict` names its output so.",
        ),
    ),
    conversion_options,
    option_group(
        "quantize",
        _quantize,
        click.option(
            "--quantize",
            type=click.Choice(["dynamic"]),
            help="Quantize the graph (onnxruntime quantize_dynamic); "
            "kept only if parity still holds.",
        ),
        click.option("--quantize-rtol", type=float, help="Relative tolerance after quantizing."),
        click.option("--quantize-atol", type=float, help="Absolute tolerance after quantizing."),
    ),
    option_group(
        "benchmark",
        _benchmark,
        rows_option(
            "--benchmark",
            "benchmark_data",
            required=False,
            help="Labelled data (.csv, .npy, .json) to benchmark on; "
            "figures go to manifest metrics.",
        ),
        click.option("--target", help="Column of --benchmark data holding the true answers."),
    ),
)


_PACKAGE_FIELDS = ("validation", "provenance", "metadata", "conversion", "quantize", "benchmark")


def package_options(f: F) -> F:
    """Every packaging option, handed to the command as one PackageOptions, ``options``."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        groups = {name: kwargs.pop(name) for name in _PACKAGE_FIELDS}
        return f(*args, **kwargs, options=PackageOptions(**groups))

    for group in reversed(_PACKAGE_GROUPS):
        command = group(command)
    return cast(F, command)
