"""The one strict JSON loader for everything read from outside (pure).

Registry answers, signed documents, archives and files a user hands in all go through
:func:`loads`. Two parsers may read the same bytes differently when a key repeats, a
number is not finite, or nesting is deep enough to exhaust one parser's stack and not the
other's: such input is refused, never interpreted. Bounds keep a small hostile document
from costing much memory or time: total size, nesting depth, digits of an integer,
length of a string.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packager.errors import PackagerError, TamperedError

# Big enough for any document packager reads (16 MiB OCI indexes), small for a server.
DEFAULT_MAX_BYTES = 16 << 20
# Integers are refused outside [INT_MIN, INT_MAX]: a signed 64-bit number.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Limits:
    """Bounds on one JSON document; every field is a hard limit, not a hint."""

    max_bytes: int = DEFAULT_MAX_BYTES
    # Nothing packager reads nests deeper than a handful of levels.
    max_depth: int = 32
    # A sequence number or size fits in 20 digits; JSON allows 4,300 before Python refuses.
    max_int_digits: int = 20
    max_string: int = 1 << 20
    # Integers within [INT_MIN, INT_MAX]; False only where the caller checks ranges itself.
    int64: bool = True


DEFAULT_LIMITS = Limits()
ErrorFactory = Callable[[str], PackagerError]


class _Refused(ValueError):
    """Raised inside the parser's hooks; becomes the caller's error."""


def loads(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory = TamperedError,
    limits: Limits = DEFAULT_LIMITS,
) -> Any:
    """Parse ``data`` strictly; ``what`` names it in the error ("manifest.json").

    Refused: more than ``limits.max_bytes``, invalid UTF-8 or JSON, a duplicate key in
    any object, NaN/Infinity or a float that overflows, an integer of more than
    ``limits.max_int_digits`` digits, a string longer than ``limits.max_string``, nesting
    deeper than ``limits.max_depth``, an integer outside [:data:`INT_MIN`, :data:`INT_MAX`]
    (unless ``limits.int64`` is False).

    Raises:
        PackagerError: made by ``error`` (TamperedError by default) with a one-line
            message naming ``what`` and the reason.
    """
    size = len(data)
    if size > limits.max_bytes:
        raise error(f"{what} is larger than {limits.max_bytes} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_int_parser(limits),
        )
    except _Refused as e:
        raise error(f"{what} is not acceptable JSON: {e}") from None
    # ValueError: invalid UTF-8 or JSON; RecursionError: nesting past the parser's stack.
    except (ValueError, RecursionError) as e:
        raise error(f"{what} is not valid JSON ({type(e).__name__})") from None
    reason = _check_shape(doc, limits)
    if reason is not None:
        raise error(f"{what} is not acceptable JSON: {reason}")
    return doc


def loads_checked_by_caller(
    data: bytes,
    *,
    what: str,
    error: ErrorFactory = TamperedError,
    fast: Callable[[bytes], Any] | None = None,
) -> Any:
    """:func:`loads` for a caller that bounds the size itself and checks every number it
    uses: keys must still be unique and NaN/Infinity are refused, but numbers are left to
    the C parser (an integer of up to Python's 4,300 digits; a float too large for a
    double becomes infinity), and depth is bounded by the parser's stack only. An
    inference request is such a document: its numbers become numpy arrays of the model's
    dtype, which refuse what does not fit, and a hook per number would cost more than the
    rest of the parse.

    ``fast``: a faster parser that keeps the last of duplicate keys and refuses NaN and
    Infinity (orjson's ``loads``). Its document is taken when counting proves that no key
    was dropped (see :func:`_all_keys_kept`); otherwise, or when it refuses the text, the
    strict parser decides (and words the error). The two read every text alike but for
    an integer outside [-2**63, 2**64 - 1]: the fast parser makes it a float, the strict
    one an int. (Looking for such digits first would cost a third of the parse; a caller
    that needs an integer of a tensor's or a size's range refuses both.) A string or key
    holding a lone surrogate (``"\\ud800"``), which no UTF-8 writer can echo, is refused
    by both.

    Raises:
        PackagerError: made by ``error``, as :func:`loads`.
    """
    if fast is not None:
        try:
            doc = fast(data)
        except ValueError:
            pass
        else:
            if _all_keys_kept(data, doc):
                return doc
    try:
        doc = _UNIQUE_KEYS.decode(data.decode("utf-8"))
    except _Refused as e:
        raise error(f"{what} is not acceptable JSON: {e}") from None
    except (ValueError, RecursionError) as e:
        raise error(f"{what} is not valid JSON ({type(e).__name__})") from None
    if _SURROGATE_ESCAPE.search(data) and _holds_surrogate(doc):
        raise error(f"{what} is not acceptable JSON: a string that is not valid Unicode")
    return doc


# A \uD800-\uDFFF escape; the strict parser pairs those that make one character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _holds_surrogate(doc: Any) -> bool:
    """Whether a key or string of ``doc`` holds a lone surrogate (no Unicode scalar value:
    UTF-8 cannot write it), walked without recursion."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if type(value) is str:
            if _SURROGATES.search(value):
                return True
        elif type(value) is dict:
            stack.extend(value)
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
    return False


def _all_keys_kept(data: bytes, doc: Any) -> bool:
    """Whether ``doc``, parsed from ``data`` by a parser that keeps the last of duplicate
    keys, is what the strict parser would make of it: True only when it provably is.

    Every object of the text has one ``{`` and each of its keys one ``:`` (strings may
    hold more). The objects looked at are the top one, those in its values and in its
    lists, and the objects in their values. If as many ``{`` are in the text as objects
    were looked at, they are all of its objects; if as many ``:`` as keys they hold,
    none was dropped, so no key was given twice. (A colon or brace in a string, or an
    object deeper than that, fails the count: the strict parser then decides.)
    """
    if type(doc) is not dict:
        return False
    objects, keys = 1, len(doc)
    for value in doc.values():
        for item in value if type(value) is list else (value,):
            if type(item) is dict:
                objects, keys = objects + 1, keys + len(item)
                for inner in item.values():
                    if type(inner) is dict:
                        objects, keys = objects + 1, keys + len(inner)
    return data.count(b"{") == objects and data.count(b":") == keys


def loads_object(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory = TamperedError,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """:func:`loads`, and the document must be a JSON object.

    Raises:
        PackagerError: as :func:`loads`, or the document is not an object.
    """
    doc = loads(data, what=what, error=error, limits=limits)
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    return doc


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"non-standard number {name}")


_UNIQUE_KEYS = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:32]} out of range")
    return value


