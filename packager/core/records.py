"""Flat records as JSON objects: one camelCase key per field (``max_abs_diff`` is
``maxAbsDiff``), as manifest.json parts and the JSON reports are written (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar, cast

from packager.core.digests import Digest

R = TypeVar("R")


def json_key(field: str) -> str:
    """The JSON key of a field: ``source_digest`` -> ``sourceDigest``."""
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def as_json(record: Any, *, omit_none: bool = False) -> dict[str, Any]:
    """The fields of the dataclass ``record`` under their JSON keys: digests as
    ``sha256:…`` strings, tuples as lists, records with a ``to_json`` as what it returns;
    with ``omit_none``, fields that are None are left out."""
    doc = {json_key(f.name): _json_value(getattr(record, f.name)) for f in fields(record)}
    return {k: v for k, v in doc.items() if v is not None} if omit_none else doc


def from_json(cls: type[R], doc: Mapping[str, Any]) -> R:
    """The dataclass ``cls`` read from what :func:`as_json` wrote (its fields plain
    values, None or tuples of them); a field whose default is None may be missing.

    Raises:
        KeyError: a field without a default is missing.
    """
    values: dict[str, Any] = {}
    for f in fields(cast(Any, cls)):
        value = doc[json_key(f.name)] if f.default is MISSING else doc.get(json_key(f.name))
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


class JsonRecord:
    """Mixed into a dataclass: :meth:`to_json` is :func:`as_json` of it."""

    def to_json(self) -> dict[str, Any]:
        return as_json(self)


def _json_value(value: Any) -> Any:
    if isinstance(value, Digest):
        return str(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    to_json = getattr(value, "to_json", None)
    return to_json() if callable(to_json) else value
