"""Nothing acknowledged is lost: neither when the server dies nor when PG restarts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from infrastructure.embedded_db import start_embedded_postgres
from tests.conftest import embedded_postgres
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, bearer, new_email

pytestmark = [pytest.mark.http, pytest.mark.postgres]


@dataclass
class Acknowledged:
    """What the server said 2xx to, and every status it answered."""

    signups: dict[str, str] = field(default_factory=dict)  # email -> user id
    logouts: set[str] = field(default_factory=set)  # user ids
    statuses: list[int] = field(default_factory=list)


def traffic(base_url: str, seen: Acknowledged, stop: threading.Event) -> None:
    """Sign up, log in and log out in a loop; remember what was acknowledged."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        while not stop.is_set():
            try:
                email = new_email()
                signed = http.post(
                    "/api/auth/signup", json={"email": email, "password": PASSWORD}
                )
                seen.statuses.append(signed.status_code)
                if signed.status_code != 201:
                    continue
                tokens = signed.json()
                seen.signups[email] = tokens["user"]["id"]
                out = http.post("/api/auth/logout", headers=bearer(tokens))
                seen.statuses.append(out.status_code)
                if out.status_code == 200:
                    seen.logouts.add(tokens["user"]["id"])
            except httpx.TransportError:
                time.sleep(0.05)  # the server is down: not acknowledged, try again


def assert_all_acknowledged_is_stored(url: str, seen: Acknowledged) -> None:
    with psycopg.connect(url) as conn:
        topics = conn.execute(
            "SELECT originator_id::text, topic FROM auth_events"
        ).fetchall()
        users = {
            str(row[0]) for row in conn.execute("SELECT id FROM read_models.users")
        }
        live_sessions = {
            str(row[0])
            for row in conn.execute("SELECT user_id FROM read_models.active_sessions")
        }
    registered = {
        aggregate
        for aggregate, topic in topics
        if topic == "authledger:User.Registered"
    }
    claims = sum(topic == "authledger:EmailClaim.Claimed" for _, topic in topics)
    assert set(seen.signups.values()) <= registered
    assert set(seen.signups.values()) <= users
    assert not seen.logouts & live_sessions
    # Nothing half-applied: every registration has its claim, in the same save.
    assert claims == len(registered)


def wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("not ready")


def test_a_server_killed_at_random_moments_loses_nothing_it_acknowledged(
    database_url: str, tmp_path: Path
) -> None:
    seen, stop = Acknowledged(), threading.Event()
    process, base_url = start_server(database_url, tmp_path / "data")
    port = int(base_url.rsplit(":", 1)[1])
    client = threading.Thread(target=traffic, args=(base_url, seen, stop))
    client.start()
    try:
        for _ in range(3):
            time.sleep(random.uniform(0.3, 1.2))
            process.kill()  # SIGKILL: no shutdown, no flush
            process.wait()
            process, _ = start_server(database_url, tmp_path / "data", port=port)
    finally:
        time.sleep(0.5)
        stop.set()
        client.join()
        stop_server(process)

    assert len(seen.signups) >= 3
    assert all(status < 500 or status == 503 for status in seen.statuses)
    assert_all_acknowledged_is_stored(database_url, seen)


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server of this test's own, since the test restarts it."""
    with embedded_postgres() as server:
        yield server


def test_a_database_restart_under_load_answers_503_then_recovers_losing_nothing(
    own_postgres: tuple[str, Path], tmp_path: Path
) -> None:
    url, pg_dir = own_postgres
    process, base_url = start_server(url, tmp_path / "data")
    seen, stop = Acknowledged(), threading.Event()
    client = threading.Thread(target=traffic, args=(base_url, seen, stop))
    client.start()
    try:
        time.sleep(1)
        server = start_embedded_postgres(pg_dir)
        server.stop()  # the database goes away under load
        time.sleep(2)
        during = httpx.get(f"{base_url}/api/auth/me", timeout=5)
        start_embedded_postgres(pg_dir).ensure_postgres_running()
        wait_ready(base_url)
        acknowledged_before = len(seen.signups)
        # It recovers by itself: new signups are acknowledged again (a request
        # caught by the restart may take its retries first).
        deadline = time.monotonic() + 10
        while len(seen.signups) <= acknowledged_before + 2:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        client.join()
        stop_server(process)

    assert during.status_code == 503
    assert during.json()["code"] == "database_unavailable"
    assert len(seen.signups) > acknowledged_before + 2  # it recovered by itself
    assert all(status < 500 or status == 503 for status in seen.statuses)
    assert_all_acknowledged_is_stored(url, seen)
