"""`authledger projections status|rebuild` on a real database; resuming a rebuild."""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.values import Client
from infrastructure.database import ensure_schema, eventsourcing_env
from infrastructure.projection_runner import catch_up_in_batches
from infrastructure.read_model_registry import live_schemas, position_in
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    LOGIN_HISTORY,
    READ_MODELS,
    RUNNER_ENV,
    build_services,
    build_view,
)
from tests.cli import run_cli

pytestmark = pytest.mark.postgres


def cli(settings: Settings, *args: str) -> str:
    return run_cli(str(settings.database_url), settings.data_dir, *args).stdout


@pytest.fixture
def with_history(settings: Settings) -> None:
    services = build_services(settings)
    for n in range(5):
        grant = services.app.register(f"cli-{n}@example.com", "password one", Client())
        services.app.refresh(grant.refresh_token, Client())
    services.close()


@pytest.mark.usefixtures("with_history")
def test_status_lists_each_read_model_live_with_its_rows(settings: Settings) -> None:
    out = cli(settings, "projections", "status")

    lines = {
        line.split("│")[2].strip(): line for line in out.splitlines() if "_v1" in line
    }
    assert set(lines) == {spec.schema for spec in READ_MODELS}
    cells = [c.strip() for c in lines["user_directory_v1"].split("│")]
    assert cells[4] == "live"
    assert cells[6] == "0"  # lag
    assert cells[7] == "5"  # rows


@pytest.mark.usefixtures("with_history")
def test_rebuild_switches_to_a_fresh_copy_and_drops_the_old(settings: Settings) -> None:
    url = str(settings.database_url)
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT * FROM read_models.users ORDER BY id").fetchall()

    out = cli(settings, "projections", "rebuild", "user_directory")

    assert "rebuilt into user_directory_v1_b" in out
    with psycopg.connect(url) as conn:
        assert live_schemas(conn)["user_directory"] == "user_directory_v1_b"
        after = conn.execute("SELECT * FROM read_models.users ORDER BY id").fetchall()
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
    assert after == before
    assert "user_directory_v1" not in schemas


class StopAfterFirstBatch(threading.Event):
    """Says "stop" the second time it is asked: after one batch has committed."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > 1


@pytest.mark.usefixtures("with_history")
def test_an_interrupted_rebuild_resumes_from_its_position(settings: Settings) -> None:
    url = str(settings.database_url)
    target = replace(LOGIN_HISTORY, schema="login_history_resume")
    ensure_schema(url, target.schema)
    env = {**eventsourcing_env(url, 1, 2), **RUNNER_ENV}
    build_view(target, {**env, "CREATE_TABLE": "y"}).datastore.close()
    with psycopg.connect(url) as conn:
        head_row = conn.execute(
            "SELECT max(notification_id) FROM auth_events"
        ).fetchone()
    assert head_row is not None
    head = int(head_row[0])

    # Given: a rebuild interrupted after its first batch of 7 events
    catch_up_in_batches(target, target.env(env), StopAfterFirstBatch(), batch_size=7)
    with psycopg.connect(url) as conn:
        interrupted_at = position_in(conn, target.schema, "login_history", "Auth")

    # When: it runs again
    catch_up_in_batches(target, target.env(env), threading.Event(), batch_size=7)

    # Then: it went on from there to the head, and equals the live table
    assert 0 < interrupted_at < head
    with psycopg.connect(url) as conn:
        assert position_in(conn, target.schema, "login_history", "Auth") == head
        query = SQL("SELECT * FROM {} ORDER BY position")
        rebuilt = conn.execute(query.format(Identifier(target.schema, "login_history")))
        live = conn.execute(query.format(Identifier("read_models", "login_history")))
        assert rebuilt.fetchall() == live.fetchall()
