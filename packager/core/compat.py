"""Which onnxruntime can run which ONNX models (pure: tables and comparisons only).

A model needs three things of the runtime: its IR version, the opset of every
operator domain it imports, and whatever onnxruntime release the bundle names
as its minimum. The tables below give the first onnxruntime release that
loads each IR version and opset; they combine onnxruntime's version matrix
(docs/Versioning.md: which ONNX release each onnxruntime release implements)
with ONNX's own release table (``onnx.helper.VERSION_TABLE``: the IR version,
opset and ML opset of each ONNX release). Values past the tables get the
onnxruntime version that validated the bundle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from packager.errors import IncompatibleModelError

DEFAULT_DOMAIN = "ai.onnx"
ML_DOMAIN = "ai.onnx.ml"
# Default-domain opset -> first onnxruntime release implementing it.
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
# ai.onnx.ml opset -> first onnxruntime release implementing it.
FIRST_RUNTIME_FOR_ML_OPSET: Mapping[int, str] = {
    2: "1.10",
    3: "1.11",
    4: "1.17",
    5: "1.18",
}
# Model IR version -> first onnxruntime release that loads it.
FIRST_RUNTIME_FOR_IR: Mapping[int, str] = {
    8: "1.10",
    9: "1.15",
    10: "1.18",
    11: "1.22",
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


def domain_key(domain: str) -> str:
    """'' and 'ai.onnx' both name the default domain; this gives 'ai.onnx' for both."""
    return DEFAULT_DOMAIN if domain in ("", DEFAULT_DOMAIN) else domain


def _first_runtime(table: Mapping[int, str], value: int, *, validated_with: str) -> str:
    if value <= min(table):
        return OLDEST_RUNTIME
    if value in table:
        return table[value]
    major_minor = ".".join(str(p) for p in version_tuple(validated_with)[:2])
    return major_minor or validated_with


def minimum_runtime(
    opsets: Mapping[str, int], *, ir_version: int | None = None, validated_with: str
) -> str:
    """The lowest onnxruntime (major.minor) believed to load a model with these opsets and IR."""
    by_domain = {domain_key(d): v for d, v in opsets.items()}
    needed = [
        _first_runtime(
            FIRST_RUNTIME_FOR_OPSET, by_domain.get(DEFAULT_DOMAIN, 0), validated_with=validated_with
        )
    ]
    if ML_DOMAIN in by_domain:
        needed.append(
            _first_runtime(
                FIRST_RUNTIME_FOR_ML_OPSET, by_domain[ML_DOMAIN], validated_with=validated_with
            )
        )
    if ir_version is not None:
        needed.append(
            _first_runtime(FIRST_RUNTIME_FOR_IR, ir_version, validated_with=validated_with)
        )
    return max(needed, key=version_tuple)


def check_runtime(
    *,
    model_opsets: Mapping[str, int],
    model_ir_version: int,
    min_runtime: str,
    runtime_version: str,
    runtime_opsets: Mapping[str, int],
    runtime_ir_version: int,
) -> None:
    """Refuse a model the installed runtime cannot load.

    ``runtime_opsets`` maps each domain to the highest opset the installed
    runtime implements ('' and 'ai.onnx' both name the default domain);
    ``runtime_ir_version`` is the highest IR version it loads.

    Raises:
        IncompatibleModelError: the runtime is older than the bundle asks for,
            lacks a domain or opset the model uses, or cannot read its IR
            version. The message names the onnxruntime release needed.
    """
    if version_tuple(runtime_version) < version_tuple(min_runtime):
        raise IncompatibleModelError(
            f"the model needs onnxruntime >= {min_runtime}, this instance has {runtime_version}; "
            f"upgrade onnxruntime (pip install 'onnxruntime>={min_runtime}')"
        )
    if model_ir_version > runtime_ir_version:
        needed = _needed(FIRST_RUNTIME_FOR_IR, model_ir_version, runtime_version)
        raise IncompatibleModelError(
            f"the model has ONNX IR version {model_ir_version}, onnxruntime {runtime_version} "
            f"reads up to IR {runtime_ir_version}: it needs {needed}; upgrade onnxruntime or "
            "re-package with an older converter"
        )
    for domain, version in sorted(model_opsets.items()):
        key = domain_key(domain)
        supported = runtime_opsets.get(key)
        if supported is None:
            raise IncompatibleModelError(
                f"the model uses operator domain {key!r}, which onnxruntime {runtime_version} "
                "does not implement; package it with standard operators"
            )
        if version > supported:
            table = {DEFAULT_DOMAIN: FIRST_RUNTIME_FOR_OPSET, ML_DOMAIN: FIRST_RUNTIME_FOR_ML_OPSET}
            needed = _needed(table.get(key, {}), version, runtime_version)
            raise IncompatibleModelError(
                f"the model needs opset {version} of {key!r}, onnxruntime {runtime_version} "
                f"implements up to {supported}: it needs {needed}; upgrade onnxruntime or "
                "re-package with a lower target opset"
            )


def _needed(table: Mapping[int, str], value: int, runtime_version: str) -> str:
    """'onnxruntime >= X' from the table, or 'a newer onnxruntime' past it."""
    known = table.get(value)
    if known is not None and version_tuple(known) > version_tuple(runtime_version):
        return f"onnxruntime >= {known}"
    return f"an onnxruntime newer than {runtime_version}"
