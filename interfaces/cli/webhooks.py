"""`authledger webhooks`: where the log is pushed, and how delivery stands."""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from application.errors import CursorBeyondLogError, UnsafeWebhookUrlError
from application.feed import UnknownEventTypeError
from domain.errors import UnknownWebhookError
from infrastructure.webhooks import delivery_states, endpoint_status
from interfaces.cli.services import command_services, operator

webhooks = typer.Typer(no_args_is_help=True, help="Manage webhook endpoints.")

AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per endpoint.")]
COLUMNS = ("id", "url", "state", "cursor", "delivered", "failed_attempts", "last_error")


def _show(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for record in records:
            typer.echo(json.dumps(record, default=str))
        return
    table = Table(*COLUMNS)
    for record in records:
        table.add_row(
            *(str(record[name] if record[name] is not None else "") for name in COLUMNS)
        )
    Console(width=200).print(table)


@webhooks.command("list")
def list_webhooks(as_json: AsJson = False) -> None:
    """Every endpoint and how its delivery stands (`failing` after a day of
    failures)."""
    with command_services() as services:
        states = delivery_states(services.database_url)
        _show(
            [
                endpoint_status(e, states.get(e.id))
                for e in services.webhooks.endpoints()
            ],
            as_json,
        )


@webhooks.command()
def add(
    url: Annotated[str, typer.Argument(help="Where to POST the events.")],
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this type (repeatable); default all."),
    ] = None,
) -> None:
    """Send the events recorded from now on to URL; print its signing secret,
    this once."""
    with command_services() as services:
        try:
            endpoint, secret = services.webhooks.add(url, event_type or [], operator())
        except (UnsafeWebhookUrlError, UnknownEventTypeError) as refused:
            typer.echo(f"refused: {refused}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"added webhook {endpoint.id}")
    typer.echo(f"signing secret (shown once): {secret}")


@webhooks.command()
def remove(
    endpoint_id: Annotated[UUID, typer.Argument(help="The endpoint's id.")],
) -> None:
    """Stop sending to the endpoint."""
    with command_services() as services:
        try:
            services.webhooks.remove(endpoint_id, operator())
        except UnknownWebhookError:
            typer.echo(f"no webhook {endpoint_id}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"removed webhook {endpoint_id}")


@webhooks.command()
def replay(
    endpoint_id: Annotated[UUID, typer.Argument(help="The endpoint's id.")],
    from_cursor: Annotated[
        int,
        typer.Option(
            "--from",
            min=0,
            max=2**63 - 1,
            help="The cursor of the first event to send again.",
        ),
    ],
) -> None:
    """Send the events from a cursor on again, in order."""
    with command_services() as services:
        try:
            services.webhooks.replay(endpoint_id, from_cursor, operator())
        except UnknownWebhookError:
            typer.echo(f"no webhook {endpoint_id}", err=True)
            raise typer.Exit(1) from None
        except CursorBeyondLogError:
            typer.echo(f"refused: the log has not reached {from_cursor}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"webhook {endpoint_id} replays from {from_cursor}")
