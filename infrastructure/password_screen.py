"""Common and context passwords refused, offline, by zxcvbn's estimate of guesses."""

from __future__ import annotations

import re
import unicodedata

from zxcvbn import zxcvbn

# Below a million guesses (zxcvbn's score 0 and 1): what a throttled online
# attack or a top-passwords list reaches. Its lists hold the 30 000 most
# common passwords, with l33t, reversal, keyboard and repetition variants.
MIN_GUESSES = 10**6
# zxcvbn's cost grows fast with length; the first 72 characters decide.
SCREENED_LENGTH = 72
MIN_SHARED = 4  # letters and digits of the address a password may not be made of
MADE_OF_THE_ADDRESS = "It is made from the email address."


class ZxcvbnScreen:
    """Refuse what zxcvbn guesses in under a million tries, knowing the address."""

    def weakness(self, password: str, email: str) -> str | None:
        password = unicodedata.normalize("NFKC", password)[:SCREENED_LENGTH]
        squeezed = _letters(password)
        if len(squeezed) >= MIN_SHARED and squeezed in _letters(email):
            return MADE_OF_THE_ADDRESS  # the address, cut or joined up
        result = zxcvbn(password, user_inputs=context_words(email))
        if result["guesses"] >= MIN_GUESSES:
            return None
        if any(m.get("dictionary_name") == "user_inputs" for m in result["sequence"]):
            return MADE_OF_THE_ADDRESS
        warning: str = result["feedback"]["warning"]
        return warning or "It is too easy to guess."


def context_words(email: str) -> list[str]:
    """The address, its local part and domain, and each word in them."""
    folded = unicodedata.normalize("NFKC", email).casefold()
    local, _, domain = folded.rpartition("@")
    words = re.split(r"[^\w]+|_", folded)
    return [w for w in dict.fromkeys([folded, local, domain, *words]) if len(w) > 1]


def _letters(text: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum()
    )
