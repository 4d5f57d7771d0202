"""A database that is blocked or frozen rather than down: answers within the
request deadline, then recovery with nothing acknowledged lost and no session
revoked by clients that retried.

The faults: a migration's ACCESS EXCLUSIVE lock on the events table held for
30 seconds (nothing reads or writes it meanwhile); the service's backends
stopped with SIGSTOP (a frozen server: TCP still acknowledged, nothing
answered).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, bearer, new_email

pytestmark = [pytest.mark.http, pytest.mark.postgres]

DEADLINE_S = 5.0  # the default request deadline
LOCK_HELD_S = 30.0
# Past the deadline + 1 s, and short enough for a refresh stored at its start
# to be retried within the reuse interval (10 s) once it is over.
FROZEN_S = 7.0
REUSE_INTERVAL_S = 10
RETRY_WITHIN_S = 9.0
CLIENTS = 6


@dataclass
class Seen:
    """Every answer with its duration, and what was acknowledged."""

    answers: list[tuple[str, int, str, float, bool]] = field(default_factory=list)
    signups: set[str] = field(default_factory=set)  # user ids
    logouts: set[str] = field(default_factory=set)  # user ids, all sessions ended
    refresh_tokens: dict[int, str] = field(default_factory=dict)  # client -> latest

    def call(self, http: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        started = time.monotonic()
        answer = http.request(method, path, **kw)
        code = answer.json().get("code", "") if answer.status_code >= 400 else ""
        retry_after = "retry-after" in answer.headers
        self.answers.append(
            (path, answer.status_code, code, time.monotonic() - started, retry_after)
        )
        return answer

    def retried(self, http: httpx.Client, path: str, **kw: Any) -> Any:
        """POST until answered other than 503, within the reuse interval: a
        refresh retried later looks like a stolen token, and ends the session."""
        give_up = time.monotonic() + RETRY_WITHIN_S
        while True:
            answer = self.call(http, "POST", path, **kw)
            if answer.status_code != 503 or time.monotonic() > give_up:
                return answer
            time.sleep(0.1)


def client_loop(base_url: str, number: int, seen: Seen, stop: threading.Event) -> None:
    """A well-behaved client: retries a refresh answered 503 with the same
    token at once, as it must."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        first = http.post(
            "/api/auth/signup", json={"email": new_email(), "password": PASSWORD}
        ).json()
        seen.refresh_tokens[number] = first["refresh_token"]
        access = first
        while not stop.is_set():
            refreshed = seen.retried(
                http,
                "/api/auth/refresh",
                json={"refresh_token": seen.refresh_tokens[number]},
            )
            if refreshed.status_code == 200:
                access = refreshed.json()
                seen.refresh_tokens[number] = access["refresh_token"]
            seen.call(http, "GET", "/api/auth/me", headers=bearer(access))
            email = new_email()
            signed = seen.call(
                http,
                "POST",
                "/api/auth/signup",
                json={"email": email, "password": PASSWORD},
            )
            if signed.status_code == 201:
                tokens = signed.json()
                seen.signups.add(tokens["user"]["id"])
                out = seen.call(
                    http, "POST", "/api/auth/logout", headers=bearer(tokens)
                )
                if out.status_code == 200:
                    seen.logouts.add(tokens["user"]["id"])


@contextmanager
def traffic(base_url: str) -> Iterator[Seen]:
    """CLIENTS clients in a loop while the block runs (and a moment after)."""
    seen, stop = Seen(), threading.Event()
    clients = [
        threading.Thread(target=client_loop, args=(base_url, n, seen, stop))
        for n in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)
        yield seen
    finally:
        stop.set()
        for client in clients:
            client.join()


def assert_true_and_in_time(url: str, base_url: str, seen: Seen) -> None:
    """Every answer within the deadline + 1 s, and true: a success, or a
    retryable 503 (no false 401 or 409, no 500); then nothing lost."""
    slowest = max(answer[3] for answer in seen.answers)
    assert slowest <= DEADLINE_S + 1, slowest
    failures = {(a[0], a[1], a[2], a[4]) for a in seen.answers if a[1] >= 300}
    assert {f[1:] for f in failures} <= {(503, "database_unavailable", True)}, failures
    assert failures, "the fault never reached a request"
    with psycopg.connect(url) as conn:
        registered = {
            str(row[0])
            for row in conn.execute(
                "SELECT originator_id FROM auth_events"
                " WHERE topic = 'authledger:User.Registered'"
            )
        }
        revocations = {
            str(row[0]): bytes(row[1]).decode()
            for row in conn.execute(
                "SELECT originator_id, state FROM auth_events WHERE topic IN"
                " ('authledger:Session.Revoked', 'authledger:User.SessionsRevoked')"
            )
        }
        live = {
            str(row[0])
            for row in conn.execute("SELECT user_id FROM read_models.active_sessions")
        }
    assert seen.signups <= registered
    assert seen.logouts <= set(revocations)
    assert not seen.logouts & live
    assert not [s for s in revocations.values() if "reuse_detected" in s]
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for token in seen.refresh_tokens.values():
            again = http.post("/api/auth/refresh", json={"refresh_token": token})
            assert again.status_code == 200, again.text


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The service as deployed: default deadline and refresh reuse interval."""
    process, base_url = start_server(
        database_url,
        tmp_path / "data",
        AUTHLEDGER_REFRESH_REUSE_INTERVAL_S=str(REUSE_INTERVAL_S),
    )
    yield base_url
    stop_server(process)


def test_a_30_second_lock_on_the_events_table_costs_no_answer_its_deadline(
    database_url: str, server: str
) -> None:
    with traffic(server) as seen, psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE auth_events IN ACCESS EXCLUSIVE MODE")
        time.sleep(LOCK_HELD_S)
        blocker.rollback()
        during = len(seen.answers)
        time.sleep(2 * DEADLINE_S)

    assert len(seen.answers) > during  # it answered again after the lock
    assert_true_and_in_time(database_url, server, seen)


def test_a_frozen_database_costs_no_answer_its_deadline(
    database_url: str, server: str
) -> None:
    with traffic(server) as seen:
        with psycopg.connect(database_url, autocommit=True) as conn:
            backends = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    " AND application_name LIKE 'authledger%'"
                )
            ]
        for pid in backends:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(FROZEN_S)
        finally:
            for pid in backends:
                os.kill(pid, signal.SIGCONT)
        during = len(seen.answers)
        time.sleep(2 * DEADLINE_S)

    assert backends
    assert len(seen.answers) > during
    assert_true_and_in_time(database_url, server, seen)


def test_readiness_says_when_appends_are_blocked_and_answers_within_a_second(
    database_url: str, server: str
) -> None:
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE auth_events IN EXCLUSIVE MODE")
        time.sleep(1.5)  # a probe round sees it
        started = time.monotonic()
        blocked = httpx.get(f"{server}/readyz", timeout=10)
        took = time.monotonic() - started
        blocker.execute("LOCK TABLE auth_events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        locked = httpx.get(f"{server}/readyz", timeout=10)
        took_locked = time.monotonic() - started
    time.sleep(1.5)
    ready = httpx.get(f"{server}/readyz", timeout=10)

    assert blocked.status_code == 503
    assert blocked.json()["checks"]["events"] == "appends blocked by a lock"
    assert took < 1.0
    assert locked.status_code == 503
    assert "unreachable" in locked.json()["checks"]["database"]
    assert took_locked < 1.0
    assert ready.status_code == 200
