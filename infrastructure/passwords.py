"""bcrypt password hashing with a peppered HMAC-SHA-384 pre-hash (see ADR 0005)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from application.errors import HashingBusyError
from infrastructure.instruments import hashing

T = TypeVar("T")


class CpuPool:
    """Threads of its own for CPU work requests ask for (bcrypt): at most
    `threads` runs at once, at a lower OS priority than request handling,
    and at most `max_waiting` queued.

    Past that a request is refused at once (503, retry in a second) instead
    of queueing: unauthenticated bcrypt work must not grow every login's
    wait. A request that waits for its hash holds no database connection,
    and when the cores are busy the scheduler serves request handling first.
    """

    def __init__(self, threads: int, max_waiting: int, niceness: int) -> None:
        self._executor = ThreadPoolExecutor(
            threads,
            thread_name_prefix="bcrypt",
            initializer=_lower_priority,
            initargs=(niceness,),
        )
        self._lock = threading.Lock()
        self._admitted = 0
        self._limit = threads + max_waiting

    def run(self, work: Callable[[], T]) -> T:
        with self._lock:
            if self._admitted >= self._limit:
                raise HashingBusyError
            self._admitted += 1
        try:
            return self._executor.submit(work).result()
        finally:
            with self._lock:
                self._admitted -= 1


def _lower_priority(niceness: int) -> None:
    """Lower this thread's priority: Linux gives each thread a nice value of
    its own (elsewhere the call would lower the whole process, so it is not made)."""
    if niceness and sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


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
        niceness: int = 0,
    ) -> None:
        self._pepper = pepper
        self._rounds = rounds
        self._pool = CpuPool(
            concurrency,
            8 * concurrency if max_waiting is None else max_waiting,
            niceness,
        )
        self._dummy_hash = self.hash("an unguessable placeholder password")

    def _prehash(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode(), hashlib.sha384).digest()
        return base64.b64encode(digest)

    def hash(self, password: str) -> str:
        """Return a bcrypt hash of the peppered password, in NFKC form."""
        salt = bcrypt.gensalt(rounds=self._rounds)
        peppered = self._prehash(nfkc(password))
        with hashing("hash"):
            return self._pool.run(lambda: bcrypt.hashpw(peppered, salt).decode())

    def verify(self, password: str, password_hash: str) -> bool:
        """Tell whether the password matches; constant-time inside bcrypt.

        A password typed composed or decomposed, full-width or not, is one
        password. A hash made before passwords were normalised was made of the
        password as typed, so when normalising changes it that form is tried
        too: against every hash and the dummy alike, so the number of runs
        tells nothing about the account. (A form NFKC changes is never one
        a newer hash was made of: NFKC's results are its fixed points.)
        """
        peppered = [
            self._prehash(form) for form in dict.fromkeys([nfkc(password), password])
        ]
        stored = password_hash.encode()
        with hashing("verify"):
            matches = self._pool.run(
                lambda: [bcrypt.checkpw(p, stored) for p in peppered]
            )
        return any(matches)

    def verify_dummy(self, password: str) -> None:
        """Spend one real check, so an unknown email takes as long as a known one."""
        self.verify(password, self._dummy_hash)