def _int_parser(limits: Limits) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > limits.max_int_digits:
            raise _Refused(f"integer of {len(text)} digits")
        value = int(text)
        if limits.int64 and not INT_MIN <= value <= INT_MAX:
            raise _Refused(f"integer {text} does not fit in 64 bits")
        return value

    return parse


def _check_shape(doc: Any, limits: Limits) -> str | None:
    """Depth and string lengths, walked without recursion.

    Only containers go on the stack, and strings are checked where they are found: on the
    path of every request ``packager serve`` answers, most values are numbers.
    """
    if type(doc) is str:
        return _long_string(doc, limits.max_string)
    stack: list[tuple[Any, int]] = [(doc, 1)] if type(doc) in (dict, list) else []
    while stack:
        value, depth = stack.pop()
        if depth > limits.max_depth:
            return f"nested deeper than {limits.max_depth} levels"
        if type(value) is dict:
            for key in value:
                if len(key) > limits.max_string:
                    return f"a key of {len(key)} characters"
            items = value.values()
        else:
            items = value
        for item in items:
            kind = type(item)
            if kind is str:
                if len(item) > limits.max_string:
                    return f"a string of {len(item)} characters"
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
    return None


def _long_string(value: str, max_string: int) -> str | None:
    return f"a string of {len(value)} characters" if len(value) > max_string else None
