"""The deadline watch alone: a call past its deadline ends in time, whether
the server reacts to a cancel (a long statement) or not (a frozen server)."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from infrastructure.database import connect
from infrastructure.deadlines import CANCEL_GRACE_S, WATCH, WATCH_EVERY_S, deadline
from infrastructure.event_store import RESOLVE_EXTRA_S, TRUSTED_FOR_S
from tests.integration.helpers import MakeServices

pytestmark = pytest.mark.postgres
DEADLINE_S = 0.5
# What a request still needs once its last call has ended: the answer itself.
ANSWER_S = 0.25


def test_a_statement_past_its_deadline_is_cancelled_at_it(database_url: str) -> None:
    conn = connect(database_url, "authledger-test")
    started = time.monotonic()
    with (
        pytest.raises(psycopg.errors.QueryCanceled),
        deadline(DEADLINE_S),
        WATCH.watching(conn),
    ):
        conn.execute("SELECT pg_sleep(30)")
    took = time.monotonic() - started

    assert DEADLINE_S <= took <= DEADLINE_S + 2 * WATCH_EVERY_S + 0.1, took
    assert conn.closed  # a late cancel must not hit the next user's statement


@pytest.mark.parametrize("extra_s", [0.0, RESOLVE_EXTRA_S], ids=["call", "resolve"])
def test_a_frozen_server_is_cut_off_within_a_second_of_the_deadline(
    database_url: str, extra_s: float
) -> None:
    # Given a connection whose server process is stopped: TCP still answers,
    # the server never will, and a cancel waits with it
    conn = connect(database_url, "authledger-test")
    backend = conn.info.backend_pid
    os.kill(backend, signal.SIGSTOP)
    started = time.monotonic()
    try:
        # When a call on it runs past its deadline (plus what it may take extra)
        with (
            pytest.raises(psycopg.OperationalError),
            deadline(DEADLINE_S),
            WATCH.watching(conn, extra_s),
        ):
            conn.execute("SELECT 1")
        took = time.monotonic() - started
    finally:
        os.kill(backend, signal.SIGCONT)

    # Then its socket is shut once a cancel had its grace, leaving the
    # request time to answer within its deadline + 1 s
    assert DEADLINE_S + extra_s + CANCEL_GRACE_S <= took, took
    assert took <= DEADLINE_S + 1 - ANSWER_S, took
    assert conn.closed


def test_a_read_on_a_frozen_server_tries_no_connection_past_its_deadline(
    make_services: MakeServices,
) -> None:
    # Given a request pool of several connections, idle long enough to be
    # pinged before use, whose server processes are all stopped
    services = make_services(run_projections=False, run_mailer=False)
    recorder = services.recorder
    with ExitStack() as held:
        for _ in range(4):
            held.enter_context(recorder.datastore.get_connection())
    time.sleep(TRUSTED_FOR_S + 0.1)
    with connect(services.database_url, "authledger-test") as conn:
        backends = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'authledger-requests'"
            )
        ]
    assert len(backends) >= 4
    for backend in backends:
        os.kill(backend, signal.SIGSTOP)
    started = time.monotonic()
    try:
        # When a request reads past its deadline, then it fails in time: it
        # does not go through the pool paying a cut for each connection
        with pytest.raises(OperationalError), deadline(DEADLINE_S):
            recorder.max_notification_id()
        took = time.monotonic() - started
    finally:
        for backend in backends:
            os.kill(backend, signal.SIGCONT)

    assert took <= DEADLINE_S + 1 - ANSWER_S, took
