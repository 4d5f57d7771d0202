"""The bcrypt bound: this machine's cores over the time of one cost-12 bcrypt."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from bench.procs import CORES
from bench.stats import Figure
from infrastructure.passwords import BcryptPasswordHasher

COST = 12
PER_RUN = 4


@dataclass(frozen=True)
class BcryptBound:
    """Seconds per checkpw and per hash (one run each), and the rates they allow."""

    check_s: Figure
    hash_s: Figure

    @property
    def logins(self) -> Figure:
        return Figure.of(CORES / s for s in self.check_s.values)

    @property
    def signups(self) -> Figure:
        return Figure.of(CORES / s for s in self.hash_s.values)


def measure(runs: int) -> BcryptBound:
    """Time the service's own hasher (peppered pre-hash + bcrypt) on one core."""
    hasher = BcryptPasswordHasher(secrets.token_bytes(32), COST)
    password = "correct horse battery staple"
    stored = hasher.hash(password)
    checks, hashes = [], []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(PER_RUN):
            if not hasher.verify(password, stored):
                raise AssertionError("bcrypt check failed")
        checks.append((time.perf_counter() - started) / PER_RUN)
        started = time.perf_counter()
        for _ in range(PER_RUN):
            hasher.hash(password)
        hashes.append((time.perf_counter() - started) / PER_RUN)
    return BcryptBound(Figure.of(checks), Figure.of(hashes))
