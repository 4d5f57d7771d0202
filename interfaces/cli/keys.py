"""`authledger keys`: the signing keys' ring, and its rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from domain.errors import SigningKeyStateError, UnknownSigningKeyError
from interfaces.cli.services import command_services, operator

if TYPE_CHECKING:
    from domain.key_ring import SigningKey

keys = typer.Typer(no_args_is_help=True, help="Manage the keys that sign tokens.")

AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per key.")]


def _show(found: list[SigningKey], as_json: bool) -> None:
    if as_json:
        for key in found:
            typer.echo(json.dumps(_record(key)))
        return
    table = Table("kid", "algorithm", "state", "added", "changed", "verifies until")
    for key in found:
        record = _record(key)
        table.add_row(*(str(record[name] or "") for name in record))
    Console(width=160).print(table)


def _record(key: SigningKey) -> dict[str, str | None]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": key.state.value,
        "added_at": key.added_at.isoformat(timespec="seconds"),
        "changed_at": key.changed_at.isoformat(timespec="seconds"),
        "verify_until": key.verify_until.isoformat(timespec="seconds")
        if key.verify_until
        else None,
    }


@keys.command("list")
def list_keys(as_json: AsJson = False) -> None:
    """Every key of the ring, oldest first, with its state."""
    with command_services() as services:
        _show(services.key_ring.start(operator()).all_keys(), as_json)


@keys.command()
def rotate(
    algorithm: Annotated[
        Literal["ES256", "EdDSA", "RS256", "HS256"] | None,
        typer.Option(help="Of the new next key (default: the settings')."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The next key signs from now; the active one is retired (it verifies
    until its last token expires); a new next key is published."""
    with command_services() as services, _refusals():
        active = services.key_ring.rotate(operator(), algorithm)
        _show([active], as_json)


@keys.command()
def retire(
    kid: Annotated[str, typer.Argument(help="A next key's id.")],
    as_json: AsJson = False,
) -> None:
    """Withdraw a next key (the active one is retired by `rotate`)."""
    with command_services() as services, _refusals():
        _show([services.key_ring.retire(kid, operator())], as_json)


@keys.command()
def revoke(
    kid: Annotated[str, typer.Argument(help="The key's id.")],
    as_json: AsJson = False,
) -> None:
    """Refuse every token the key signed, at once, and stop publishing it;
    revoking the active key first activates the next."""
    with command_services() as services, _refusals():
        _show([services.key_ring.revoke(kid, operator())], as_json)


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except UnknownSigningKeyError as unknown:
        typer.echo(f"no key {unknown}", err=True)
        raise typer.Exit(1) from None
    except SigningKeyStateError as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(1) from None
