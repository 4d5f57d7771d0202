"""A lone append (one statement, handed to libpq itself) under faults: held to
its request's deadline, and stored once when its connection is lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.utils import Environment

from infrastructure.database import connect, eventsourcing_env
from infrastructure.deadlines import CANCEL_GRACE_S, WATCH_EVERY_S, deadline
from infrastructure.event_store import LOCK_AGGREGATE, PREPARED_SHAPES, AuthRecorder
from tests.integration.test_append_ordering import event, make_recorder

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import DictRow

pytestmark = pytest.mark.postgres
DEADLINE_S = 0.5
WAITING = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
)


@pytest.fixture
def recorder(database_url: str) -> Iterator[AuthRecorder]:
    made = make_recorder(database_url, 2, create_table=True, inline=False)
    yield made
    made.datastore.close()


@contextmanager
def aggregate_held(database_url: str, aggregate: uuid.UUID) -> Iterator[None]:
    """Hold the aggregate's exclusive lock: appends to it wait."""
    with connect(database_url, "authledger-test") as conn, conn.transaction():
        conn.execute(LOCK_AGGREGATE, (str(aggregate),))
        yield


def waiting_backend(database_url: str) -> int:
    """The backend of the append waiting for the aggregate's lock."""
    with connect(database_url, "authledger-test") as conn:
        for _ in range(500):
            row = conn.execute(WAITING).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError("no append waits for the lock")


def append_in_thread(
    recorder: AuthRecorder, appended: StoredEvent, seconds: float | None = None
) -> Future[object]:
    def run() -> object:
        if seconds is None:
            return recorder.insert_events([appended])
        with deadline(seconds):
            return recorder.insert_events([appended])

    return ThreadPoolExecutor(1).submit(run)


def test_a_lone_append_past_its_deadline_is_cancelled_and_stores_nothing(
    database_url: str, recorder: AuthRecorder
) -> None:
    # Given an aggregate another transaction holds
    aggregate = uuid.uuid4()
    with aggregate_held(database_url, aggregate):
        # When an append to it runs under a deadline
        started = time.monotonic()
        done = append_in_thread(recorder, event(aggregate, 1), DEADLINE_S)
        with pytest.raises(OperationalError):
            done.result(timeout=10)
        took = time.monotonic() - started

    # Then it was cancelled at its deadline, and stored nothing
    assert DEADLINE_S <= took <= DEADLINE_S + CANCEL_GRACE_S + 2 * WATCH_EVERY_S
    assert recorder.select_events(aggregate) == []
    # And the next append works (the cancelled connection is not reused)
    assert len(recorder.insert_events([event(aggregate, 1)]) or ()) == 1


def test_a_lone_append_whose_connection_is_lost_is_stored_once(
    database_url: str, recorder: AuthRecorder
) -> None:
    # Given an append waiting for an aggregate's lock
    aggregate = uuid.uuid4()
    appended = event(aggregate, 1)
    with aggregate_held(database_url, aggregate):
        done = append_in_thread(recorder, appended)
        # When its connection's backend is ended under it
        with connect(database_url, "authledger-test") as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(%s)", (waiting_backend(database_url),)
            ).fetchone()
        assert ended == (True,)
    ids = done.result(timeout=10)

    # Then it was found not stored and tried again: stored once, where it says
    stored = recorder.select_events(aggregate)
    assert [e.state for e in stored] == [appended.state]
    assert [n.id for n in recorder.select_notifications(0, 10)] == ids


def test_a_lone_append_holds_no_interpreter_while_it_waits(
    database_url: str, recorder: AuthRecorder
) -> None:
    # Given an append waiting on the database
    aggregate = uuid.uuid4()
    counted = 0
    with aggregate_held(database_url, aggregate):
        done = append_in_thread(recorder, event(aggregate, 1))
        waiting_backend(database_url)
        # When this thread runs meanwhile, then it is not held up
        ends = time.monotonic() + 0.2
        while time.monotonic() < ends:
            counted += 1
        assert not done.done()
    assert done.result(timeout=10)
    assert counted > 100_000


def test_a_stale_append_of_an_unprepared_shape_is_a_conflict(
    recorder: AuthRecorder,
) -> None:
    # Given an aggregate of more events than any prepared shape holds
    aggregate = uuid.uuid4()
    recorder.insert_events([event(aggregate, v) for v in range(1, 101)])

    # When a writer that read it at version 50 appends as many again
    with pytest.raises(IntegrityError):
        recorder.insert_events([event(aggregate, v) for v in range(51, 151)])

    # Then nothing of it is stored
    assert len(recorder.select_events(aggregate)) == 100


def prepared_on(conn: Connection[DictRow]) -> int:
    row = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
    return int(row["n"]) if row else 0


def one_connection_recorder(url: str) -> AuthRecorder:
    """A lone-append recorder whose pool holds a single connection."""
    env = eventsourcing_env(url, 1, 0)
    factory = InfrastructureFactory.construct(Environment("Auth", env))
    recorder = factory.application_recorder()
    assert isinstance(recorder, AuthRecorder)
    return recorder


def test_a_lone_append_survives_its_prepared_statements_being_deallocated(
    database_url: str,
) -> None:
    # Given the one pooled connection, on which a lone append prepared its statement
    recorder = one_connection_recorder(database_url)
    try:
        recorder.insert_events([event(uuid.uuid4(), 1)])
        # When something on that connection deallocates every prepared
        # statement (psycopg does after a rollback of its own prepared ones)
        with recorder.datastore.get_connection() as conn:
            assert prepared_on(conn) == 1
            conn.execute("DEALLOCATE ALL")
        # Then the next lone appends of that shape still store their events
        aggregate = uuid.uuid4()
        for version in (1, 2):
            assert len(recorder.insert_events([event(aggregate, version)]) or ()) == 1
        assert len(recorder.select_events(aggregate)) == 2
    finally:
        recorder.datastore.close()


def test_two_recorders_share_a_connection_s_prepared_append(
    database_url: str,
) -> None:
    # Given two recorders lending the one pooled connection in turn
    first = one_connection_recorder(database_url)
    second = AuthRecorder(first.datastore, events_table_name=first.events_table_name)
    try:
        # When both append the same shape, then both are stored, and the
        # connection holds one prepared append
        stored = [
            rec.insert_events([event(uuid.uuid4(), 1)])
            for rec in (first, second, first)
        ]
        assert all(len(ids or ()) == 1 for ids in stored)
        with first.datastore.get_connection() as conn:
            assert prepared_on(conn) == 1
    finally:
        first.datastore.close()


def test_a_connection_keeps_a_bounded_number_of_prepared_appends(
    database_url: str,
) -> None:
    recorder = one_connection_recorder(database_url)
    try:
        # Appends of more shapes than are kept prepared all store their events
        for size in range(1, PREPARED_SHAPES + 6):
            aggregate = uuid.uuid4()
            events = [event(aggregate, v) for v in range(1, size + 1)]
            assert len(recorder.insert_events(events) or ()) == size
        with recorder.datastore.get_connection() as conn:
            assert prepared_on(conn) == PREPARED_SHAPES
    finally:
        recorder.datastore.close()
