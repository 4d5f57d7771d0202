"""`authledger projections`: run, inspect and rebuild the read models."""

from __future__ import annotations

import logging.config
import signal
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

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

from infrastructure.logs import log_config
from infrastructure.settings import Settings
from infrastructure.tracing import configure_tracing
from interfaces.bootstrap import Services, build_services

if TYPE_CHECKING:
    from infrastructure.projection_runner import GroupRunner
    from infrastructure.read_model_lifecycle import BuildReport

projections = typer.Typer(no_args_is_help=True, help="Read models built from the log.")


@projections.command()
def status() -> None:
    """Show each read model's versions: kind, state, position, lag in events, rows."""
    services = build_services(
        Settings(run_projections=False, run_mailer=False, run_webhooks=False)
    )
    try:
        rows = services.read_models.status(services.recorder, services.app.name)
    finally:
        services.close()
    table = Table(
        "read model", "schema", "version", "kind", "state", "position", "lag", "rows"
    )
    for row in rows:
        table.add_row(
            row.name,
            row.schema,
            str(row.version),
            row.kind,
            row.state,
            str(row.position),
            str(row.lag),
            str(row.rows),
        )
    Console(width=160).print(table)


@projections.command("run")
def run() -> None:
    """Run the projections here until SIGTERM, so API replicas need not."""
    settings = Settings(run_projections=True)
    logging.config.dictConfig(log_config(settings.log_format))
    configure_tracing()
    services = build_services(settings)
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
    names: Annotated[
        list[str],
        typer.Argument(
            help="user_directory, active_sessions, login_history and/or mail_outbox"
        ),
    ],
) -> None:
    """Rebuild read models from the whole log, in one pass, beside the live ones.

    The service keeps serving from the live tables meanwhile; each rebuilt one
    is switched to once caught up. Interrupted, it resumes where it stopped.
    """
    services = build_services(
        Settings(run_projections=False, run_mailer=False, run_webhooks=False)
    )
    try:
        try:
            targets = services.read_models.rebuild_targets(names)
        except KeyError as unknown:
            raise typer.BadParameter(f"no read model named {unknown}") from None
        report = _build_showing_progress(services, targets)
    finally:
        services.close()
    for name, (events, busy_s) in report.per_model.items():
        rate = events / busy_s if busy_s else 0.0
        typer.echo(f"{name}: {events} events applied, {rate:.0f} events/s of its own")
    overall = report.events / report.seconds if report.seconds else 0.0
    typer.echo(f"rebuilt {', '.join(names)}: {overall:.0f} events/s in all")


def _build_showing_progress(services: Services, targets: list[Any]) -> BuildReport:
    columns = (
        TextColumn("rebuilding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} events/s"),
        TimeRemainingColumn(),
    )
    total = services.recorder.count_after(0, 10**9)
    with Progress(*columns) as bar:
        task = bar.add_task("rebuild", total=total, rate=0.0)
        started = time.monotonic()

        def show(runner: GroupRunner) -> None:
            done = max((m.applied for m in runner.members), default=0)
            rate = done / max(time.monotonic() - started, 1e-3)
            bar.update(task, completed=done, rate=rate)

        return services.read_models.build(targets, progress=show)
