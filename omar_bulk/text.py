"""Text from elsewhere (the server, a manifest), made safe to print on a terminal."""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def printable(text: str, limit: int = 200) -> str:
    """``text`` with every control, format and line-separator character escaped (so an
    escape sequence or a bidirectional override shows as ``\\x1b`` or ``\\u202e`` instead of
    acting), cut to ``limit`` characters with an ellipsis."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    shown = "".join(out)
    return shown if len(shown) <= limit else shown[: max(0, limit - 3)] + "..."
