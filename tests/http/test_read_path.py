"""The authenticated request's path: one indexed read, and a logout that stops
the next request at once in every worker, whatever each worker keeps."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import psycopg
import pytest
from psycopg.sql import SQL

from infrastructure.postgres_views import CALLER_QUERY
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, new_email

pytestmark = [pytest.mark.http, pytest.mark.postgres]

WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(
    module_database_url: str, server_data_dir: Path
) -> Iterator[tuple[psutil.Process, str]]:
    process, base_url = start_server(
        module_database_url, server_data_dir, workers=WORKERS
    )
    yield psutil.Process(process.pid), base_url
    stop_server(process)


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, json.dumps(body) if body else None, headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"null")


def worker_of(server: psutil.Process, conn: http.client.HTTPConnection) -> int:
    """The pid of the worker that accepted this keep-alive connection."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    for worker in server.children(recursive=True):
        for socket in worker.net_connections(kind="tcp"):
            if socket.raddr and socket.raddr.port == client_port:
                return worker.pid
    raise AssertionError("no worker holds the connection")


def connections_to_both_workers(
    server: psutil.Process, base_url: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPConnection]:
    """Two keep-alive connections that the kernel gave to different workers."""
    host, port = base_url.removeprefix("http://").split(":")
    first = http.client.HTTPConnection(host, int(port), timeout=30)
    call(first, "GET", "/healthz")
    for _ in range(64):
        other = http.client.HTTPConnection(host, int(port), timeout=30)
        call(other, "GET", "/healthz")
        if worker_of(server, other) != worker_of(server, first):
            return first, other
        other.close()
    raise AssertionError("every connection went to one worker")


def test_a_logout_on_one_worker_stops_the_token_on_the_other_at_once(
    two_workers: tuple[psutil.Process, str],
) -> None:
    server, base_url = two_workers
    here, there = connections_to_both_workers(server, base_url)
    try:
        assert_revoked_at_once(here, there)
    finally:
        here.close()
        there.close()


def assert_revoked_at_once(
    here: http.client.HTTPConnection, there: http.client.HTTPConnection
) -> None:
    status, tokens = call(
        here,
        "POST",
        "/api/auth/signup",
        body={"email": new_email(), "password": PASSWORD},
    )
    assert status == 201
    access = tokens["access_token"]
    # Both workers have checked the token (and keep its signature check)
    assert call(here, "GET", "/api/auth/me", access)[0] == 200
    assert call(there, "GET", "/api/auth/me", access)[0] == 200

    # When the session ends on one worker
    assert call(here, "POST", "/api/auth/logout", access)[0] == 200

    # Then the very next request on the other is refused
    status, body = call(there, "GET", "/api/auth/me", access)
    assert status == 401
    assert body["code"] == "not_authenticated"


def test_the_session_check_is_one_read_by_primary_keys(
    module_database_url: str,
) -> None:
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            SQL("EXPLAIN (FORMAT JSON) ") + CALLER_QUERY,
            (UUID(int=1), UUID(int=2), datetime.now(UTC)),
        ).fetchone()
    assert plan is not None
    text = json.dumps(plan[0])
    assert "Seq Scan" not in text
    assert "active_sessions_pkey" in text
    assert "users_pkey" in text
