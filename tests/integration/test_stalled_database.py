"""A database that is blocked rather than down: answers come within a bound.

The faults: another session holds the events table's EXCLUSIVE lock (reads
pass, appends wait) or a migration's ACCESS EXCLUSIVE one (reads wait too);
the server ends a session idle in a transaction. A statement that timed out
on a healthy connection fails once, as retryable: it is not a lost commit to
look for, nor a reason to wait again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, cast

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, PersistenceError

from application.values import Client
from infrastructure.database import connect
from infrastructure.deadlines import deadline
from interfaces.bootstrap import Services
from tests.faults import CommitCutter
from tests.integration.helpers import MakeServices, stored_facts

pytestmark = pytest.mark.postgres
LOCK_TIMEOUT_S = 5  # the recorder's lock_timeout
HELD_S = 3 * LOCK_TIMEOUT_S


def test_a_write_behind_a_held_table_lock_fails_once_within_the_lock_timeout(
    services: Services,
) -> None:
    # Given: another session holds the events table's lock for long
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(services.database_url) as conn:
            conn.execute("LOCK TABLE auth_events IN EXCLUSIVE MODE")
            locked.set()
            release.wait(HELD_S)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    before = len(stored_facts(services))

    # When: a signup comes in
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError):
            services.app.register(
                "blocked@example.com", "a blocked passphrase", Client()
            )
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()

    # Then: it waited out the lock timeout once, not once per retry, and
    # stored nothing; once the lock is gone, the same signup goes through
    assert LOCK_TIMEOUT_S - 1 < waited < LOCK_TIMEOUT_S + 2
    assert len(stored_facts(services)) == before
    services.app.register("blocked@example.com", "a blocked passphrase", Client())


def test_a_read_behind_a_migration_lock_fails_once_or_at_the_deadline(
    services: Services,
) -> None:
    # Given: a user, and a migration holding the events table (reads wait too)
    registered = services.app.register(
        "reader@example.com", "a patient reading passphrase", Client()
    )
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(services.database_url) as conn:
            conn.execute("LOCK TABLE auth_events IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(3 * HELD_S)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    try:
        # When: the user is read without a deadline, then with one
        started = time.monotonic()
        with pytest.raises(OperationalError):
            services.app.get_user(registered.user_id)
        alone = time.monotonic() - started
        started = time.monotonic()
        with deadline(1.0), pytest.raises(OperationalError):
            services.app.get_user(registered.user_id)
        bounded = time.monotonic() - started
    finally:
        release.set()
        holder.join()

    # Then: the lock timeout once (the library would wait it out ten times),
    # or the deadline; after the lock, the read works
    assert LOCK_TIMEOUT_S - 1 < alone < LOCK_TIMEOUT_S + 2
    assert 0.9 < bounded < 1.5
    assert services.app.get_user(registered.user_id).id == registered.user_id


def test_a_session_ended_for_idling_in_a_transaction_is_a_retryable_error(
    services: Services,
) -> None:
    # Given: a command's transaction that idles past the server's limit
    registered = services.app.register(
        "idler@example.com", "an idle afternoon passphrase", Client()
    )

    def idle_then_go_on() -> None:
        with services.recorder.one_transaction():
            with services.recorder.datastore.get_connection() as conn:
                conn.execute("SET idle_in_transaction_session_timeout = '100ms'")
            time.sleep(0.5)
            services.app.get_user(registered.user_id)

    # When: it goes on after the pause
    with pytest.raises(PersistenceError) as raised:
        idle_then_go_on()

    # Then: a database error the interface answers 503, not a raw driver error
    assert isinstance(raised.value.__cause__, psycopg.Error)
    assert services.app.get_user(registered.user_id).id == registered.user_id


def socket_options(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE and TCP_USER_TIMEOUT of the connection's socket."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )
    finally:
        sock.close()


def test_every_connection_notices_a_dead_server_and_bounds_its_statements(
    make_services: MakeServices, database_url: str
) -> None:
    # Given the service over TCP (through a loopback relay: the suite's
    # server listens on a socket file, where TCP options do not apply)
    with CommitCutter(database_url) as relay:
        services = make_services(
            database_url=relay.url, run_projections=False, run_mailer=False
        )
        # When a request's connection and a background user's are opened
        with services.recorder.datastore.get_connection() as pooled:
            request_conn = cast("psycopg.Connection[Any]", pooled)
            shown = [
                request_conn.execute(f"SHOW {name}").fetchone()
                for name in ("statement_timeout", "lock_timeout", "application_name")
            ]
            request_socket = socket_options(request_conn)
        with connect(services.database_url, "authledger-probe") as background:
            background_socket = socket_options(background)

    # Then a request's statements end at its deadline and its lock waits at
    # the lock timeout, and every socket has keepalives and a user timeout
    deadline_s = services.settings.request_deadline_s
    assert [next(iter(row.values())) for row in shown if row] == [
        f"{deadline_s:g}s",
        f"{LOCK_TIMEOUT_S}s",
        "authledger-requests",
    ]
    assert request_socket == background_socket == (1, 5, 10_000)
