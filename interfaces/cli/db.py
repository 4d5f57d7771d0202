"""`authledger db`: set up the database's roles, run as the event store's owner."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from infrastructure.settings import Settings
from interfaces.bootstrap import set_up_roles

db = typer.Typer(no_args_is_help=True, help="Set up the database.")


@db.command("setup-roles")
def setup_roles(
    app_role: Annotated[
        str, typer.Option(help="The role `serve` connects as; created if missing.")
    ],
) -> None:
    """Create the event store as its owner and a role that may only append and read.

    Run it with AUTHLEDGER_DATABASE_URL naming the owner (migration) role,
    then serve with a URL naming the application role. The role's password,
    if set, comes from AUTHLEDGER_APP_ROLE_PASSWORD (never from the command
    line, which other users and shell histories see). Running it again is
    harmless.
    """
    password = os.environ.get("AUTHLEDGER_APP_ROLE_PASSWORD") or None
    tables = set_up_roles(Settings(), app_role, password)
    typer.echo(
        f"{app_role} may read and append to {tables.schema}.{tables.events}"
        f" and {tables.schema}.{tables.snapshots}, and build its read models"
    )
