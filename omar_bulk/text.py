"""Text that others chose (a server's reason phrase or page title, an id in a manifest), made
safe to show on a terminal or in a log.

A terminal acts on control characters (an ESC starts a sequence that can move the cursor, retitle
the window or hide what follows), and bidirectional overrides such as U+202E reorder what a
reader sees. So every such character is shown as an escape instead: ``\\x1b``, ``\\u202e``.
"""

from __future__ import annotations

import unicodedata

__all__ = ["DEFAULT_LIMIT", "printable", "unprintable"]

#: Long enough for any reason phrase or title worth reading, short enough for one line.
DEFAULT_LIMIT = 200

#: Control (Cc: C0, DEL, C1), format (Cf: bidi marks and overrides, zero-width characters),
#: line and paragraph separators, and surrogates (undecodable bytes smuggled in by Python).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ELLIPSIS = "…"


def unprintable(ch: str) -> bool:
    """True for a character that must never reach a terminal as it is."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` with every unsafe character escaped, cut to at most ``limit`` characters.

    A cut text ends in "…", and an escape is never cut in half. Backslashes are left alone: the
    result is for reading, not for parsing back.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    length = 0
    for ch in text:
        piece = _escape(ch) if unprintable(ch) else ch
        if length + len(piece) > limit:
            while pieces and length + len(_ELLIPSIS) > limit:
                length -= len(pieces.pop())
            return "".join(pieces) + _ELLIPSIS
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)
