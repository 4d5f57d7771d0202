"""The event log is append-only in the database itself, whatever the code does."""

from __future__ import annotations

import psycopg
import pytest

from application.values import Client
from interfaces.bootstrap import Services

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE auth_events SET topic = 'forged'",
        "DELETE FROM auth_events",
        "TRUNCATE auth_events",
    ],
)
def test_history_cannot_be_rewritten(services: Services, statement: str) -> None:
    services.app.register("kept@example.com", "a password", Client())
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM auth_events").fetchone()

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)

        after = conn.execute("SELECT count(*) FROM auth_events").fetchone()
    assert after == before
    assert before is not None
    assert before[0] > 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE auth_snapshots SET topic = 'forged'",
        "DELETE FROM auth_snapshots",
        "TRUNCATE auth_snapshots",
    ],
)
def test_snapshots_cannot_be_rewritten(services: Services, statement: str) -> None:
    grant = services.app.register("snapped@example.com", "a password", Client())
    services.app.take_snapshot(grant.user_id)
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        before = conn.execute("SELECT * FROM auth_snapshots").fetchall()

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)

        after = conn.execute("SELECT * FROM auth_snapshots").fetchall()
    assert after == before
    assert len(before) == 1


def test_appending_still_works(services: Services) -> None:
    services.app.register("first@example.com", "a password", Client())

    services.app.register("second@example.com", "a password", Client())

    stored = services.app.recorder.select_notifications(start=1, limit=100)
    registered = [n for n in stored if n.topic == "authledger:User.Registered"]
    assert len(registered) == 2
