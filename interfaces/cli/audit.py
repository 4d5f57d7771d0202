"""`authledger audit`: replay history from the event store, export it, past states."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from application.audit import Auditor
from application.errors import UserNotFoundError
from interfaces.cli.services import command_services
from interfaces.printable import printable

if TYPE_CHECKING:
    from application.timeline import TimelineEntry

audit = typer.Typer(no_args_is_help=True, help="Replay the event store for auditors.")

When = Annotated[
    datetime | None, typer.Option(help="ISO 8601 time, e.g. 2026-11-25T12:00:00+00:00")
]


# More than any one person's history; a bound all the same.
HISTORY_LIMIT = 1_000_000


@contextmanager
def _auditor() -> Iterator[Auditor]:
    with command_services() as services:
        yield Auditor(services.app)


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _json_line(record: dict[str, Any]) -> str:
    # ASCII only: a control character stored before agents were cleaned
    # reaches the terminal as an escape, never raw.
    return json.dumps(record, default=_json_value)


def _utc(moment: datetime) -> datetime:
    """Read a time without a zone as UTC: the store's times are all UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _user_id(auditor: Auditor, user: str) -> Any:
    try:
        return auditor.find_user(user)
    except UserNotFoundError:
        typer.echo(f"no such user: {user}", err=True)
        raise typer.Exit(1) from None


@audit.command()
def history(
    user: Annotated[str, typer.Argument(help="Email or user id.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    since: When = None,
    until: When = None,
    replay: Annotated[
        bool, typer.Option(help="Replay the event store itself, not the read model.")
    ] = False,
) -> None:
    """Print a user's whole history, in time order: logins, sessions, changes."""
    since, until = (_utc(since) if since else None), (_utc(until) if until else None)
    with command_services() as services:
        auditor = Auditor(services.app)
        user_id = _user_id(auditor, user)
        if replay:
            entries = auditor.timeline(user_id, since, until)
        else:
            entries = [
                row.entry()
                for row in services.history.history(
                    user_id, HISTORY_LIMIT, 0, since, until
                )
            ]
    if as_json:
        for entry in entries:
            typer.echo(_json_line(vars(entry)))
        return
    Console(width=200).print(timeline_table(entries))


def timeline_table(entries: list[TimelineEntry]) -> Table:
    """The entries as a table; what clients wrote is shown as text, never as markup."""
    table = Table("time (UTC)", "event", "session", "ip", "user agent", "detail")
    for entry in entries:
        cells = (
            entry.at.isoformat(timespec="seconds"),
            entry.event,
            str(entry.session_id or ""),
            entry.ip,
            entry.user_agent,
            entry.detail,
        )
        table.add_row(
            *(Text(printable(cell)) for cell in cells),
            style="red" if entry.event in {"login_failed", "locked_out"} else None,
        )
    return table


@audit.command()
def attempts(
    email: Annotated[str, typer.Argument(help="An address that has no account.")],
) -> None:
    """Print the failed logins and resets aimed at an address without an account."""
    with command_services() as services:
        tried = Auditor(services.app).unknown_logins(email, services.app.address_key)
    table = Table("time (UTC)", "ip", "user agent", "reason")
    for attempt in tried:
        cells = (
            attempt.timestamp.isoformat(timespec="seconds"),
            attempt.ip,
            attempt.user_agent,
            attempt.reason,
        )
        table.add_row(*(Text(printable(cell)) for cell in cells))
    Console(width=200).print(table)
    typer.echo(f"{len(tried)} attempts on {email}", err=True)


@audit.command()
def export(since: When = None) -> None:
    """Stream every stored event as JSON lines, in order; progress on stderr."""
    count = 0
    with _auditor() as auditor:
        records = auditor.export(_utc(since) if since else None)
        for count, record in enumerate(records, start=1):
            sys.stdout.write(_json_line(record) + "\n")
            if count % 10_000 == 0:
                typer.echo(f"{count} events exported", err=True)
    typer.echo(f"{count} events exported", err=True)


@audit.command()
def state(
    user: Annotated[str, typer.Argument(help="Email or user id.")],
    at: Annotated[datetime, typer.Option(help="The moment to look at (ISO 8601).")],
) -> None:
    """Print the user as it was at a moment, replayed from its events."""
    with _auditor() as auditor:
        past = auditor.user_at(_user_id(auditor, user), _utc(at))
    typer.echo(_json_line(past))
