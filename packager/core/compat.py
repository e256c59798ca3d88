"""Which onnxruntime can run which ONNX opsets (pure: tables and comparisons only)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from packager.errors import IncompatibleModelError

# First onnxruntime release implementing each default-domain opset, after the
# version matrix onnxruntime publishes (docs/Versioning.md). Opsets past the
# table get the onnxruntime version that validated the bundle.
FIRST_RUNTIME_FOR_OPSET: Mapping[int, str] = {
    15: "1.10",
    16: "1.11",
    17: "1.12",
    18: "1.14",
    19: "1.15",
    20: "1.17",
    21: "1.18",
    22: "1.20",
    23: "1.22",
}
OLDEST_RUNTIME = "1.10"
_LEADING_DIGITS = re.compile(r"\d+", re.ASCII)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.32.0"`` -> ``(1, 32, 0)``; local or pre-release suffixes are dropped."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        match = _LEADING_DIGITS.match(piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def minimum_runtime(opsets: Mapping[str, int], *, validated_with: str) -> str:
    """The lowest onnxruntime (major.minor) believed to run a model with these opsets."""
    default = opsets.get("", opsets.get("ai.onnx", 0))
    if default <= min(FIRST_RUNTIME_FOR_OPSET):
        return OLDEST_RUNTIME
    if default in FIRST_RUNTIME_FOR_OPSET:
        return FIRST_RUNTIME_FOR_OPSET[default]
    major_minor = ".".join(str(p) for p in version_tuple(validated_with)[:2])
    return major_minor or validated_with


def check_runtime(
    *,
    model_opsets: Mapping[str, int],
    min_runtime: str,
    runtime_version: str,
    runtime_opsets: Mapping[str, int],
) -> None:
    """Refuse a model the installed runtime cannot run.

    ``runtime_opsets`` maps each domain to the highest opset the installed runtime
    implements ('' and 'ai.onnx' both name the default domain).

    Raises:
        IncompatibleModelError: the runtime is older than the bundle asks for, or
            lacks a domain or opset the model uses.
    """
    if version_tuple(runtime_version) < version_tuple(min_runtime):
        raise IncompatibleModelError(
            f"the model needs onnxruntime >= {min_runtime}, this instance has {runtime_version}; "
            f"upgrade onnxruntime (pip install 'onnxruntime>={min_runtime}')"
        )
    for domain, version in sorted(model_opsets.items()):
        key = "ai.onnx" if domain in ("", "ai.onnx") else domain
        supported = runtime_opsets.get(key)
        if supported is None:
            raise IncompatibleModelError(
                f"the model uses operator domain {key!r}, which onnxruntime {runtime_version} "
                "does not implement; package it with standard operators"
            )
        if version > supported:
            raise IncompatibleModelError(
                f"the model needs opset {version} of {key!r}, onnxruntime {runtime_version} "
                f"implements up to {supported}; upgrade onnxruntime or re-package with "
                f"a lower target opset"
            )
