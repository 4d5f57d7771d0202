"""Does an answer tell whether an account exists? Known and unknown, interleaved.

One request at a time over one keep-alive connection, a known address and an
unknown one in random order in each pair, so drift in the machine's load falls
on both sides alike. The row compares the two sides' medians.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from bench import seed
from bench.report import Row
from bench.stats import number

if TYPE_CHECKING:
    from interfaces.bootstrap import Services

GOAL = 0.05  # medians at most 5 % apart
LOGINS_EACH = 30
Post = Callable[[httpx.Client, str], httpx.Response]


@dataclass(frozen=True)
class Sides:
    """Latencies (seconds) of requests about existing and missing accounts."""

    known: list[float]
    unknown: list[float]

    @property
    def gap(self) -> float:
        """How much longer the known side's median is, as a fraction (< 0: shorter)."""
        return statistics.median(self.known) / statistics.median(self.unknown) - 1


def measure(base_url: str, services: Services, samples: int) -> list[Row]:
    """A forgot-password row and a wrong-password login row, `samples` per side."""
    known = [f"parity-{i}@bench.example.com" for i in range(samples)]
    user_ids = seed.create_users(services, known)
    # Accounts with a history, as real ones have: each login is a User event,
    # and a snapshot comes only every 50, so a read replays up to 49.
    seed.open_sessions(services, user_ids * LOGINS_EACH)
    seed.wait_caught_up(services)

    def forgot(http: httpx.Client, email: str) -> httpx.Response:
        return http.post("/api/auth/password/forgot", json={"email": email})

    def wrong_login(http: httpx.Client, email: str) -> httpx.Response:
        body = {"email": email, "password": "not the password at all"}
        return http.post("/api/auth/login", json=body)

    with httpx.Client(base_url=base_url, timeout=30) as http:
        forgotten = interleave(http, forgot, known, 202)
        logins = interleave(http, wrong_login, known, 401)
    return [
        row(
            "forgot-password: existing vs unknown address",
            forgotten,
            "the same work for any address: one read, one append (ADR 23)",
        ),
        row(
            "failed login: existing (wrong password) vs unknown address",
            logins,
            "one bcrypt check each way (a dummy hash for the unknown)",
        ),
    ]


def interleave(http: httpx.Client, post: Post, known: list[str], status: int) -> Sides:
    """Time each known address against a fresh unknown one, in random order."""
    sides = Sides([], [])
    for n, email in enumerate(known):
        pair = [(sides.known, email), (sides.unknown, f"nobody-{n}@bench.example.com")]
        random.shuffle(pair)
        for latencies, address in pair:
            started = time.perf_counter()
            answer = post(http, address)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != status:
                raise RuntimeError(f"{answer.status_code} {answer.text}")
    return sides


def row(measure: str, sides: Sides, bound: str) -> Row:
    def median_ms(latencies: list[float]) -> str:
        return f"{number(statistics.median(latencies) * 1000)} ms"

    return Row(
        f"{measure}, {len(sides.known)} interleaved pairs",
        f"existing {median_ms(sides.known)}",
        f"unknown {median_ms(sides.unknown)}",
        f"{sides.gap * 100:+.1f} %",
        bound,
        f"medians < {GOAL:.0%} apart",
        abs(sides.gap) < GOAL,
    )
