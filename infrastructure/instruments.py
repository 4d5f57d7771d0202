"""Prometheus instruments, kept for a scrape that sums them over the worker processes.

`serve` names a fresh directory in PROMETHEUS_MULTIPROC_DIR before it starts
its workers, so every value here is kept in a file per process and a scrape
adds them up (prometheus_client's multiprocess mode): a counter neither resets
nor splits when a request lands on another worker. Without that variable
(tests, the CLI) the values live in the process.

No label takes a value from a request: routes are templates, outcomes and
kinds are fixed words, read models and pools are named by the code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter, Gauge, Histogram

from application.ports import Tally
from infrastructure.tracing import TRACER

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# Request latency: a session check takes milliseconds, a login a bcrypt round.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
APPEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
HASH_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

HTTP_REQUESTS = Counter(
    "authledger_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
)
HTTP_LATENCY = Histogram(
    "authledger_http_request_duration_seconds",
    "Time from a request's head to its answer's end, by route template.",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "authledger_http_requests_in_flight",
    "Requests being answered now.",
    multiprocess_mode="livesum",
)
EVENTS_APPENDED = Counter(
    "authledger_events_appended",
    "Events committed to the log, by type.",
    ("type",),
)
APPEND_LATENCY = Histogram(
    "authledger_event_append_duration_seconds",
    "From an append's first statement to its commit.",
    buckets=APPEND_BUCKETS,
)
PROJECTION_FAILURES = Counter(
    "authledger_projection_failures",
    "Projection runs stopped by an error (each restarts from its position).",
    ("worker",),
)
CAUGHT_UP_NAME = "authledger_read_model_caught_up_timestamp_seconds"
CAUGHT_UP = Gauge(
    CAUGHT_UP_NAME,
    "When the read model version last applied every event committed before then.",
    ("schema",),
    multiprocess_mode="max",
)
HASHES_IN_FLIGHT = Gauge(
    "authledger_password_hashes_in_flight",
    "Password hashes running or waiting for a thread.",
    multiprocess_mode="livesum",
)
HASH_LATENCY = Histogram(
    "authledger_password_hash_duration_seconds",
    "Time of one bcrypt hash or check (its wait for a thread included).",
    ("operation",),
    buckets=HASH_BUCKETS,
)
POOL_CONNECTIONS = Gauge(
    "authledger_db_pool_connections",
    "Connections of each database pool, in use or idle (sampled every second).",
    ("pool", "state"),
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "authledger_db_pool_requests_waiting",
    "Callers waiting for a connection of the pool (sampled every second).",
    ("pool",),
    multiprocess_mode="livesum",
)
MAILS = Counter(
    "authledger_mails",
    "Mail handed to the server, or refused by it, by kind.",
    ("kind", "outcome"),
)

TALLIES: dict[Tally, tuple[str, tuple[str, ...]]] = {
    Tally.LOGIN: ("Logins by outcome.", ("outcome",)),
    Tally.SIGNUP: ("Signups by outcome.", ("outcome",)),
    Tally.REFRESH: ("Refresh token rotations by outcome.", ("outcome",)),
    Tally.TOKEN_REUSE: ("Retired refresh tokens replayed (session revoked).", ()),
    Tally.LOCKOUT: ("Accounts locked by failed logins.", ()),
    Tally.PASSWORD_CHANGE: ("Passwords changed, by kind.", ("kind",)),
    Tally.MFA_CHECK: ("Second-factor checks at login, by outcome.", ("outcome",)),
}
TALLY_COUNTERS = {
    tally: Counter(f"authledger_{tally.value}", about, labels)
    for tally, (about, labels) in TALLIES.items()
}


class PrometheusMeter:
    """The application's tallies as counters."""

    def count(self, tally: Tally, label: str = "") -> None:
        counter = TALLY_COUNTERS[tally]
        (counter.labels(label) if label else counter).inc()


def event_type(topic: str) -> str:
    """An event class's qualified name ("User.Registered") from its topic."""
    return topic.rpartition(":")[2]


def appended(topics: Iterable[str], started: float) -> None:
    """Count a committed append's events and how long it took."""
    APPEND_LATENCY.observe(time.perf_counter() - started)
    for topic in topics:
        EVENTS_APPENDED.labels(event_type(topic)).inc()


@contextmanager
def hashing(operation: str) -> Iterator[None]:
    """Count a password hash in flight, time it (its wait included), trace it."""
    started = time.perf_counter()
    HASHES_IN_FLIGHT.inc()
    try:
        with TRACER.start_as_current_span(f"password.{operation}"):
            yield
    finally:
        HASHES_IN_FLIGHT.dec()
        HASH_LATENCY.labels(operation).observe(time.perf_counter() - started)


class Pool(Protocol):
    def get_stats(self) -> dict[str, int]: ...


def sample_pools(pools: dict[str, Pool]) -> Callable[[], None]:
    """A job that records each pool's connections and waiting callers."""

    def sample() -> None:
        for name, pool in pools.items():
            stats = pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            POOL_CONNECTIONS.labels(name, "in_use").set(size - idle)
            POOL_CONNECTIONS.labels(name, "idle").set(idle)
            POOL_WAITING.labels(name).set(stats.get("requests_waiting", 0))

    return sample
