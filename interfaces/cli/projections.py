"""`authledger projections`: run, inspect and rebuild the read models."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from infrastructure.database import ensure_schema, eventsourcing_env
from infrastructure.projection_runner import ProjectionWorker, version_of
from infrastructure.read_model_registry import (
    live_schemas,
    position_in,
    row_count,
    schemas_of,
)
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    RUNNER_ENV,
    Services,
    build_services,
    build_view,
    newest_versions,
)

projections = typer.Typer(no_args_is_help=True, help="Read models built from the log.")


@dataclass(frozen=True)
class VersionStatus:
    name: str
    schema: str
    version: int
    state: str
    position: int
    lag: int
    rows: int


def read_model_status(services: Services) -> list[VersionStatus]:
    """Every version of every read model in the database, and how far along it is."""
    head = services.app.recorder.max_notification_id() or 0
    app_name = services.app.name
    statuses = []
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        live = live_schemas(conn)
        for name, newest in newest_versions(services.read_models).items():
            for schema in schemas_of(conn, name):
                position = position_in(conn, schema, name, app_name)
                state = "live" if live.get(name) == schema else "building"
                if state == "building" and version_of(schema) < newest.version:
                    state = "retired"
                statuses.append(
                    VersionStatus(
                        name=name,
                        schema=schema,
                        version=version_of(schema),
                        state=state,
                        position=position,
                        lag=head - position,
                        rows=row_count(conn, schema, newest.view.table),
                    )
                )
    return statuses


@projections.command()
def status() -> None:
    """Show each read model's versions: state, position, lag in events, rows."""
    services = build_services(Settings(run_projections=False, run_mailer=False))
    try:
        rows = read_model_status(services)
    finally:
        services.close()
    table = Table("read model", "schema", "version", "state", "position", "lag", "rows")
    for row in rows:
        table.add_row(
            row.name,
            row.schema,
            str(row.version),
            row.state,
            str(row.position),
            str(row.lag),
            str(row.rows),
        )
    Console(width=160).print(table)


@projections.command("run")
def run() -> None:
    """Run the projections here until SIGTERM, so API replicas need not."""
    services = build_services(Settings(run_projections=True))
    stopped = threading.Event()

    def stop(*_: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    typer.echo("projections running; SIGTERM or Ctrl-C stops them")
    stopped.wait()
    services.close()


@projections.command()
def rebuild(
    name: Annotated[
        str,
        typer.Argument(
            help="user_directory, active_sessions, login_history or mail_outbox"
        ),
    ],
) -> None:
    """Rebuild a read model from the whole log beside the live one, then switch.

    The service keeps serving from the live tables meanwhile. Interrupted, it
    resumes where it stopped when run again.
    """
    services = build_services(Settings(run_projections=False, run_mailer=False))
    try:
        _rebuild(services, name)
    finally:
        services.close()


def _rebuild(services: Services, name: str) -> None:
    newest = newest_versions(services.read_models).get(name)
    if newest is None:
        raise typer.BadParameter(f"no read model named {name!r}")
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        live = live_schemas(conn).get(name, "")
    target = (services.live_spec(name) or newest).rebuild_target(live)
    env = {**eventsourcing_env(services.database_url, 1, 2), **RUNNER_ENV}
    ensure_schema(services.database_url, target.schema)
    build_view(target, {**env, "CREATE_TABLE": "y"}).datastore.close()
    worker = ProjectionWorker.building(target, services.database_url, env)
    worker.start()
    try:
        _show_progress(services, target.schema, name)
        _wait_until_dropped(services.database_url, name, live)
    finally:
        worker.stop()
    typer.echo(f"{name} rebuilt into {target.schema}, now live; {live} dropped")


def _wait_until_dropped(url: str, name: str, schema: str, timeout: float = 30) -> None:
    """The building worker drops the replaced schema after a grace period."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while schema in schemas_of(conn, name) and time.monotonic() < deadline:
            time.sleep(0.2)


def _show_progress(services: Services, schema: str, name: str) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} events/s"),
        TimeRemainingColumn(),
    )
    with (
        Progress(*columns) as progress,
        psycopg.connect(services.database_url, autocommit=True) as conn,
    ):
        task = progress.add_task(f"rebuilding {name}", total=None, rate=0.0)
        started = time.monotonic()
        first = position_in(conn, schema, name, services.app.name)
        while live_schemas(conn).get(name) != schema:
            head = services.app.recorder.max_notification_id() or 0
            position = position_in(conn, schema, name, services.app.name)
            rate = (position - first) / max(time.monotonic() - started, 1e-3)
            progress.update(task, total=head, completed=position, rate=rate)
            time.sleep(0.2)
