"""Brute-force lockout on a real PostgreSQL: the lock, its audit trail, its expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.errors import InvalidCredentialsError
from interfaces.bootstrap import Services
from tests.integration.helpers import (
    CLIENT,
    CLIENT_IP,
    CLIENT_UA,
    FakeClock,
    MakeServices,
    states_with_topic,
    wait_for_read_models,
)

EMAIL = "mallory@example.com"
PASSWORD = "the right password"
MAX_FAILURES = 3
FIRST_LOCK = timedelta(seconds=60)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def strict(make_services: MakeServices, clock: FakeClock) -> Services:
    """Services that lock an account after three wrong passwords, on a test clock."""
    services = make_services(
        lockout_max_failures=MAX_FAILURES,
        lockout_first_s=int(FIRST_LOCK.total_seconds()),
    )
    services.app.clock = clock
    return services


def fail(services: Services, email: str, password: str) -> InvalidCredentialsError:
    with pytest.raises(InvalidCredentialsError) as refused:
        services.app.login(email, password, CLIENT)
    return refused.value


def test_three_wrong_passwords_lock_the_account_even_against_the_right_one(
    strict: Services, clock: FakeClock
) -> None:
    # Given
    user_id = strict.app.register(EMAIL, PASSWORD, CLIENT).user_id
    locked_at = clock.now

    # When
    wrong = [fail(strict, EMAIL, f"guess {i}") for i in range(MAX_FAILURES)]
    right = fail(strict, EMAIL, PASSWORD)

    # Then the right password is refused exactly like a wrong one
    assert type(right) is type(wrong[0])
    assert right.args == wrong[0].args == ()
    assert str(right) == str(wrong[0])
    # And, once the projections caught up, the directory shows the lock
    wait_for_read_models(strict)
    row = strict.users.get_user(user_id)
    assert row is not None
    assert row.locked_until == locked_at + FIRST_LOCK
    assert row.failed_logins == 0
    # And the history shows every failure and the lockout
    history = strict.history.history(user_id, 100, 0)
    assert [(h.kind, h.detail) for h in history][2:] == [
        ("login_failed", "bad_password"),
        ("login_failed", "bad_password"),
        ("login_failed", "bad_password"),
        ("locked_out", f"until {(locked_at + FIRST_LOCK).isoformat()}"),
        ("login_failed", "locked"),
    ]
    assert [h.kind for h in history][:2] == ["registered", "session_opened"]
    failures = [h for h in history if h.kind == "login_failed"]
    assert {(h.ip, h.user_agent) for h in failures} == {(CLIENT_IP, CLIENT_UA)}
    assert [h.position for h in history] == sorted(h.position for h in history)


def test_an_unknown_email_is_refused_with_the_same_error(strict: Services) -> None:
    # Given
    strict.app.register(EMAIL, PASSWORD, CLIENT)

    # When
    unknown = fail(strict, "nobody@example.com", PASSWORD)
    wrong = fail(strict, EMAIL, "not it")

    # Then
    assert type(unknown) is type(wrong)
    assert str(unknown) == str(wrong)


def test_once_the_lock_runs_out_the_right_password_logs_in_again(
    strict: Services, clock: FakeClock
) -> None:
    # Given a locked account
    user_id = strict.app.register(EMAIL, PASSWORD, CLIENT).user_id
    for i in range(MAX_FAILURES):
        fail(strict, EMAIL, f"guess {i}")
    clock.advance(FIRST_LOCK - timedelta(seconds=1))
    fail(strict, EMAIL, PASSWORD)  # one second early

    # When
    clock.advance(timedelta(seconds=2))
    grant = strict.app.login(EMAIL, PASSWORD, CLIENT)

    # Then
    assert grant.user_id == user_id
    unlocked = states_with_topic(strict, "authledger:User.Unlocked")
    assert [u["unlocked_by"] for u in unlocked] == [None]
    row = strict.users.get_user(user_id)
    assert row is not None
    assert row.locked_until is None
    assert row.failed_logins == 0
    wait_for_read_models(strict)
    kinds = [(h.kind, h.detail) for h in strict.history.history(user_id, 100, 0)]
    assert kinds[-3:-1] == [("login_failed", "locked"), ("unlocked", "expired")]
    assert kinds[-1][0] == "session_opened"


def test_a_second_lockout_lasts_twice_as_long(
    strict: Services, clock: FakeClock
) -> None:
    # Given an account that was locked once and whose lock ran out
    user_id = strict.app.register(EMAIL, PASSWORD, CLIENT).user_id
    for i in range(MAX_FAILURES):
        fail(strict, EMAIL, f"guess {i}")
    clock.advance(FIRST_LOCK + timedelta(seconds=1))
    strict.app.login(EMAIL, PASSWORD, CLIENT)

    # When it is locked again
    for i in range(MAX_FAILURES):
        fail(strict, EMAIL, f"again {i}")

    # Then
    wait_for_read_models(strict)
    row = strict.users.get_user(user_id)
    assert row is not None
    assert row.locked_until == clock.now + 2 * FIRST_LOCK
    clock.advance(FIRST_LOCK + timedelta(seconds=1))
    fail(strict, EMAIL, PASSWORD)
    clock.advance(FIRST_LOCK)
    assert strict.app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id


def test_an_unlock_by_hand_lifts_the_lock_at_once(strict: Services) -> None:
    # Given
    admin = strict.app.register("admin@example.com", "admin password", CLIENT)
    user_id = strict.app.register(EMAIL, PASSWORD, CLIENT).user_id
    for i in range(MAX_FAILURES):
        fail(strict, EMAIL, f"guess {i}")

    # When
    strict.app.unlock(user_id, admin.user_id)

    # Then
    assert strict.app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id
    unlocked = states_with_topic(strict, "authledger:User.Unlocked")
    assert [u["unlocked_by"] for u in unlocked] == [admin.user_id]
    row = strict.users.get_user(user_id)
    assert row is not None
    assert row.locked_until is None


def test_a_wrong_password_after_the_lock_ran_out_records_that_the_lock_ended(
    strict: Services, clock: FakeClock
) -> None:
    # Given an account whose lock has run out
    user_id = strict.app.register(EMAIL, PASSWORD, CLIENT).user_id
    for i in range(MAX_FAILURES):
        fail(strict, EMAIL, f"guess {i}")
    clock.advance(FIRST_LOCK + timedelta(seconds=1))

    # When the next attempt is a wrong password
    fail(strict, EMAIL, "still guessing")

    # Then the timeline shows the lock ending before the new failure
    wait_for_read_models(strict)
    kinds = [h.kind for h in strict.history.history(user_id, 100, 0)]
    assert kinds[-3:] == ["locked_out", "unlocked", "login_failed"]
    row = strict.users.get_user(user_id)
    assert row is not None
    assert row.locked_until is None
