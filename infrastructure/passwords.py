"""bcrypt password hashing with a peppered HMAC-SHA-384 pre-hash (see ADR 0005)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import unicodedata
from types import TracebackType

import bcrypt

from application.errors import HashingBusyError


class Gate:
    """At most `concurrency` bcrypt runs at once and `max_waiting` queued.

    Past that a request is refused at once (503, retry in a second) instead
    of queueing: unauthenticated bcrypt work must not grow every login's wait.
    """

    def __init__(self, concurrency: int, max_waiting: int) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._admitted = 0
        self._limit = concurrency + max_waiting

    def __enter__(self) -> None:
        with self._lock:
            if self._admitted >= self._limit:
                raise HashingBusyError
            self._admitted += 1
        self._slots.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._slots.release()
        with self._lock:
            self._admitted -= 1


def nfkc(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class BcryptPasswordHasher:
    """Hash `base64(HMAC-SHA-384(pepper, password))` with bcrypt.

    bcrypt reads only 72 bytes (bcrypt 5 raises beyond them); the 64-byte
    base64 digest lets every character of a long password count, has no NUL
    bytes, and the server-side pepper means a stolen table alone cannot be
    cracked, nor "shucked" against leaked unsalted hashes.
    """

    def __init__(
        self,
        pepper: bytes,
        rounds: int = 12,
        *,
        concurrency: int = os.cpu_count() or 1,
        max_waiting: int | None = None,
    ) -> None:
        self._pepper = pepper
        self._rounds = rounds
        self._gate = Gate(
            concurrency, 8 * concurrency if max_waiting is None else max_waiting
        )
        self._dummy_hash = self.hash("an unguessable placeholder password")

    def _prehash(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode(), hashlib.sha384).digest()
        return base64.b64encode(digest)

    def hash(self, password: str) -> str:
        """Return a bcrypt hash of the peppered password, in NFKC form."""
        salt = bcrypt.gensalt(rounds=self._rounds)
        with self._gate:
            return bcrypt.hashpw(self._prehash(nfkc(password)), salt).decode()

    def verify(self, password: str, password_hash: str) -> bool:
        """Tell whether the password matches; constant-time inside bcrypt.

        A password typed composed or decomposed, full-width or not, is one
        password. A hash made before passwords were normalised was made of the
        password as typed, so when normalising changes it that form is tried
        too: against every hash and the dummy alike, so the number of runs
        tells nothing about the account. (A form NFKC changes is never one
        a newer hash was made of: NFKC's results are its fixed points.)
        """
        forms = dict.fromkeys([nfkc(password), password])
        with self._gate:
            matches = [
                bcrypt.checkpw(self._prehash(form), password_hash.encode())
                for form in forms
            ]
        return any(matches)

    def verify_dummy(self, password: str) -> None:
        """Spend one real check, so an unknown email takes as long as a known one."""
        self.verify(password, self._dummy_hash)
