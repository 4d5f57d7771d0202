"""Helpers for the integration tests: a client, the stored log and table dumps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from psycopg import sql

from application.store import AuthEventLog
from application.values import Client
from infrastructure.database import eventsourcing_env
from infrastructure.projection_runner import GroupRunner, ReadModelSpec, version_of
from infrastructure.read_model_lifecycle import ReadModels
from infrastructure.settings import Settings
from interfaces.bootstrap import Services, sealing

CLIENT_IP = "203.0.113.7"
CLIENT_UA = "pytest-integration"
CLIENT = Client(CLIENT_IP, CLIENT_UA)
APP_NAME = AuthEventLog.name

MakeServices = Callable[..., Services]
"""Build services with some settings changed (the `make_services` fixture)."""


def stored_events(services: Services) -> list[Notification]:
    """Every event in the store, in notification order."""
    return list(services.app.recorder.select_notifications(start=1, limit=10_000))


def stored_facts(services: Services) -> list[Notification]:
    """Every event in the store but the address counters each request adds to,
    and the first start's upgrades (its record, the admin roster and the key
    ring it starts)."""
    return [
        n
        for n in stored_events(services)
        if not n.topic.startswith(
            (
                "authledger:ClientThrottle.",
                "authledger:Upgrade.",
                "authledger:AdminRoster.Started",
                "authledger:KeyRing.",
            )
        )
    ]


def states_with_topic(services: Services, topic: str) -> list[dict[str, Any]]:
    """The decoded state of every stored event with this topic, opened."""
    chosen = [n for n in stored_events(services) if n.topic == topic]
    return services.app.personal_data.payloads(chosen)


def last_position(services: Services) -> int:
    """The id of the newest notification (0 for an empty store)."""
    return services.app.recorder.max_notification_id() or 0


def wait_for_read_models(services: Services, timeout_s: float = 10.0) -> None:
    """Wait until every read model's newest version is live (no build is
    left to switch and drop a schema) and the lagging ones have applied
    every stored event. The consistent ones commit with the events."""
    newest = {
        name: spec.version for name, spec in services.read_models.newest().items()
    }

    def built() -> bool:
        live = services.read_models.live()
        return {name: version_of(v.schema) for name, v in live.items()} == newest

    wait_until(built, timeout_s, "the newest versions to go live")
    wait_until(
        lambda: services.read_models.lag(services.recorder, APP_NAME, 1) == 0,
        timeout_s,
        "the lagging read models to catch up",
    )


def live_specs(services: Services) -> list[ReadModelSpec[Any]]:
    """The spec of each read model, pointed at its live schema."""
    names = services.read_models.newest()
    specs = [services.read_models.live_spec(name) for name in names]
    assert all(specs), f"no live schema for some of {list(names)}"
    return [spec for spec in specs if spec is not None]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.005)


def table_rows(url: str, schema: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, ordered by its first column (the primary key)."""
    query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def tracking_position(url: str, spec: ReadModelSpec[Any]) -> int | None:
    """The position the read model in `spec.schema` has committed for the log."""
    table = f"{spec.name}_tracking"  # eventsourcing names it after the projection
    query = sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            query.format(sql.Identifier(spec.schema, table)), (APP_NAME,)
        ).fetchone()
    return None if row is None else int(row[0])


ReadModelState = dict[str, tuple[int | None, list[tuple[Any, ...]]]]


def read_model_state(url: str, specs: list[ReadModelSpec[Any]]) -> ReadModelState:
    """Position and rows of each read model, in the schema its spec names."""
    return {
        spec.name: (
            tracking_position(url, spec),
            table_rows(url, spec.schema, spec.view.table),
        )
        for spec in specs
    }


def rebuild_from_zero(
    settings: Settings, specs: list[ReadModelSpec[Any]]
) -> list[ReadModelSpec[Any]]:
    """Project the whole log again, each read model into an empty schema of its own."""
    url = str(settings.database_url)
    models = ReadModels(url, specs, eventsourcing_env(url, 1, 2), sealing(settings))
    rebuilt = [replace(spec, schema=f"rebuild_{spec.name}") for spec in specs]
    for spec in rebuilt:
        models.create_tables(spec)
    runner = GroupRunner(rebuilt, url, models.env, models.mapper_of)
    try:
        while runner.step():
            pass
    finally:
        runner.close()
    return rebuilt


class FakeClock:
    """A clock the test moves by hand; starts at the real current time."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
