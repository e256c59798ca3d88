"""Text from registries is data: the one escaping rule."""

from __future__ import annotations

import pytest

from packager.core.text import printable

FORGED = "\x1b[2K\rinstall ok"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        ("iris@1.0.0 — größer", "iris@1.0.0 — größer"),
        (FORGED, "\\x1b[2K\\rinstall ok"),
        ("a\nb\tc\x00d\x7fe", "a\\nb\\tc\\x00d\\x7fe"),
        ("c1\x85\x9b31m", "c1\\x85\\x9b31m"),
        ("evil\u202egnp.exe\u2066x\u2069\u200f", "evil\\u202egnp.exe\\u2066x\\u2069\\u200f"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
    ],
    ids=["media-type", "unicode", "escape-cr", "c0-del", "c1", "bidi", "separators", "surrogate"],
)
def test_what_could_control_the_terminal_is_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(shown) == shown, "applying it again changes nothing"
    assert printable(shown).isprintable()


def test_length_is_capped_and_says_how_much_was_cut() -> None:
    assert printable("x" * 250) == "x" * 200 + "… (50 more characters)"
    assert printable("\x1b" * 10, limit=3) == "\\x1b" * 3 + "… (7 more characters)"
    assert printable("y" * 5000, limit=None) == "y" * 5000
