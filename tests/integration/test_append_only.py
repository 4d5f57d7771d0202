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
    services.app.register("kept@example.com", "an append-only passphrase", Client())
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM auth_events").fetchone()

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)

        after = conn.execute("SELECT count(*) FROM auth_events").fetchone()
    assert after == before
    assert before is not None
    assert before[0] > 0


def test_appending_still_works(services: Services) -> None:
    services.app.register("first@example.com", "an append-only passphrase", Client())

    services.app.register("second@example.com", "an append-only passphrase", Client())

    stored = services.app.recorder.select_notifications(start=1, limit=100)
    registered = [n for n in stored if n.topic == "authledger:User.Registered"]
    assert len(registered) == 2
