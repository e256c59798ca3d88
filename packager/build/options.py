"""How to package a model: one options object, built once by the CLI or the caller.

:class:`PackageOptions` groups what ``packager package`` and :func:`packager.package`
accept besides the model, the sample, the name, the version, the key and the output
directory; both hand it unchanged to :func:`packager.build.bundle.package`.
Importing this module is cheap (no numpy, onnx or framework).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packager.errors import UsageError

if TYPE_CHECKING:
    from packager._io.table import Table

DEFAULT_BATCH_ROWS = 1000
DEFAULT_BUDGET_SECONDS = 1.0


@dataclass(frozen=True)
class Tolerance:
    """How close two models' answers must be; None: the default for the task."""

    rtol: float | None = None
    atol: float | None = None


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: ``precision`` ("float32" or "float64") for every model;
    ``input_shape`` (one row's shape without the batch) and ``task``
    ("classification" adds an argmax ``label`` output, or "regression") for PyTorch."""

    precision: str = "float32"
    input_shape: tuple[int, ...] | None = None
    task: str | None = None


@dataclass(frozen=True)
class QuantizeOptions:
    """Quantize the graph with ``method`` ("dynamic") and keep it only if it still matches
    the original within ``tolerance`` (unset fields: the parity tolerances)."""

    method: str = "dynamic"
    tolerance: Tolerance = field(default_factory=Tolerance)


@dataclass(frozen=True)
class Metadata:
    """What the manifest says about the model; every field optional. ``target`` names
    what a regressor predicts: ``predict`` returns its one output as a flat array under
    that name."""

    license: str | None = None
    description: str | None = None
    readme: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class Provenance:
    """Where a model came from; every field optional. :func:`packager.package` records
    the git HEAD of the working directory and this packager's version when unset."""

    git_commit: str | None = None
    training_data: Sequence[Path] = ()
    # SPDX licence expression per training data file, by file name.
    training_data_licenses: Mapping[str, str] = field(default_factory=dict)
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    built_by: str | None = None


@dataclass(frozen=True)
class Settings:
    """How to measure: onnxruntime threads, batch size, and time spent per latency figure."""

    threads: int = 1
    batch_rows: int = DEFAULT_BATCH_ROWS
    budget_seconds: float = DEFAULT_BUDGET_SECONDS

    def __post_init__(self) -> None:
        if self.threads < 0 or self.batch_rows < 1 or not self.budget_seconds > 0:
            raise UsageError("benchmark threads must be >= 0, batch rows >= 1, budget > 0")


@dataclass(frozen=True)
class BenchmarkData:
    """Labelled data to benchmark on while packaging; ``original_size`` is the model
    file's size in bytes, when the model came from one."""

    data: Table
    target: str | None
    settings: Settings = field(default_factory=Settings)
    original_size: int | None = None


@dataclass(frozen=True)
class PackageOptions:
    """Everything optional about packaging, grouped: conversion, the parity tolerance
    (``validation``), quantization (None: none), manifest metadata, provenance, and
    labelled data to benchmark the final model on into ``metrics.benchmark`` (None: none),
    and the shard size model.sig is signed with (None: chosen from the file sizes, see
    :func:`packager.core.shards.choose_shard_size`; 0: whole files).
    ``overwrite`` replaces an existing bundle directory (``--force``); without it, one is
    refused before anything is converted."""

    conversion: ConvertOptions = field(default_factory=ConvertOptions)
    validation: Tolerance = field(default_factory=Tolerance)
    quantize: QuantizeOptions | None = None
    metadata: Metadata = field(default_factory=Metadata)
    provenance: Provenance = field(default_factory=Provenance)
    benchmark: BenchmarkData | None = None
    shard_size: int | None = None
    overwrite: bool = False


# The options objects packager's public API re-exports; the others serve the CLI and
# the building side only.
__all__ = [
    "ConvertOptions",
    "Metadata",
    "PackageOptions",
    "Provenance",
    "QuantizeOptions",
    "Tolerance",
]
