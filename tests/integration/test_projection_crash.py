"""Runners and commands killed mid-transaction leave read models equal to a rebuild."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from application.auth import AuthApplication
from application.errors import InvalidCredentialsError, InvalidRefreshTokenError
from application.values import Client
from infrastructure.data_keys import postgres_sealing
from infrastructure.database import eventsourcing_env
from infrastructure.postgres_views import PostgresLoginHistoryView, PostgresReadModel
from infrastructure.projection_runner import GroupRunner, ReadModelSpec
from infrastructure.read_model_lifecycle import (
    RUNNER_ENV,
    LaggingWorker,
    ProjectionWorker,
)
from infrastructure.settings import Settings, load_secrets
from interfaces.bootstrap import READ_MODELS, Services, build_services
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
from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY

if TYPE_CHECKING:
    from eventsourcing.persistence import Notification, Tracking
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


@pytest.fixture
def unprojected(make_services: MakeServices) -> Services:
    """Services whose projections run only when the test starts them."""
    return make_services(run_projections=False)


def assert_equal_to_a_rebuild(services: Services) -> None:
    """Every live read model equals, row for row, one projected again from zero.

    The lagging ones also stand at the same position as the rebuild; the
    consistent ones track no position (they commit with the events).
    """
    wait_for_read_models(services)
    position = last_position(services)
    specs = live_specs(services)
    rebuilt = rebuild_from_zero(services.settings, specs)
    live = read_model_state(services.database_url, specs)
    again = read_model_state(services.database_url, rebuilt)
    assert set(live) == set(again) == {spec.name for spec in READ_MODELS}
    for spec in specs:
        name = spec.name
        assert again[name][0] == position, name
        if not spec.consistent:
            assert live[name][0] == position, name
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
    """The lagging read models the workload writes rows to (it sends no mail)."""
    return [spec for spec in live_specs(services) if spec.name == "login_history"]


def lagging_worker(services: Services) -> ProjectionWorker:
    return next(w for w in services.workers if isinstance(w, LaggingWorker))


def stop_projections(services: Services) -> None:
    """Stop this process's projection workers, so the test can start fresh ones."""
    for worker in services.workers:
        worker.stop()
    services.workers.clear()


def test_a_lagging_runner_killed_after_writing_its_rows_but_before_commit_recovers(
    unprojected: Services,
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
    record_workload(services.app, "late", users=2)

    # When the runner dies at the COMMIT of its first batch that wrote rows
    # (after the rows and the positions were written)
    install_die_before_commit(url, specs)
    services.start_projections()
    wait_until(
        lambda: bool(DIED.search(lagging_worker(services).last_error or "")),
        10,
        "the runner to die before a commit",
    )
    deaths = {spec.name: lagging_worker(services).last_error or "" for spec in specs}
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


class SlowLoginHistoryView(SlowToCommit, PostgresLoginHistoryView):
    pass


SLOW_VIEWS: dict[str, type[PostgresReadModel]] = {
    "login_history": SlowLoginHistoryView,
}


def sigkill(process: multiprocessing.process.BaseProcess) -> None:
    """Kill the child as a crash would, and wait until it is gone."""
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    assert process.exitcode == -signal.SIGKILL


def project_slowly(
    url: str, specs: list[ReadModelSpec[Any]], key_encryption_key: bytes
) -> None:
    """In a process of its own: run the lagging group as an API process does."""
    env = {**eventsourcing_env(url, 1, 2), **RUNNER_ENV}
    slow_specs = [replace(spec, view=SLOW_VIEWS[spec.name]) for spec in specs]
    # Small batches, each slow to commit: a kill lands in the middle of the backlog.
    runner = GroupRunner(
        slow_specs, url, env, postgres_sealing(key_encryption_key), batch_size=5
    )
    runner.follow(threading.Event(), lambda: False)


def test_a_lagging_runner_process_killed_mid_batch_restarts_to_equal_a_rebuild(
    unprojected: Services,
) -> None:
    # Given a log of some hundred events that no lagging read model has seen
    services, url = unprojected, unprojected.database_url
    record_workload(services.app, "user", users=10)
    stored = stored_events(services)
    assert len(stored) >= 90

    # When a process projecting them is killed a third of the way
    specs = fed_by_workload(services)
    third = stored[len(stored) // 3].id
    last = stored[-1].id
    process = multiprocessing.get_context("spawn").Process(
        target=project_slowly,
        args=(url, specs, load_secrets(services.settings).key_encryption_key),
    )
    process.start()
    try:
        wait_until(
            lambda: all((tracking_position(url, s) or 0) >= third for s in specs),
            30,
            "the projections in the other process to get going",
        )
        sigkill(process)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    stopped_at = [tracking_position(url, spec) or 0 for spec in specs]
    assert all(position < last for position in stopped_at), stopped_at

    # And the projections restart in this process
    services.start_projections()

    # Then they catch up to exactly what a rebuild from the log gives
    assert_equal_to_a_rebuild(services)


def command_slowly(url: str, data_dir: str) -> None:
    """In a process of its own: run commands that dawdle before each COMMIT."""
    settings = Settings(
        database_url=url,
        data_dir=Path(data_dir),
        bcrypt_rounds=4,
        key_encryption_key=SecretStr(TEST_KEY_ENCRYPTION_KEY),
        run_projections=False,
        run_mailer=False,
        signup_max_per_address=1_000_000,  # it signs up from one address, nonstop
        refresh_reuse_interval_s=0,  # its replays are at once: strict mode
    )
    services = build_services(settings)
    inline = services.recorder.inline
    assert inline is not None

    def dawdling(curs: Cursor[DictRow], notifications: Sequence[Notification]) -> None:
        inline(curs, notifications)
        time.sleep(SLOW_S)  # rows written, events inserted, not yet committed

    services.recorder.inline = dawdling
    for round_ in itertools.count():
        record_workload(services.app, f"killed{round_}-", users=1)


def in_transaction(url: str) -> bool:
    """Whether a backend of this database sits inside a transaction that wrote."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
        ).fetchone()
    return bool(row and row[0])


def test_a_process_killed_inside_command_transactions_leaves_no_half_command(
    unprojected: Services, tmp_path: Path
) -> None:
    # Given a process running commands, each slow to commit
    services, url = unprojected, unprojected.database_url
    process = multiprocessing.get_context("spawn").Process(
        target=command_slowly, args=(url, str(tmp_path / "killed"))
    )
    process.start()
    try:
        # When it is killed while a command's transaction is open
        wait_until(lambda: len(stored_events(services)) >= 60, 30, "commands to run")
        wait_until(lambda: in_transaction(url), 10, "a command mid-transaction")
        sigkill(process)
    finally:
        if process.is_alive():
            process.kill()
            process.join()

    # Then every command is in the log with its consistent rows, or not at all:
    # the read models (and the lagging ones, once run) equal a rebuild
    services.start_projections()
    assert_equal_to_a_rebuild(services)
