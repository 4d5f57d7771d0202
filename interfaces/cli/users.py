"""`authledger users`: bootstrap and manage accounts from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from application.audit import Auditor
from application.errors import (
    EmailAlreadyRegisteredError,
    UserNotFoundError,
    WeakPasswordError,
)
from application.values import AccountChanges, Client
from domain.errors import InvalidEmailError, LastAdminError
from domain.values import Role
from infrastructure.settings import Settings
from interfaces.bootstrap import build_services

users = typer.Typer(no_args_is_help=True, help="Manage accounts.")


@users.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Argument(help="The administrator's email.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="AUTHLEDGER_ADMIN_PASSWORD",
            help="Asked for when not given; 8 to 256 characters.",
        ),
    ],
) -> None:
    """Create an ADMIN account, or promote (and enable) the existing account
    with this email."""
    if not 8 <= len(password) <= 256:
        raise typer.BadParameter("the password must have 8 to 256 characters")
    services = build_services(Settings(run_mailer=False, run_webhooks=False))
    try:
        try:
            services.app.register(email, password, Client(user_agent="cli"), Role.ADMIN)
            typer.echo(f"created administrator {email}")
        except WeakPasswordError as weak:
            reason = f"the password is too easy to guess: {weak.reason}"
            raise typer.BadParameter(reason) from None
        except InvalidEmailError:
            raise typer.BadParameter(f"not a valid email address: {email}") from None
        except EmailAlreadyRegisteredError:
            user_id = Auditor(services.app).find_user(email)
            # A working admin: enabled first, so that it joins the roster.
            services.app.administer(
                user_id,
                AccountChanges(role=Role.ADMIN, disabled=False),
                None,
                Client(user_agent="cli"),
            )
            typer.echo(f"promoted {email} to administrator")
    finally:
        services.close()


@users.command("erase")
def erase(
    who: Annotated[str, typer.Argument(help="The account's email or id.")],
) -> None:
    """Erase an account: its sessions end, its address may sign up again as a
    new account, and its rows leave every read model."""
    services = build_services(Settings(run_mailer=False, run_webhooks=False))
    try:
        try:
            user_id = Auditor(services.app).find_user(who)
            services.app.erase(user_id, None, Client(user_agent="cli"))
        except UserNotFoundError:
            raise typer.BadParameter(f"no such account: {who}") from None
        except LastAdminError:
            raise typer.BadParameter("the last admin cannot be erased") from None
        typer.echo(f"erased {user_id}")
    finally:
        services.close()
