"""`authledger projections status|rebuild` on a real database; resuming a rebuild."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.values import Client
from infrastructure.database import eventsourcing_env
from infrastructure.projection_runner import GroupRunner
from infrastructure.read_model_lifecycle import ReadModels
from infrastructure.read_model_registry import live_versions, position_in
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    LOGIN_HISTORY,
    READ_MODELS,
    build_services,
    sealing,
)
from tests.cli import run_cli
from tests.integration.helpers import wait_for_read_models

pytestmark = pytest.mark.postgres


def cli(settings: Settings, *args: str) -> str:
    return run_cli(str(settings.database_url), settings.data_dir, *args).stdout


ERASED_EMAIL = "cli-erased@example.com"
ERASED_CLIENT = ("192.0.2.9", "ErasedAgent/1.0")


@pytest.fixture
def with_history(settings: Settings) -> None:
    services = build_services(settings)
    for n in range(5):
        grant = services.app.register(f"cli-{n}@example.com", "password one", Client())
        services.app.refresh(grant.refresh_token, Client())
    # And one erased, after a login from an address and a mail asked for
    erased = services.app.register(ERASED_EMAIL, "password one", Client())
    services.app.login(ERASED_EMAIL, "password one", Client(*ERASED_CLIENT))
    services.mail.request_verification(erased.user_id, Client())
    services.app.erase(erased.user_id, None, Client())
    wait_for_read_models(services)
    services.close()


@pytest.mark.usefixtures("with_history")
def test_status_lists_each_read_model_live_with_its_rows(settings: Settings) -> None:
    out = cli(settings, "projections", "status")

    lines = {
        line.split("│")[2].strip(): line for line in out.splitlines() if "_v" in line
    }
    newest = {spec.name: spec.schema for spec in READ_MODELS}  # oldest first
    assert set(lines) == set(newest.values())
    users = [c.strip() for c in lines["user_directory_v3"].split("│")]
    assert users[4:6] == ["consistent", "live"]
    assert users[7] == "0"  # lag: it commits with the events
    assert users[8] == "6"  # rows (the erased account's, anonymised)
    history = [c.strip() for c in lines["login_history_v2"].split("│")]
    assert history[4:6] == ["lagging", "live"]
    assert history[7] == "0"  # lag, once caught up
    assert int(history[8]) > 5  # rows


@pytest.mark.usefixtures("with_history")
def test_rebuild_switches_to_a_fresh_copy_and_drops_the_old(settings: Settings) -> None:
    url = str(settings.database_url)
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT * FROM read_models.users ORDER BY id").fetchall()

    out = cli(settings, "projections", "rebuild", "user_directory")

    assert "rebuilt user_directory" in out
    with psycopg.connect(url) as conn:
        assert live_versions(conn)["user_directory"].schema == "user_directory_v3_b"
        after = conn.execute("SELECT * FROM read_models.users ORDER BY id").fetchall()
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
    assert after == before
    assert "user_directory_v3" not in schemas


@pytest.mark.usefixtures("with_history")
def test_rebuilding_all_read_models_in_one_pass_reports_each_and_equals_the_live(
    settings: Settings,
) -> None:
    url = str(settings.database_url)
    tables = ("users", "active_sessions", "login_history", "outbox")
    with psycopg.connect(url) as conn:
        before = {t: rows_in(conn, "read_models", t) for t in tables}

    names = list(dict.fromkeys(spec.name for spec in READ_MODELS))
    out = cli(settings, "projections", "rebuild", *names)

    for name in names:
        assert f"{name}: " in out
    assert "events/s in all" in out
    with psycopg.connect(url) as conn:
        after = {t: rows_in(conn, "read_models", t) for t in tables}
    assert after == before
    shown = str(after)
    assert [v for v in (ERASED_EMAIL, *ERASED_CLIENT) if v in shown] == []


def rows_in(conn: psycopg.Connection[Any], schema: str, table: str) -> list[Any]:
    query = SQL("SELECT * FROM {} ORDER BY 1").format(Identifier(schema, table))
    return conn.execute(query).fetchall()


@pytest.mark.usefixtures("with_history")
def test_an_interrupted_rebuild_resumes_from_its_position(settings: Settings) -> None:
    url = str(settings.database_url)
    models = ReadModels(
        url, READ_MODELS, eventsourcing_env(url, 1, 2), sealing(settings)
    )
    target = replace(LOGIN_HISTORY, schema="login_history_resume")
    models.create_tables(target)

    # Given: a rebuild interrupted after its first batch of 7 events
    first = GroupRunner([target], url, models.env, models.mapper_of, batch_size=7)
    first.step()
    first.close()
    with psycopg.connect(url) as conn:
        interrupted_at = position_in(conn, target.schema, "login_history", "Auth")

    # When: it runs again, to its end
    again = GroupRunner([target], url, models.env, models.mapper_of, batch_size=7)
    while again.step():
        pass
    again.close()

    # Then: it went on from there to the head, and equals the live table
    head = models_head(url)
    assert 0 < interrupted_at < head
    with psycopg.connect(url) as conn:
        assert position_in(conn, target.schema, "login_history", "Auth") == head
        assert rows_in(conn, target.schema, "login_history") == rows_in(
            conn, "read_models", "login_history"
        )


def models_head(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(notification_id) FROM auth_events").fetchone()
    assert row is not None
    return int(row[0])
