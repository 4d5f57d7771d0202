"""Read models are rebuilt from the log beside the live ones, then switched to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, ClassVar

import psycopg
import pytest
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Identifier

from application.projections import UserDirectoryProjection
from application.values import Client
from domain.user import User
from infrastructure.database import eventsourcing_env
from infrastructure.postgres_views import PostgresUserDirectoryView
from infrastructure.projection_runner import ProjectionWorker, ReadModelSpec
from infrastructure.read_model_registry import live_schemas
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    ACTIVE_SESSIONS,
    LOGIN_HISTORY,
    READ_MODELS,
    RUNNER_ENV,
    USER_DIRECTORY,
    Services,
    build_services,
    build_view,
)

pytestmark = pytest.mark.postgres
CLIENT = Client("192.0.2.10", "pytest")


class UserDirectoryProjectionV2(UserDirectoryProjection):
    """Version 2 of the users table: it also knows each user's last login."""

    name = "user_directory"
    version = 2

    @singledispatchmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        super().apply(event, tracking)

    @apply.register
    def _(self, event: User.LoggedIn, tracking: Tracking) -> None:
        self._update(event, tracking, last_login_at=event.timestamp)


class PostgresUserDirectoryViewV2(PostgresUserDirectoryView):
    ddl = (
        *PostgresUserDirectoryView.ddl,
        "ALTER TABLE {schema}.users ADD COLUMN IF NOT EXISTS last_login_at timestamptz",
    )
    updatable: ClassVar = PostgresUserDirectoryView.updatable | {"last_login_at"}


USER_DIRECTORY_V2 = ReadModelSpec.of(
    UserDirectoryProjectionV2, PostgresUserDirectoryViewV2
)


def rows_of(url: str, schema: str, table: str, order_by: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        query = SQL("SELECT * FROM {} ORDER BY {}").format(
            Identifier(schema, table), Identifier(order_by)
        )
        return conn.execute(query).fetchall()


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def workload(services: Services, users: int, prefix: str) -> None:
    for n in range(users):
        email = f"{prefix}-{n}@example.com"
        grant = services.app.register(email, "password one", CLIENT)
        services.app.login(email, "password one", CLIENT)
        rotated = services.app.refresh(grant.refresh_token, CLIENT)
        if n % 3 == 0:
            services.app.logout(grant.user_id, rotated.session_id, CLIENT)
        if n % 4 == 0:
            services.app.verify_email(grant.user_id)


@pytest.fixture
def v1(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    yield services
    services.close()


@pytest.mark.parametrize(
    ("spec", "order_by"),
    [
        (USER_DIRECTORY, "id"),
        (ACTIVE_SESSIONS, "session_id"),
        (LOGIN_HISTORY, "position"),
    ],
)
def test_a_rebuild_from_zero_equals_the_incrementally_built_tables_row_for_row(
    v1: Services, spec: ReadModelSpec[Any], order_by: str
) -> None:
    # Given: tables built event by event while a workload ran
    workload(v1, 12, "incremental")
    url = v1.database_url

    # When: the same projection replays the whole log into a fresh schema
    rebuilt = replace(spec, schema=f"{spec.schema}_check")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(rebuilt.schema)))
    env = {**eventsourcing_env(url, 1, 2), **RUNNER_ENV}
    build_view(rebuilt, {**env, "CREATE_TABLE": "y"}).datastore.close()
    worker = ProjectionWorker(lambda: rebuilt, url, env)
    worker.start()
    head = v1.app.recorder.max_notification_id() or 0
    try:
        wait_until(lambda: _position(url, rebuilt) >= head)
    finally:
        worker.stop()

    # Then
    live = live_schemas_of(url)[spec.name]
    table = spec.view.table
    incremental = rows_of(url, live, table, order_by)
    assert incremental
    assert rows_of(url, rebuilt.schema, table, order_by) == incremental


def _position(url: str, spec: ReadModelSpec[Any]) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            SQL(
                "SELECT notification_id FROM {} WHERE application_name = 'Auth'"
            ).format(Identifier(spec.schema, f"{spec.name}_tracking"))
        ).fetchone()
    return int(row[0]) if row else 0


def live_schemas_of(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return live_schemas(conn)


def test_a_new_version_is_built_beside_the_live_one_and_switched_to_without_failures(
    v1: Services, settings: Settings
) -> None:
    # Given: version 1 serving, with history, and a client that keeps calling
    workload(v1, 5, "before")
    failures: list[BaseException] = []
    calls = 0
    stop = threading.Event()

    def keep_calling() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                email = f"during-{calls}@example.com"
                grant = v1.app.register(email, "password one", CLIENT)
                v1.app.login(email, "password one", CLIENT)
                assert v1.users.get_user(grant.user_id) is not None
                assert v1.sessions.get_session(grant.session_id, v1.app.clock())
                calls += 1
            except BaseException as error:  # noqa: BLE001  (any failure fails the test)
                failures.append(error)
                return

    client = threading.Thread(target=keep_calling)
    client.start()

    # When: a process with version 2 of the users read model starts
    deployed = build_services(
        settings, (USER_DIRECTORY, USER_DIRECTORY_V2, ACTIVE_SESSIONS, LOGIN_HISTORY)
    )
    try:
        wait_until(
            lambda: (
                live_schemas_of(v1.database_url)["user_directory"]
                == "user_directory_v2"
            )
        )
        time.sleep(0.5)
    finally:
        stop.set()
        client.join()
        deployed.close()

    # Then: no call failed, and the new column is there for everyone who logged in
    assert failures == []
    assert calls > 0
    rows = rows_of(v1.database_url, "read_models", "users", "email")
    assert len(rows) == 5 + calls
    with psycopg.connect(v1.database_url) as conn:
        missing = conn.execute(
            "SELECT count(*) FROM read_models.users WHERE last_login_at IS NULL"
        ).fetchone()
    assert missing == (0,)
    wait_until(lambda: "user_directory_v1" not in _schemas(v1.database_url), timeout=30)


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(n) for (n,) in conn.execute("SELECT nspname FROM pg_namespace")}


def test_the_registry_starts_with_the_newest_versions_live(v1: Services) -> None:
    assert live_schemas_of(v1.database_url) == {
        spec.name: spec.schema for spec in READ_MODELS
    }
