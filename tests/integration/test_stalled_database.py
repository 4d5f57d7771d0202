"""A database that is blocked rather than down: answers come within a bound.

The fault: another session holds the events table's EXCLUSIVE lock (reads
pass, appends wait). An append waits out the lock timeout once and fails as
retryable: a statement that timed out on a healthy connection is not a lost
commit to look for, nor a reason to wait again.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from application.values import Client
from interfaces.bootstrap import Services
from tests.integration.helpers import stored_facts

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
