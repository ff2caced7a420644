"""Text chosen by others reaches a terminal escaped, never as control or bidi characters."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omar_bulk.text import printable

TABLE = [
    ("plain ASCII stays", "Service Unavailable", "Service Unavailable"),
    ("letters beyond ASCII stay", "Zählerstand €", "Zählerstand €"),
    ("an ESC sequence is shown", "OK\x1b[2J\x1b]0;owned\x07", "OK\\x1b[2J\\x1b]0;owned\\x07"),
    ("tab, newline, return", "a\tb\nc\rd", "a\\tb\\nc\\rd"),
    ("NUL and DEL", "\x00\x7f", "\\x00\\x7f"),
    ("C1 controls, NEL and CSI", "a\x85b\x9bc", "a\\x85b\\x9bc"),
    ("right-to-left override", "abc\u202etxt.exe", "abc\\u202etxt.exe"),
    ("left-to-right mark", "\u200eM1", "\\u200eM1"),
    ("line and paragraph separators", "a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    ("zero-width space and BOM", "\u200bx\ufeff", "\\u200bx\\ufeff"),
    ("a tag character beyond the BMP", "x\U000e0041", "x\\U000e0041"),
    ("a byte that did not decode", "x\udcff", "x\\udcff"),
    ("the empty string", "", ""),
]


@pytest.mark.parametrize(("why", "text", "shown"), TABLE, ids=[row[0] for row in TABLE])
def test_unsafe_characters_are_escaped(why: str, text: str, shown: str) -> None:
    """Each row: what a server or a manifest could send, and what the terminal gets."""
    assert printable(text) == shown


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("abcdef", 6, "abcdef"),
        ("abcdefg", 6, "abcde…"),
        ("ab\x1bcd", 4, "ab…"),  # the escape would be cut in half: it goes whole
        ("\x1b\x1b", 5, "\\x1b…"),
        ("abc", 1, "…"),
    ],
)
def test_long_text_is_cut_with_an_ellipsis_never_inside_an_escape(
    text: str, limit: int, shown: str
) -> None:
    """The limit bounds the result, ellipsis included."""
    assert printable(text, limit=limit) == shown


def test_a_limit_below_one_is_a_programming_error() -> None:
    """No text fits in zero characters, not even the ellipsis."""
    with pytest.raises(ValueError, match="limit"):
        printable("x", limit=0)


@given(st.text(), st.integers(1, 300))
def test_nothing_unsafe_survives_and_the_limit_holds(text: str, limit: int) -> None:
    """Any text at all: the result holds no control, format or separator character."""
    shown = printable(text, limit=limit)
    assert len(shown) <= limit
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in shown)
    shown.encode("utf-8")  # printable to any UTF-8 terminal: no lone surrogates left
