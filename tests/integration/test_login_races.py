"""Logins racing a password change or a lockout, interleaved at the password check."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

import pytest

from application.errors import InvalidCredentialsError, InvalidRefreshTokenError
from application.ports import PasswordHasher
from domain.user import User
from interfaces.bootstrap import Services
from tests.integration.helpers import CLIENT, MakeServices, wait_for_read_models

EMAIL = "trudy@example.com"
OLD_PASSWORD = "the old password"
NEW_PASSWORD = "the new password"


class InterleavingHasher:
    """The real hasher, which runs `meanwhile` once, just after checking `password`.

    That is the moment a login has decided on the password and not yet saved:
    whatever `meanwhile` commits is a concurrent request winning the race.
    """

    def __init__(
        self, real: PasswordHasher, password: str, meanwhile: Callable[[], None]
    ) -> None:
        self._real = real
        self._password = password
        self._meanwhile: Callable[[], None] | None = meanwhile

    def hash(self, password: str) -> str:
        return self._real.hash(password)

    def verify(self, password: str, password_hash: str) -> bool:
        matches = self._real.verify(password, password_hash)
        if password == self._password and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()
        return matches

    def verify_dummy(self, password: str) -> None:
        self._real.verify_dummy(password)


def test_a_login_racing_a_password_change_leaves_no_session_opened_by_the_old_password(
    services: Services,
) -> None:
    # Given a user whose password is changed (keeping one session) while a
    # login with the old password is between its check and its save
    kept = services.app.register(EMAIL, OLD_PASSWORD, CLIENT)

    def change_password() -> None:
        services.app.change_password(
            kept.user_id, OLD_PASSWORD, NEW_PASSWORD, CLIENT, keep=kept.session_id
        )

    real = services.app.passwords
    services.app.passwords = InterleavingHasher(real, OLD_PASSWORD, change_password)

    # When
    try:
        racing = services.app.login(EMAIL, OLD_PASSWORD, CLIENT)
    except InvalidCredentialsError:
        racing = None
    services.app.passwords = real

    # Then, whichever way the race went, only the kept session is active
    wait_for_read_models(services)
    sessions = services.sessions.list_sessions(kept.user_id, services.app.clock())
    assert [s.session_id for s in sessions] == [kept.session_id]
    if racing is not None:
        with pytest.raises(InvalidRefreshTokenError):
            services.app.refresh(racing.refresh_token, CLIENT)


def test_a_login_racing_a_lockout_opens_no_session_while_the_account_is_locked(
    make_services: MakeServices,
) -> None:
    # Given an account that other requests lock while a login with the right
    # password is between its check and its save
    services = make_services(lockout_max_failures=3)
    user_id = services.app.register(EMAIL, OLD_PASSWORD, CLIENT).user_id

    def lock_out() -> None:
        for i in range(3):
            with pytest.raises(InvalidCredentialsError):
                services.app.login(EMAIL, f"guess {i}", CLIENT)

    real = services.app.passwords
    services.app.passwords = InterleavingHasher(real, OLD_PASSWORD, lock_out)

    # When
    with contextlib.suppress(InvalidCredentialsError):
        services.app.login(EMAIL, OLD_PASSWORD, CLIENT)
    services.app.passwords = real

    # Then the user's own history shows no login while it was locked
    locked_until: datetime | None = None
    for event in services.app.events.get(user_id):
        if isinstance(event, User.LockedOut):
            locked_until = event.until
        elif isinstance(event, User.Unlocked):
            locked_until = None
        elif isinstance(event, User.LoggedIn):
            assert locked_until is None or event.timestamp >= locked_until, (
                f"logged in at {event.timestamp}, locked until {locked_until}"
            )
