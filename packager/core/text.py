r"""Text from outside made safe to show and to log (pure).

A registry, a server's error body or a file may put anything in a media type, a digest, a
tag or a message: an escape sequence that moves the cursor or clears a line, a carriage
return or a newline that starts a forged line ("install ok"), a Unicode bidi override that
shows text in another order. :func:`printable` is the one rule that turns such a string into
data: every character Python does not call printable (controls C0 and C1, DEL, format
characters such as the bidi overrides, line and paragraph separators, unpaired surrogates)
becomes a visible escape such as ``\x1b``, ``\n`` or ``\u202e``, and the length is capped.
"""

from __future__ import annotations

from collections.abc import Callable

# What a long operation tells a line of text at each step it takes (the CLI prints it).
Progress = Callable[[str], None]

# How long one untrusted string may be inside a message.
LIMIT = 200
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, limit: int | None = LIMIT) -> str:
    """``text`` with each character that is not printable replaced by its escape, cut to
    ``limit`` characters of the original (None: no cut) and then saying how many more
    there were.

    Plain text comes back unchanged, and the result is printable, so applying it again
    (as the command line does to whole messages) changes nothing more.
    """
    cut = text if limit is None else text[:limit]
    safe = cut if cut.isprintable() else "".join(_escape(c) for c in cut)
    more = len(text) - len(cut)
    return safe if not more else f"{safe}… ({more} more characters)"


def _escape(char: str) -> str:
    if char.isprintable():
        return char
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
