"""Text from outside, made safe to show in a log, a table or a terminal."""

from __future__ import annotations

import unicodedata

# Control characters (C0, C1: a NEL forges a line) and format characters
# (bidirectional overrides, zero-width joiners: they disguise what is shown).
_HIDDEN = frozenset({"Cc", "Cf"})


def printable(text: str) -> str:
    """`text` without its control and format characters."""
    if text.isprintable():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) not in _HIDDEN)
