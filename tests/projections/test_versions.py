"""Read models are rebuilt from the log beside the live ones, then switched to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.values import Client
from infrastructure.projection_runner import ReadModelSpec
from infrastructure.read_model_registry import live_versions
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    ACTIVE_SESSIONS,
    LOGIN_HISTORY,
    MAIL_OUTBOX,
    READ_MODELS,
    USER_DIRECTORY,
    Services,
    build_services,
)
from tests.http.conftest import start_server, stop_server
from tests.integration.helpers import (
    rebuild_from_zero,
    wait_for_read_models,
    wait_until,
)
from tests.projections.v2 import BEFORE, USER_DIRECTORY_V2

pytestmark = pytest.mark.postgres
CLIENT = Client("192.0.2.10", "pytest")
PASSWORD = "a versioned passphrase"


def rows_of(url: str, schema: str, table: str, order_by: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        query = SQL("SELECT * FROM {} ORDER BY {}").format(
            Identifier(schema, table), Identifier(order_by)
        )
        return conn.execute(query).fetchall()


def workload(services: Services, users: int, prefix: str) -> None:
    for n in range(users):
        email = f"{prefix}-{n}@example.com"
        grant = services.app.register(email, PASSWORD, CLIENT)
        services.app.login(email, PASSWORD, CLIENT)
        rotated = services.app.refresh(grant.refresh_token, CLIENT)
        if n % 3 == 0:
            services.app.logout(grant.user_id, rotated.session_id, CLIENT)
        if n % 4 == 0:
            services.app.verify_email(grant.user_id)
        if n % 5 == 0:
            services.app.logout_all(grant.user_id, CLIENT)
        if n % 4 == 2:
            services.app.set_disabled(grant.user_id, True, None, CLIENT)
        if n % 6 == 1:  # asked for a link, erased, and the address signed up again
            services.mail.request_verification(grant.user_id, CLIENT)
            services.app.erase(grant.user_id, None, CLIENT)
            services.app.register(email, PASSWORD, CLIENT)


@pytest.fixture
def v1(settings: Settings) -> Iterator[Services]:
    """The release before: version 1 of the users read model."""
    services = build_services(settings, BEFORE)
    yield services
    services.close()


@pytest.fixture
def current(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    yield services
    services.close()


def live_schemas_of(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {name: v.schema for name, v in live_versions(conn).items()}


@pytest.mark.parametrize(
    ("spec", "order_by"),
    [
        (USER_DIRECTORY, "id"),
        (ACTIVE_SESSIONS, "session_id"),
        (LOGIN_HISTORY, "position"),
        (MAIL_OUTBOX, "position"),
    ],
)
def test_a_rebuild_from_zero_equals_the_incrementally_built_tables_row_for_row(
    current: Services, spec: ReadModelSpec[Any], order_by: str
) -> None:
    # Given: tables kept inline (consistent) or by the runner (lagging)
    workload(current, 12, "incremental")
    mailed = current.app.find_user_by_email("incremental-1@example.com")
    assert mailed is not None
    current.mail.request_verification(mailed.id, CLIENT)
    url = current.database_url
    wait_for_read_models(current)

    # When: the same projection replays the whole log into a fresh schema
    (rebuilt,) = rebuild_from_zero(current.settings, [spec])

    # Then
    live = live_schemas_of(url)[spec.name]
    incremental = rows_of(url, live, spec.view.table, order_by)
    assert incremental
    assert rows_of(url, rebuilt.schema, spec.view.table, order_by) == incremental


def test_a_consistent_version_built_under_http_traffic_switches_without_failures(
    v1: Services,
) -> None:
    # Given: version 1 of the users read model live, with history
    workload(v1, 40, "before")
    url = v1.database_url
    v1.close()

    # When: a release with version 2 serves HTTP while it builds and switches
    process, base_url = start_server(
        url, v1.settings.data_dir, module="tests.projections.v2"
    )
    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def keep_calling() -> None:
        nonlocal calls
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                email = {"email": f"during-{calls}@example.com", "password": PASSWORD}
                steps = [
                    (http.post("/api/auth/signup", json=email), 201),
                    (http.post("/api/auth/login", json=email), 200),
                ]
                tokens = steps[-1][0].json()
                bearer = {"authorization": f"Bearer {tokens['access_token']}"}
                steps += [
                    (
                        http.post(
                            "/api/auth/refresh",
                            json={"refresh_token": tokens["refresh_token"]},
                        ),
                        200,
                    ),
                    (http.get("/api/auth/me", headers=bearer), 200),
                    (http.post("/api/auth/logout?scope=current", headers=bearer), 200),
                    (http.get("/api/auth/me", headers=bearer), 401),
                ]
                failures.extend(
                    f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
                    for r, expected in steps
                    if r.status_code != expected
                )
                calls += 1

    client = threading.Thread(target=keep_calling)
    client.start()
    try:
        wait_until(
            lambda: live_schemas_of(url)["user_directory"] == "user_directory_v2",
            60,
            "the switch to version 2",
        )
        switched_at_call = calls
        wait_until(lambda: calls >= switched_at_call + 5, 60, "calls after it")
    finally:
        stop.set()
        client.join()
        stop_server(process)

    # Then: no request failed, calls ran on both sides of the switch, and
    # version 2, written by its build and then inline, equals a rebuild
    assert failures == []
    assert switched_at_call > 0
    (rebuilt,) = rebuild_from_zero(v1.settings, [USER_DIRECTORY_V2])
    incremental = rows_of(url, "user_directory_v2", "users", "id")
    assert len(incremental) == 40 + len(range(1, 40, 6)) + calls  # re-signups
    assert rows_of(url, rebuilt.schema, "users", "id") == incremental
    with psycopg.connect(url) as conn:
        disabled = conn.execute(
            "SELECT count(*) FROM read_models.users WHERE disabled"
        ).fetchone()
    assert disabled == (len(range(2, 40, 4)),)


def test_the_registry_starts_with_the_newest_versions_live_and_consistent_ones_inline(
    current: Services,
) -> None:
    with psycopg.connect(current.database_url) as conn:
        live = live_versions(conn)
    assert {name: v.schema for name, v in live.items()} == {
        spec.name: spec.schema for spec in READ_MODELS
    }
    assert {name for name, v in live.items() if v.inline} == {
        spec.name for spec in READ_MODELS if spec.consistent
    }


def test_a_batch_that_ends_in_a_run_of_one_statement_records_its_position(
    current: Services,
) -> None:
    # Given: a log that ends in rotations of three sessions, one after another
    grants = [
        current.app.register(f"run-{n}@example.com", PASSWORD, CLIENT) for n in range(3)
    ]
    for grant in grants:
        current.app.refresh(grant.refresh_token, CLIENT)

    # When: a rebuild applies them in one batch (one executemany)
    (rebuilt,) = rebuild_from_zero(current.settings, [ACTIVE_SESSIONS])

    # Then: the rows and the position are the live ones
    url = current.database_url
    assert rows_of(url, rebuilt.schema, "active_sessions", "session_id") == rows_of(
        url, "read_models", "active_sessions", "session_id"
    )
    assert {
        row[2] for row in rows_of(url, rebuilt.schema, "active_sessions", "session_id")
    } == {1}
