"""Pooled connections are checked without a ping per use, yet fail no command."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
from eventsourcing.utils import Environment

from infrastructure import event_store
from infrastructure.database import eventsourcing_env
from infrastructure.event_store import AuthRecorder

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres

POOL_SIZE = 2


def make_recorder(database_url: str, pool_size: int) -> AuthRecorder:
    env = eventsourcing_env(database_url, pool_size, 0)
    made = InfrastructureFactory.construct(Environment("Pool", env))
    recorder = made.application_recorder()
    assert isinstance(recorder, AuthRecorder)
    return recorder


@pytest.fixture
def recorder(database_url: str) -> Iterator[AuthRecorder]:
    recorder = make_recorder(database_url, POOL_SIZE)
    yield recorder
    recorder.datastore.close()


def backend_pids(recorder: AuthRecorder) -> set[int]:
    """Use every pooled connection at once; their server processes."""
    get = recorder.datastore.get_connection
    with get() as one, get() as two:
        rows = [
            c.execute("SELECT pg_backend_pid() AS pid").fetchone() for c in (one, two)
        ]
    return {row["pid"] for row in rows if row}


def end_backends(database_url: str, pids: set[int]) -> None:
    """What a restart or an operator does: the server ends the connections."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        for pid in pids:
            # Waits until the process is gone, so its goodbye is on the socket.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def append_in_one_transaction(recorder: AuthRecorder) -> None:
    """A command's transaction: it is never retried, so a dead connection fails it."""
    with recorder.one_transaction():
        recorder.insert_events([StoredEvent(uuid4(), 1, "pooled", b"{}")])


@pytest.mark.parametrize("idle_s", [0.0, event_store.TRUSTED_FOR_S + 0.1])
def test_connections_the_server_ended_are_replaced_before_a_command_uses_them(
    recorder: AuthRecorder, database_url: str, idle_s: float
) -> None:
    # Given: every pooled connection was used just now (or a while ago)
    ended = backend_pids(recorder)
    assert len(ended) == POOL_SIZE
    time.sleep(idle_s)

    # When: the server ends them all
    end_backends(database_url, ended)

    # Then: commands right after succeed, on new connections
    for _ in range(POOL_SIZE + 1):
        append_in_one_transaction(recorder)
    assert not backend_pids(recorder) & ended


def test_a_connection_used_moments_ago_is_trusted_and_an_idle_one_pinged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a pool of one connection, which records the pings it is sent
    recorder = make_recorder(database_url, 1)
    try:
        with recorder.datastore.get_connection() as conn:
            pass
        pings: list[float] = []
        sent = conn.execute

        def execute(query: Any, *args: Any, **kwargs: Any) -> Any:
            if query == "":
                pings.append(time.monotonic())
            return sent(query, *args, **kwargs)

        monkeypatch.setattr(conn, "execute", execute)

        # When: commands take it straight after each other, then after a pause
        for _ in range(3):
            with recorder.datastore.get_connection() as again:
                assert again is conn
        time.sleep(event_store.TRUSTED_FOR_S + 0.1)
        with recorder.datastore.get_connection() as again:
            lock_timeout = again.execute("SHOW lock_timeout").fetchone()

        # Then: only the idle one was pinged; the lock timeout came with connecting
        assert len(pings) == 1
        assert lock_timeout == {"lock_timeout": "5s"}
    finally:
        recorder.datastore.close()
