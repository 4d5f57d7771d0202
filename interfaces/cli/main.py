"""`authledger`: serve the API, run projections, administer users."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated, Any

import typer

from infrastructure.settings import Settings
from interfaces.cli.audit import audit
from interfaces.cli.users import users

app = typer.Typer(no_args_is_help=True, help="Event-sourced authentication service.")
projections = typer.Typer(
    no_args_is_help=True, help="Read models built from the event log."
)
app.add_typer(projections, name="projections")
app.add_typer(audit, name="audit")
app.add_typer(users, name="users")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes; 0 means one per core.")
    ] = 0,
) -> None:
    """Serve the HTTP API; on the embedded PostgreSQL unless a database is set."""
    from interfaces.http.serve import serve as run  # noqa: PLC0415

    run(host, port, workers or os.cpu_count() or 1)


@projections.command("run")
def run_projections() -> None:
    """Run the projections here until SIGTERM, so API replicas need not."""
    from interfaces.bootstrap import build_services  # noqa: PLC0415

    services = build_services(Settings(run_projections=True))
    stopped = threading.Event()

    def stop(*_: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    typer.echo("projections running; SIGTERM or Ctrl-C stops them")
    stopped.wait()
    services.close()


def main() -> None:
    """Entry point of the console script."""
    app()
