"""What the commands tell an operator: each outcome counted once, after it
is stored, and a lock or a replay counted apart from the refusal the caller
sees (which stays the one refusal)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest

from application.errors import (
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    TooManyAttemptsError,
)
from application.ports import Tally
from application.values import AuthPolicy
from domain.session import RefreshPolicy
from domain.throttle import ThrottlePolicy
from domain.user import LockoutPolicy
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    PASSWORD,
    WRONG_PASSWORD,
    FakeClock,
    new_app,
)


class Tallies:
    """A meter that keeps what it was told."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[Tally, str]] = Counter()

    def count(self, tally: Tally, label: str = "") -> None:
        self.seen[tally, label] += 1


def test_logins_are_counted_by_outcome_and_the_lock_once(clock: FakeClock) -> None:
    # Given an account that locks after two failures
    tallies = Tallies()
    policy = AuthPolicy(lockout=LockoutPolicy(max_failures=2))
    app = new_app(clock, policy, meter=tallies)
    app.register(EMAIL, PASSWORD, CLIENT)
    app.login(EMAIL, PASSWORD, CLIENT)

    # When two wrong passwords lock it, and then the right one is tried
    for password in (WRONG_PASSWORD, WRONG_PASSWORD, PASSWORD):
        with pytest.raises(InvalidCredentialsError) as refused:
            app.login(EMAIL, password, CLIENT)
        assert type(refused.value) is InvalidCredentialsError  # what callers see

    # Then
    assert tallies.seen == {
        (Tally.SIGNUP, "success"): 1,
        (Tally.LOGIN, "success"): 1,
        (Tally.LOGIN, "invalid_credentials"): 2,
        (Tally.LOCKOUT, ""): 1,
        (Tally.LOGIN, "locked"): 1,
    }


def test_a_blocked_address_and_a_taken_email_are_counted_as_such(
    clock: FakeClock,
) -> None:
    tallies = Tallies()
    app = new_app(
        clock, AuthPolicy(throttle=ThrottlePolicy(max_attempts=1)), meter=tallies
    )
    app.register(EMAIL, PASSWORD, CLIENT)
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, PASSWORD, CLIENT)
    with pytest.raises(InvalidCredentialsError):
        app.login("nobody@example.com", PASSWORD, CLIENT)

    with pytest.raises(TooManyAttemptsError):
        app.login(EMAIL, PASSWORD, CLIENT)

    assert tallies.seen[Tally.SIGNUP, "email_taken"] == 1
    assert tallies.seen[Tally.LOGIN, "throttled"] == 1


def test_a_replayed_refresh_token_is_one_reuse_detection(clock: FakeClock) -> None:
    # Given a session whose first refresh token was rotated
    tallies = Tallies()
    strict = AuthPolicy(refresh=RefreshPolicy(reuse_interval=timedelta(0)))
    app = new_app(clock, strict, meter=tallies)
    first = app.register(EMAIL, PASSWORD, CLIENT).refresh_token
    app.refresh(first, CLIENT)

    # When the retired token is presented, twice
    for _ in range(2):
        with pytest.raises(InvalidRefreshTokenError) as refused:
            app.refresh(first, CLIENT)
        assert type(refused.value) is InvalidRefreshTokenError

    # Then the first revoked the session as a reuse; the second found it revoked
    assert tallies.seen[Tally.REFRESH, "success"] == 1
    assert tallies.seen[Tally.REFRESH, "reused"] == 1
    assert tallies.seen[Tally.REFRESH, "invalid"] == 1
    assert tallies.seen[Tally.TOKEN_REUSE, ""] == 1


def test_a_password_change_is_counted_once_done(clock: FakeClock) -> None:
    tallies = Tallies()
    app = new_app(clock, meter=tallies)
    grant = app.register(EMAIL, PASSWORD, CLIENT)

    app.change_password(grant.user_id, PASSWORD, "a brand new passphrase", CLIENT)

    assert tallies.seen[Tally.PASSWORD_CHANGE, "change"] == 1


def test_the_answer_to_a_retried_login_is_counted_as_replayed(
    clock: FakeClock,
) -> None:
    tallies = Tallies()
    app = new_app(clock, meter=tallies)
    app.register(EMAIL, PASSWORD, CLIENT)
    keyed = replace(CLIENT, retry_key="a0f1b2c3-retry-key")
    first = app.login(EMAIL, PASSWORD, keyed)

    again = app.login(EMAIL, PASSWORD, keyed)

    assert again.session_id == first.session_id
    assert tallies.seen[Tally.LOGIN, "success"] == 1
    assert tallies.seen[Tally.LOGIN, "replayed"] == 1
