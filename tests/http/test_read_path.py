"""The authenticated request's path: one indexed read, and a logout that stops
the next request at once in every worker, whatever each worker keeps."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import psutil
import psycopg
import pytest
from psycopg.sql import SQL

from infrastructure.postgres_views import CALLER_QUERY
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, new_email
from tests.http.workers import call, connections_to_both_workers

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
