"""The services a one-off command runs on: no projection workers, no mailer."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services


@contextmanager
def command_services() -> Iterator[Services]:
    services = build_services(
        Settings(run_projections=False, run_mailer=False, run_webhooks=False)
    )
    try:
        yield services
    finally:
        services.close()


def operator() -> str:
    """Who the events of a command name as having asked: its OS user."""
    return f"cli:{getpass.getuser()}"
