"""The option groups of `package` and `benchmark`: each group becomes one options object
of packager.build.options (PackageOptions gathers them all).

Apart from the shared options so that commands that do not build import none of this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from packager.build.options import (
    BenchmarkData,
    ConvertOptions,
    Metadata,
    PackageOptions,
    Provenance,
    QuantizeOptions,
    Tolerance,
)
from packager.cli.options import (
    EXISTING_FILE,
    FILE,
    labelled_rows_options,
    option_group,
)
from packager.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


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
    git_commit: str | None,
    training_data: tuple[Path, ...],
    training_data_licenses: tuple[str, ...],
    params: tuple[str, ...],
) -> Provenance:
    licenses = {}
    for item in training_data_licenses:
        name, sep, expression = item.partition("=")
        if not sep or not name or not expression:
            raise UsageError(f"--training-data-license {item!r} must be FILE_NAME=EXPRESSION")
        licenses[name] = expression
    return Provenance(
        git_commit=git_commit,
        training_data=training_data,
        training_data_licenses=licenses,
        hyperparameters=_parse_params(params),
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


def shard_size(shard_size_text: str | None) -> int | None:
    """The shard size ``--shard-size`` gives (0: whole files; None: not given).

    Raises:
        UsageError: not a size, or a size below the smallest shard.
    """
    from packager.core.shards import check_shard_size, parse_size

    if shard_size_text is None:
        return None
    size = parse_size(shard_size_text)
    return size if size == 0 else check_shard_size(size)


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
            "--training-data-license",
            "training_data_licenses",
            multiple=True,
            metavar="FILE_NAME=EXPRESSION",
            help="SPDX licence expression a --training-data file is used under; repeatable.",
        ),
        click.option(
            "--param", "params", multiple=True, help="Hyperparameter KEY=VALUE; repeatable."
        ),
    ),
    option_group(
        "metadata",
        _metadata,
        click.option(
            "--license",
            "license_id",
            help="SPDX licence expression, e.g. Apache-2.0 or 'MIT OR Apache-2.0' (validated).",
        ),
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
        *labelled_rows_options(
            "--benchmark",
            "benchmark_data",
            help="Labelled data (.csv, .npy, .json) to benchmark on; "
            "figures go to manifest metrics.",
            target_help="Column of --benchmark data holding the true answers.",
        ),
    ),
    option_group(
        "shard_size",
        shard_size,
        click.option(
            "--shard-size",
            "shard_size_text",
            metavar="SIZE",
            help="Sign each file in shards of SIZE (e.g. 256MiB), hashed on every core; 0: "
            "whole files. Default: 256MiB shards when a file exceeds 1GiB, else whole files.",
        ),
    ),
)


_PACKAGE_FIELDS = (
    "validation",
    "provenance",
    "metadata",
    "conversion",
    "quantize",
    "benchmark",
    "shard_size",
)


def package_options(f: F) -> F:
    """Every packaging option, handed to the command as one PackageOptions, ``options``."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        groups = {name: kwargs.pop(name) for name in _PACKAGE_FIELDS}
        return f(*args, **kwargs, options=PackageOptions(**groups))

    for group in reversed(_PACKAGE_GROUPS):
        command = group(command)
    return cast(F, command)
