"""The deadline watch alone: a call past its deadline ends in time, whether
the server reacts to a cancel (a long statement) or not (a frozen server)."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from infrastructure.database import connect
from infrastructure.deadlines import CANCEL_GRACE_S, WATCH, WATCH_EVERY_S, deadline
from infrastructure.event_store import RESOLVE_EXTRA_S

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
    cut_at = DEADLINE_S + extra_s + CANCEL_GRACE_S
    assert cut_at <= took <= cut_at + 2 * WATCH_EVERY_S + 0.1, took
    assert took + ANSWER_S <= DEADLINE_S + 1
    assert conn.closed
