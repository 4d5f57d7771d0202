"""`authledger`: serve the API, run projections, administer users and roles."""

from __future__ import annotations

import sys
from typing import Annotated

import psycopg
import typer
from eventsourcing.persistence import PersistenceError

from infrastructure.data_keys import MissingKeyTableError, WrongKeyEncryptionKeyError
from infrastructure.database import MissingDatabaseError
from infrastructure.db_roles import UnprotectedEventLogError, UnsafeAppRoleError
from infrastructure.settings import InsecureSettingsError
from infrastructure.tracing import TracingSettingsError
from interfaces.bootstrap import UnsealedLogError
from interfaces.cli.audit import audit
from interfaces.cli.db import db
from interfaces.cli.keys import keys
from interfaces.cli.projections import projections
from interfaces.cli.users import users
from interfaces.cli.webhooks import webhooks

app = typer.Typer(
    no_args_is_help=True,
    help="Event-sourced authentication service.",
    pretty_exceptions_show_locals=False,  # they may hold secrets
)
# What keeps a command from starting: said in one line, exit status 2.
STARTUP_ERRORS = (
    InsecureSettingsError,
    MissingDatabaseError,
    MissingKeyTableError,
    WrongKeyEncryptionKeyError,
    UnsealedLogError,
    UnprotectedEventLogError,
    UnsafeAppRoleError,
    TracingSettingsError,
    psycopg.OperationalError,
    PersistenceError,
)
app.add_typer(projections, name="projections")
app.add_typer(audit, name="audit")
app.add_typer(users, name="users")
app.add_typer(db, name="db")
app.add_typer(keys, name="keys")
app.add_typer(webhooks, name="webhooks")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes; 0: AUTHLEDGER_WORKERS, which is one per core"
            " unless set."
        ),
    ] = 0,
) -> None:
    """Serve the HTTP API; on the embedded PostgreSQL unless a database is set."""
    from interfaces.http.serve import serve as run  # noqa: PLC0415

    run(host, port, workers or None)


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except STARTUP_ERRORS as refused:
        typer.echo(f"authledger: refused: {refused}", err=True)
        sys.exit(2)
