"""Common and context passwords refused, offline, by zxcvbn's estimate of guesses."""

from __future__ import annotations

import os
import re

from zxcvbn import zxcvbn

from domain.values import fold_email
from infrastructure.passwords import CpuPool, nfkc

# Below a million guesses (zxcvbn's score 0 and 1): what a throttled online
# attack or a top-passwords list reaches. Its lists hold the 30 000 most
# common passwords, with l33t, reversal, keyboard and repetition variants.
MIN_GUESSES = 10**6
# zxcvbn's cost grows fast with length; the first 72 characters decide.
SCREENED_LENGTH = 72
MIN_SHARED = 4  # letters of the address a password may not be made of alone
MADE_OF_THE_ADDRESS = "It is made from the email address."


class ZxcvbnScreen:
    """Refuse what zxcvbn guesses in under a million tries, knowing the address.

    Its CPU is spent before any account exists, so it is bounded like
    bcrypt's: one run per core, eight per core waiting, then 503 at once.
    """

    def __init__(self, concurrency: int = os.cpu_count() or 1) -> None:
        self._pool = CpuPool(concurrency, 8 * concurrency, niceness=0)

    def weakness(self, password: str, email: str) -> str | None:
        return self._pool.run(lambda: self._weakness(password, email))

    def _weakness(self, password: str, email: str) -> str | None:
        password = nfkc(password)[:SCREENED_LENGTH]
        context = context_words(email)
        squeezed = _letters(password)
        mostly_letters = 2 * len(squeezed) >= len(password.replace(" ", ""))
        if (
            mostly_letters
            and len(squeezed) >= MIN_SHARED
            and any(squeezed in _letters(w) for w in context)
        ):
            return MADE_OF_THE_ADDRESS  # the address cut, joined up or numbered
        result = zxcvbn(password, user_inputs=context)
        if result["guesses"] >= MIN_GUESSES:
            return None
        if any(m.get("dictionary_name") == "user_inputs" for m in result["sequence"]):
            return MADE_OF_THE_ADDRESS
        warning: str = result["feedback"]["warning"]
        return warning or "It is too easy to guess."


def context_words(email: str) -> list[str]:
    """The address, its parts, its words, and its name's words joined either way."""
    folded = fold_email(email)
    local, _, domain = folded.rpartition("@")
    words = [w for w in re.split(r"[\W_]+", folded) if w]
    names = [w for w in re.split(r"[\W_]+", local) if w]
    joined = ["".join(names), "".join(reversed(names))]
    candidates = [folded, local, domain, *joined, *words]
    return [w for w in dict.fromkeys(candidates) if len(w) > 1]


def _letters(text: str) -> str:
    """The letters alone: separators, digits and symbols hide nothing."""
    return "".join(c for c in fold_email(text) if c.isalpha())
