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

if TYPE_CHECKING:
    from packager.build.benchmark import BenchmarkData


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
    """What the manifest says about the model; every field optional."""

    license: str | None = None
    description: str | None = None
    readme: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance:
    """Where a model came from; every field optional. :func:`packager.package` records
    the git HEAD of the working directory and this packager's version when unset."""

    git_commit: str | None = None
    training_data: Sequence[Path] = ()
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    built_by: str | None = None


@dataclass(frozen=True)
class PackageOptions:
    """Everything optional about packaging, grouped: conversion, the parity tolerance
    (``validation``), quantization (None: none), manifest metadata, provenance, and
    labelled data to benchmark the final model on into ``metrics.benchmark`` (None: none)."""

    conversion: ConvertOptions = field(default_factory=ConvertOptions)
    validation: Tolerance = field(default_factory=Tolerance)
    quantize: QuantizeOptions | None = None
    metadata: Metadata = field(default_factory=Metadata)
    provenance: Provenance = field(default_factory=Provenance)
    benchmark: BenchmarkData | None = None
