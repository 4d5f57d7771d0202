"""Projections that die mid-transaction and restart equal a rebuild from the log."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from application.auth import AuthApplication
from application.errors import InvalidCredentialsError, InvalidRefreshTokenError
from application.values import Client
from infrastructure.database import eventsourcing_env
from infrastructure.postgres_views import (
    PostgresActiveSessionsView,
    PostgresLoginHistoryView,
    PostgresReadModel,
    PostgresUserDirectoryView,
)
from infrastructure.projection_runner import ProjectionWorker, ReadModelSpec
from interfaces.bootstrap import READ_MODELS, RUNNER_ENV, Services
from tests.integration.helpers import (
    CLIENT_UA,
    MakeServices,
    last_position,
    live_specs,
    read_model_state,
    rebuild_from_zero,
    stored_events,
    tracking_position,
    wait_for_read_models,
    wait_until,
)

if TYPE_CHECKING:
    from eventsourcing.persistence import Tracking
    from psycopg import Cursor
    from psycopg.rows import DictRow

PASSWORD = "projection test password"
TABLE_DIGEST = (
    "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} AS t"
)
# At COMMIT, a deferred trigger on a view's table reports the position and the
# rows as the doomed transaction sees them, then aborts it.
DIE_BEFORE_COMMIT = """
CREATE OR REPLACE FUNCTION public.die_before_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pos bigint;
    digest text;
