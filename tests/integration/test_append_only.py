"""The event log is append-only in the database itself, whatever the code does."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from application.values import Client
from interfaces.bootstrap import Services

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("table", ["auth_events", "auth_snapshots"])
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {} SET topic = 'forged'", "DELETE FROM {}", "TRUNCATE {}"],
)
def test_history_cannot_be_rewritten(
    services: Services, table: str, statement: str
) -> None:
    grant = services.app.register(
        "kept@example.com", "an append-only passphrase", Client()
    )
    services.app.take_snapshot(grant.user_id)
    select = sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        before = conn.execute(select).fetchall()

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(sql.SQL(statement).format(sql.Identifier(table)))

        after = conn.execute(select).fetchall()
    assert after == before
    assert before


def test_appending_still_works(services: Services) -> None:
    services.app.register("first@example.com", "an append-only passphrase", Client())

    services.app.register("second@example.com", "an append-only passphrase", Client())

    stored = services.app.recorder.select_notifications(start=1, limit=100)
    registered = [n for n in stored if n.topic == "authledger:User.Registered"]
    assert len(registered) == 2
