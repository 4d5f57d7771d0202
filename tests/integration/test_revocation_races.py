"""Logins racing from many threads never outlive a revocation that follows them.

The attack: keep logging in from several threads while the owner logs out
everywhere, changes the password or resets it. Every session whose opening
precedes the revocation in the log must be dead afterwards (checked in the
event store), and the revocation itself must not starve.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import pytest

from application.account_mail import RESET
from application.errors import (
    ConflictError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
)
from application.values import Client, SessionGrant
from interfaces.bootstrap import Services
from tests.integration.helpers import MakeServices, stored_events

pytestmark = pytest.mark.postgres
LOGIN_THREADS = 6
TRIALS = 5
PASSWORD = "the first password"
NEW_PASSWORD = "a newer password"
OPENED = "authledger:Session.Opened"
MARKER = "authledger:User.SessionsRevoked"


@dataclass(frozen=True)
class Trial:
    """Logins that raced one revocation, and the revocation's own session."""

    grants: list[SessionGrant]
    kept: UUID | None


def race(
    services: Services,
    email: str,
    revoke: Callable[[], UUID | None] | Callable[[], None],
) -> Trial:
    """Log in from LOGIN_THREADS threads until `revoke` has returned, and a bit on."""
    grants: list[SessionGrant] = []
    revoked = threading.Event()
    started = threading.Barrier(LOGIN_THREADS + 1)

    def log_in(n: int) -> None:
        client = Client(f"198.51.100.{n}", "racer")
        started.wait()
        for _ in range(400):
            try:
                grants.append(services.app.login(email, PASSWORD, client))
            except InvalidCredentialsError:
                return  # the password changed under us
            except ConflictError:
                continue  # six racers on one user: losing every retry is allowed
            if revoked.is_set() and len(grants) > 3 * LOGIN_THREADS:
                return

    threads = [threading.Thread(target=log_in, args=(n,)) for n in range(LOGIN_THREADS)]
    for thread in threads:
        thread.start()
    started.wait()
    while len(grants) < LOGIN_THREADS:  # the race is on
        threading.Event().wait(0.001)
    kept: UUID | None = revoke()
    revoked.set()
    for thread in threads:
        thread.join()
    return Trial(grants, kept)


def assert_revoked_in_log_order(
    services: Services, user_id: UUID, trial: Trial
) -> None:
    """Sessions opened before the last marker in the log are dead; later ones live."""
    events = stored_events(services)
    markers = [n for n in events if n.topic == MARKER and n.originator_id == user_id]
    assert markers, "the revocation stored its marker"
    marker = markers[-1]
    opened_at = {
        n.originator_id: n
        for n in events
        if n.topic == OPENED and json.loads(n.state)["user_id"]["_data_"] == user_id.hex
    }
    before = after = 0
    now = services.app.clock()
    for grant in trial.grants:
        opening = opened_at[grant.session_id]
        precedes = opening.id < marker.id
        # The log's order is the user's order: a login is before or after it.
        login_version = json.loads(opening.state)["login_version"]
        assert precedes == (login_version < marker.originator_version)
        row = services.sessions.get_session(grant.session_id, now)
        if precedes and grant.session_id != trial.kept:
            before += 1
            assert row is None, f"session {grant.session_id} survived the revocation"
            with pytest.raises(InvalidRefreshTokenError):
                services.app.refresh(grant.refresh_token, Client())
        else:
            after += 1
            assert row is not None
    assert before > 0  # logins really raced ahead of the revocation


def test_logout_everywhere_ends_every_session_opened_before_it_while_logins_race(
    make_services: MakeServices,
) -> None:
    services = make_services(client_max_failures=1_000_000)
    for trial_number in range(TRIALS):
        email = f"racer{trial_number}@example.com"
        owner = services.app.register(email, PASSWORD, Client())

        def logout_all(owner: SessionGrant = owner) -> None:
            services.app.logout_all(owner.user_id, Client())

        trial = race(services, email, logout_all)
        assert_revoked_in_log_order(services, owner.user_id, trial)


def test_a_password_change_ends_every_other_earlier_session_while_logins_race(
    make_services: MakeServices,
) -> None:
    services = make_services(client_max_failures=1_000_000)
    for trial_number in range(TRIALS):
        email = f"changer{trial_number}@example.com"
        owner = services.app.register(email, PASSWORD, Client())

        def change(owner: SessionGrant = owner) -> UUID:
            services.app.change_password(
                owner.user_id, PASSWORD, NEW_PASSWORD, Client(), keep=owner.session_id
            )
            return owner.session_id

        trial = race(services, email, change)
        assert_revoked_in_log_order(services, owner.user_id, trial)
        # And the kept session lives on
        assert services.app.refresh(owner.refresh_token, Client())


def test_a_password_reset_ends_every_earlier_session_while_logins_race(
    make_services: MakeServices,
) -> None:
    services = make_services(client_max_failures=1_000_000, mail_max_per_address=1000)
    for trial_number in range(TRIALS):
        email = f"resetter{trial_number}@example.com"
        owner = services.app.register(email, PASSWORD, Client())
        services.mail.forgot_password(email, Client())
        services.mail.dispatch_resets(0)
        request = next(
            json.loads(n.state)
            for n in reversed(stored_events(services))
            if n.topic == "authledger:User.PasswordResetRequested"
            and n.originator_id == owner.user_id
        )
        request_id = UUID(hex=request["request_id"]["_data_"])
        token = services.mail.tokens.mint(RESET, owner.user_id, request_id)

        def reset(token: str = token) -> None:
            services.mail.reset_password(token, NEW_PASSWORD, Client())

        trial = race(services, email, reset)
        assert_revoked_in_log_order(services, owner.user_id, trial)
        with pytest.raises(InvalidRefreshTokenError):
            services.app.refresh(owner.refresh_token, Client())