BEGIN
    EXECUTE format(
        'SELECT notification_id FROM %I.%I WHERE application_name = %L',
        TG_TABLE_SCHEMA, TG_ARGV[0], 'Auth') INTO pos;
    EXECUTE format(
        'SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L))'
        ' FROM %I.%I AS t', ',', '', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO digest;
    RAISE EXCEPTION 'projection killed before commit at position % with rows %',
        pos, digest;
END $$
"""
DIED = re.compile(r"killed before commit at position (\d+) with rows ([0-9a-f]{32})")


def client(n: int) -> Client:
    """A client address of its own, so no address reaches the throttle."""
    return Client(f"198.51.100.{n}", CLIENT_UA)


def record_workload(app: AuthApplication, tag: str, users: int) -> None:
    """Register, fail, log in, refresh, replay and log out a few users."""
    for i in range(users):
        email, who = f"{tag}{i}@example.com", client(i)
        first = app.register(email, PASSWORD, who)
        with pytest.raises(InvalidCredentialsError):
            app.login(email, "a wrong guess", who)
        second = app.login(email, PASSWORD, who)
        rotated = app.refresh(second.refresh_token, who)
        if i % 2:
            app.logout(first.user_id, first.session_id, who)
        else:
            with pytest.raises(InvalidRefreshTokenError):
                app.refresh(second.refresh_token, who)  # a replay: revoked
        app.refresh(rotated.refresh_token if i % 2 else first.refresh_token, who)


class AlreadyThere:
    """Read-model positions that never make a command wait."""

    def reached(self, application_name: str, position: int) -> bool:  # noqa: ARG002
        return True


@pytest.fixture
def unprojected(make_services: MakeServices) -> Services:
    """Services whose projections run only when the test starts them."""
    return make_services(run_projections=False)


@pytest.fixture
def writer(unprojected: Services) -> Iterator[AuthApplication]:
    """An application on the same store that does not wait for the read models."""
    app = AuthApplication(
        eventsourcing_env(unprojected.database_url, 1, 2),
        passwords=unprojected.app.passwords,
        positions=AlreadyThere(),
        sessions=unprojected.sessions,
    )
    yield app
    app.close()


def assert_equal_to_a_rebuild(services: Services) -> None:
    """Every live read model equals, row for row, one projected again from zero."""
    wait_for_read_models(services)
    position = last_position(services)
    specs = live_specs(services)
    rebuilt = rebuild_from_zero(services.database_url, specs, position)
    live = read_model_state(services.database_url, specs)
    again = read_model_state(services.database_url, rebuilt)
    assert set(live) == set(again) == {spec.name for spec in READ_MODELS}
    for name in live:
        assert live[name][0] == again[name][0] == position, name
        assert live[name][1] == again[name][1], name
    # And no event was applied twice: history rows are keyed by distinct stored
    # positions, and every opened session has its one row
    positions = [row[0] for row in live["login_history"][1]]
    events = stored_events(services)
    opened = {n.id for n in events if n.topic == "authledger:Session.Opened"}
    assert len(set(positions)) == len(positions)
    assert opened <= set(positions) <= {n.id for n in events}


def digest(url: str, schema: str, table: str) -> str:
    query = sql.SQL(TABLE_DIGEST).format(sql.Identifier(schema, table))
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return str(row[0])


def install_die_before_commit(url: str, specs: list[ReadModelSpec[Any]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DIE_BEFORE_COMMIT)
        for spec in specs:
            conn.execute(
                sql.SQL(
                    "CREATE CONSTRAINT TRIGGER die_before_commit"
                    " AFTER INSERT OR UPDATE OR DELETE ON {}"
                    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                    " EXECUTE FUNCTION public.die_before_commit({})"
                ).format(
                    sql.Identifier(spec.schema, spec.view.table),
                    sql.Literal(f"{spec.name}_tracking"),
                )
            )


def remove_die_before_commit(url: str, specs: list[ReadModelSpec[Any]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for spec in specs:
            conn.execute(
                sql.SQL("DROP TRIGGER die_before_commit ON {}").format(
                    sql.Identifier(spec.schema, spec.view.table)
                )
            )


def fed_by_workload(services: Services) -> list[ReadModelSpec[Any]]:
    """The read models the workload writes rows to (it sends no mail)."""
    return [spec for spec in live_specs(services) if spec.name in SLOW_VIEWS]


def fed_workers(services: Services) -> list[ProjectionWorker]:
    return [w for w in services.workers if w.spec and w.spec.name in SLOW_VIEWS]


def stop_projections(services: Services) -> None:
    """Stop this process's projection workers, so the test can start fresh ones."""
    for worker in services.workers:
        worker.stop()
    services.workers.clear()


def test_a_projection_killed_after_writing_its_rows_but_before_commit_recovers(
    unprojected: Services, writer: AuthApplication
) -> None:
    # Given read models that have projected a first workload
    services, url = unprojected, unprojected.database_url
    services.start_projections()
    record_workload(services.app, "early", users=2)
    wait_for_read_models(services)
    specs = fed_by_workload(services)
    before = read_model_state(url, specs)
    # And more events that they have not projected yet
    stop_projections(services)
    record_workload(writer, "late", users=2)

    # When every projection dies at the COMMIT of its first transaction that
    # wrote rows (after the rows and the position were written)
    install_die_before_commit(url, specs)
    services.start_projections()
    wait_until(
        lambda: (
            len(fed_workers(services)) == len(specs)
            and all(DIED.search(w.last_error or "") for w in fed_workers(services))
        ),
        10,
        "every projection to die before a commit",
    )
    deaths = {w.spec.name: w.last_error or "" for w in fed_workers(services) if w.spec}
    stop_projections(services)
    after = read_model_state(url, specs)
    remove_die_before_commit(url, specs)

    # Then each doomed transaction had written rows, and none of them is kept
    assert set(deaths) == {spec.name for spec in specs}
    for spec in specs:
        died = DIED.search(deaths[spec.name])
        assert died is not None, deaths[spec.name]
        died_at, rows_seen_by_doomed_transaction = int(died[1]), died[2]
        assert after[spec.name][1] == before[spec.name][1], spec.name
        rows_kept = digest(url, spec.schema, spec.view.table)
        assert rows_seen_by_doomed_transaction != rows_kept, spec.name
        # and its position did not move either
        before_position = before[spec.name][0]
        assert before_position is not None
        assert before_position < died_at
        assert after[spec.name][0] == before_position, spec.name

    # When the projections restart
    services.start_projections()

    # Then they catch up to exactly what a rebuild from the log gives
    assert_equal_to_a_rebuild(services)


# Killing a real process ---------------------------------------------------------

SLOW_S = 0.02


class SlowToCommit(PostgresReadModel):
    """A view that dawdles inside each transaction: a kill lands before COMMIT."""

    def _insert_tracking(self, curs: Cursor[DictRow], tracking: Tracking) -> None:
        super()._insert_tracking(curs, tracking)
        time.sleep(SLOW_S)


class SlowUserDirectoryView(SlowToCommit, PostgresUserDirectoryView):
    pass


class SlowActiveSessionsView(SlowToCommit, PostgresActiveSessionsView):
    pass


class SlowLoginHistoryView(SlowToCommit, PostgresLoginHistoryView):
    pass


SLOW_VIEWS: dict[str, type[PostgresReadModel]] = {
    "user_directory": SlowUserDirectoryView,
    "active_sessions": SlowActiveSessionsView,
    "login_history": SlowLoginHistoryView,
}


def project_slowly(url: str, specs: list[ReadModelSpec[Any]]) -> None:
    """In a process of its own: run the projections as an API process does."""
    env = {**eventsourcing_env(url, 1, 2), **RUNNER_ENV}
    slow_specs = [replace(spec, view=SLOW_VIEWS[spec.name]) for spec in specs]
    # Small batches, each slow to commit: a kill lands in the middle of the backlog.
    workers = [
        ProjectionWorker(partial(_same, spec), url, env, batch_size=5)
        for spec in slow_specs
    ]
    for worker in workers:
        worker.start()
    threading.Event().wait()


def _same(spec: ReadModelSpec[Any]) -> ReadModelSpec[Any]:
    return spec


def test_a_projection_process_killed_mid_stream_restarts_to_equal_a_rebuild(
    unprojected: Services, writer: AuthApplication
) -> None:
    # Given a log of some hundred events that no projection has seen
    services, url = unprojected, unprojected.database_url
    record_workload(writer, "user", users=10)
    last = last_position(services)
    assert last >= 90

    # When a process projecting them is killed a third of the way
    specs = fed_by_workload(services)
    third = last // 3
    process = multiprocessing.get_context("spawn").Process(
        target=project_slowly, args=(url, specs)
    )
    process.start()
    try:
        wait_until(
            lambda: all((tracking_position(url, s) or 0) >= third for s in specs),
            30,
            "the projections in the other process to get going",
        )
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    assert process.exitcode == -signal.SIGKILL
    stopped_at = [tracking_position(url, spec) or 0 for spec in specs]
    assert all(position < last for position in stopped_at), stopped_at

    # And the projections restart in this process
    services.start_projections()

    # Then they catch up to exactly what a rebuild from the log gives
    assert_equal_to_a_rebuild(services)
