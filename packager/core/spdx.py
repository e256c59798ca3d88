"""SPDX licence expressions: validation at package time, allow-lists at install (pure).

Expressions are parsed by the ``license-expression`` library against the SPDX licence list
it ships: identifiers are matched case-insensitively and written in their SPDX spelling
(``mit`` -> ``MIT``), spacing does not matter, deprecated forms are rewritten
(``GPL-2.0+`` -> ``GPL-2.0-or-later``), and an identifier the list does not hold is refused
unless it is a ``LicenseRef-`` of the author's own (matched exactly, case included).

Whether an expression is allowed (:func:`allowed_by`): a licence is allowed when the
allow-list names it; ``A OR B`` when either is (the recipient may choose); ``A AND B`` when
both are; ``L WITH E`` only when the allow-list names ``L WITH E`` itself (an exception
changes the terms: allowing ``L`` does not allow every ``L WITH E``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from packager.errors import TamperedError, UsageError

LICENSE_REF = "LicenseRef-"
MAX_EXPRESSION_CHARS = 1000


@functools.cache
def _licensing() -> Any:
    # Deferred: the SPDX index is read once, and only by commands that look at licences.
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _parse(text: str) -> Any:
    """The parsed expression; raises ValueError (with the library's reason) when invalid."""
    from license_expression import ExpressionError, ExpressionParseError

    if not isinstance(text, str) or not text.strip():
        raise ValueError("it is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"it is longer than {MAX_EXPRESSION_CHARS} characters")
    licensing = _licensing()
    try:
        parsed = licensing.parse(text, validate=False, strict=True)
    except (ExpressionError, ExpressionParseError) as e:
        raise ValueError(str(e)) from None
    except Exception:
        # IndexError or AssertionError ("( )", "( AND x OR )"); the text is untrusted.
        raise ValueError("it is not a well-formed expression") from None
    if parsed is None:
        raise ValueError("it is empty")
    unknown = [
        key for key in licensing.unknown_license_keys(parsed) if not key.startswith(LICENSE_REF)
    ]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an SPDX licence identifier or LicenseRef-")
    return parsed


def check_expression(text: str) -> str:
    """``text`` as a valid SPDX expression, in its normal spelling (what bundles record).

    Raises:
        UsageError: not a valid SPDX licence expression (the message says why).
    """
    try:
        return str(_parse(text).render())
    except ValueError as e:
        raise UsageError(
            f"invalid licence expression {text[:100]!r}: {e}; use SPDX identifiers "
            "(https://spdx.org/licenses/) joined by AND, OR, WITH, e.g. 'MIT OR Apache-2.0'"
        ) from None


def check_allow_entry(text: str) -> str:
    """One allow-list entry: a licence, or ``LICENCE WITH EXCEPTION``, in normal spelling.

    Raises:
        UsageError: anything else (allow-lists name licences, not expressions).
    """
    normal = check_expression(text)
    if not _is_licence(_parse(normal)):
        raise UsageError(
            f"allow-list entry {text!r} is an expression: list each licence on its own"
        )
    return normal


def allowed_by(expression: str, allow: Collection[str]) -> tuple[bool, str]:
    """Whether the recorded ``expression`` is allowed by ``allow`` (entries in normal
    spelling, see :func:`check_allow_entry`), and the expression as parsed.

    Raises:
        TamperedError: ``expression`` (from a bundle) is not a valid SPDX expression.
    """
    try:
        parsed = _parse(expression)
    except ValueError as e:
        raise TamperedError(
            f"licence {expression[:100]!r} is not an SPDX expression: {e}"
        ) from None
    return _allowed(parsed, frozenset(allow)), str(parsed.render())


def _is_licence(node: Any) -> bool:
    from license_expression import LicenseSymbol, LicenseWithExceptionSymbol

    return isinstance(node, LicenseSymbol | LicenseWithExceptionSymbol)


def _allowed(node: Any, allow: frozenset[str]) -> bool:
    if _is_licence(node):
        return str(node.render()) in allow
    licensing = _licensing()
    if isinstance(node, licensing.AND):
        return all(_allowed(arg, allow) for arg in node.args)
    if isinstance(node, licensing.OR):
        return any(_allowed(arg, allow) for arg in node.args)
    return False
