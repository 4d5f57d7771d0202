"""Unit tests for the User aggregate: registration, credentials, role and lockout."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import uuid4

import pytest

from domain.user import LockoutPolicy, User
from domain.values import Role
from tests.unit.helpers import T0, only

POLICY = LockoutPolicy(
    max_failures=5,
    window=timedelta(minutes=15),
    first_lock=timedelta(minutes=1),
    longest_lock=timedelta(minutes=4),
)
IP = "203.0.113.7"
UA = "pytest"


def registered_user() -> User:
    user = User.register("alice@example.com", "hash-0", Role.USER, T0)
    user.collect_events()
    return user


def fail_logins(user: User, count: int, start: datetime) -> datetime:
    """Record `count` wrong passwords one second apart; return the next free second."""
    for i in range(count):
        user.record_failed_login(IP, UA, POLICY, start + timedelta(seconds=i))
    return start + timedelta(seconds=count)


def lock_out(user: User, start: datetime) -> datetime:
    """Fail enough logins to lock the account; return the moment it was locked."""
    return fail_logins(user, POLICY.max_failures, start) - timedelta(seconds=1)


def test_registration_records_email_password_hash_and_role() -> None:
    # Given
    email, password_hash = "alice@example.com", "hash-0"

    # When
    user = User.register(email, password_hash, Role.ADMIN, T0)

    # Then
    registered = only(user.collect_events(), User.Registered)
    assert registered.originator_id == user.id
    assert registered.timestamp == T0
    assert registered.email == email
    assert registered.password_hash == password_hash
    assert registered.role == "ADMIN"


def test_verifying_the_email_emits_email_verified() -> None:
    # Given
    user = registered_user()

    # When
    user.verify_email(T0 + timedelta(hours=1))

    # Then
    verified = only(user.collect_events(), User.EmailVerified)
    assert verified.timestamp == T0 + timedelta(hours=1)


def test_verifying_an_already_verified_email_emits_nothing() -> None:
    # Given
    user = registered_user()
    user.verify_email(T0 + timedelta(hours=1))
    user.collect_events()

    # When
    user.verify_email(T0 + timedelta(hours=2))

    # Then
    assert user.collect_events() == []


def test_changing_the_password_records_the_new_hash() -> None:
    # Given
    user = registered_user()

    # When
    user.change_password("hash-1", T0 + timedelta(days=1))

    # Then
    changed = only(user.collect_events(), User.PasswordChanged)
    assert changed.password_hash == "hash-1"
    assert changed.timestamp == T0 + timedelta(days=1)


def test_changing_the_role_records_the_new_role_and_who_changed_it() -> None:
    # Given
    user = registered_user()
    admin_id = uuid4()

    # When
    user.change_role(Role.ADMIN, admin_id, T0 + timedelta(days=1))

    # Then
    changed = only(user.collect_events(), User.RoleChanged)
    assert changed.role == "ADMIN"
    assert changed.changed_by == admin_id


def test_changing_the_role_to_the_current_role_emits_nothing() -> None:
    # Given
    user = registered_user()

    # When
    user.change_role(Role.USER, uuid4(), T0 + timedelta(days=1))

    # Then
    assert user.collect_events() == []


def test_counts_failed_logins_within_the_window() -> None:
    # Given: two failures, the first at T0
    user = registered_user()
    fail_logins(user, 2, T0)
    user.collect_events()

    # When: a third, just inside the 15-minute window
    now = T0 + timedelta(minutes=14, seconds=59)
    user.record_failed_login(IP, UA, POLICY, now)

    # Then
    failed = only(user.collect_events(), User.LoginFailed)
    assert failed.failures_in_window == 3
    assert failed.reason == "bad_password"
    assert failed.ip == IP
    assert failed.user_agent == UA
    assert failed.timestamp == now


def test_restarts_the_failure_count_after_the_window() -> None:
    # Given: four failures, the first at T0
    user = registered_user()
    fail_logins(user, 4, T0)
    user.collect_events()

    # When: a fifth, after the window that began at T0
    user.record_failed_login(IP, UA, POLICY, T0 + timedelta(minutes=16))

    # Then: it starts a new count and does not lock
    failed = only(user.collect_events(), User.LoginFailed)
    assert failed.failures_in_window == 1


def test_a_restarted_window_counts_from_its_own_first_failure() -> None:
    # Given: two failures at T0, then a new window opened at T0 + 16 min
    user = registered_user()
    fail_logins(user, 2, T0)
    fail_logins(user, 1, T0 + timedelta(minutes=16))
    user.collect_events()

    # When: a failure inside the new window but outside the old one
    user.record_failed_login(IP, UA, POLICY, T0 + timedelta(minutes=20))

    # Then
    failed = only(user.collect_events(), User.LoginFailed)
    assert failed.failures_in_window == 2


def test_locks_account_after_five_failed_logins_for_the_first_lock_period() -> None:
    # Given
    user = registered_user()
    now = fail_logins(user, 4, T0)
    user.collect_events()

    # When
    user.record_failed_login(IP, UA, POLICY, now)

    # Then
    failed, locked = user.collect_events()
    assert isinstance(failed, User.LoginFailed)
    assert failed.failures_in_window == 5
    assert failed.reason == "bad_password"
    assert isinstance(locked, User.LockedOut)
    assert locked.until == now + POLICY.first_lock
    assert locked.timestamp == now


@pytest.mark.parametrize(
    ("earlier_lockouts", "expected"),
    [
        (0, timedelta(minutes=1)),
        (1, timedelta(minutes=2)),
        (2, timedelta(minutes=4)),
        (3, timedelta(minutes=4)),
        (10**6, timedelta(minutes=4)),
    ],
)
def test_lock_period_doubles_per_earlier_lockout_up_to_the_longest_lock(
    earlier_lockouts: int, expected: timedelta
) -> None:
    # Given: POLICY, first lock 1 minute, longest 4 minutes

    # When
    period = POLICY.lock_period(earlier_lockouts)

    # Then
    assert period == expected


def test_doubles_the_lock_period_on_the_second_lockout() -> None:
    # Given: a first lockout that has run out and been released
    user = registered_user()
    locked_at = lock_out(user, T0)
    released_at = locked_at + POLICY.first_lock
    user.release_expired_lock(released_at)
    now = fail_logins(user, 4, released_at)
    user.collect_events()

    # When
    user.record_failed_login(IP, UA, POLICY, now)

    # Then
    _, locked = user.collect_events()
    assert isinstance(locked, User.LockedOut)
    assert locked.until == now + 2 * POLICY.first_lock


def test_caps_the_lock_period_at_the_longest_lock() -> None:
    # Given: three lockouts (1, 2 and 4 minutes), each run out
    user = registered_user()
    start = T0
    for _ in range(3):
        lock_out(user, start)
        start += timedelta(hours=1)
    now = fail_logins(user, 4, start)
    user.collect_events()

    # When: the fourth lockout, which would double to 8 minutes
    user.record_failed_login(IP, UA, POLICY, now)

    # Then
    _, locked = user.collect_events()
    assert isinstance(locked, User.LockedOut)
    assert locked.until == now + POLICY.longest_lock


def test_attempts_while_locked_are_recorded_as_locked_and_do_not_extend_it() -> None:
    # Given: a locked account that has already had five attempts refused
    user = registered_user()
    locked_at = lock_out(user, T0)
    fail_logins(user, 5, locked_at + timedelta(seconds=1))
    user.collect_events()

    # When
    user.record_failed_login(IP, UA, POLICY, locked_at + timedelta(seconds=30))

    # Then: recorded, not counted, and the lock still ends when it did
    failed = only(user.collect_events(), User.LoginFailed)
    assert failed.reason == "locked"
    assert failed.failures_in_window == 0
    assert user.locked_until == locked_at + POLICY.first_lock


def test_the_account_is_locked_until_the_lock_runs_out() -> None:
    # Given
    user = registered_user()
    locked_at = lock_out(user, T0)
    user.collect_events()

    # When / Then
    assert user.is_locked(locked_at + POLICY.first_lock - timedelta(seconds=1))
    assert not user.is_locked(locked_at + POLICY.first_lock)
    assert user.collect_events() == []


def test_release_expired_lock_emits_nothing_while_the_lock_is_running() -> None:
    # Given
    user = registered_user()
    locked_at = lock_out(user, T0)
    user.collect_events()

    # When
    user.release_expired_lock(locked_at + POLICY.first_lock - timedelta(seconds=1))

    # Then
    assert user.collect_events() == []


def test_release_expired_lock_emits_nothing_when_the_account_was_never_locked() -> None:
    # Given
    user = registered_user()
    fail_logins(user, 2, T0)
    user.collect_events()

    # When
    user.release_expired_lock(T0 + timedelta(hours=1))

    # Then
    assert user.collect_events() == []


def test_release_expired_lock_emits_unlocked_by_nobody_after_expiry() -> None:
    # Given
    user = registered_user()
    locked_at = lock_out(user, T0)
    user.collect_events()

    # When
    user.release_expired_lock(locked_at + POLICY.first_lock)

    # Then
    unlocked = only(user.collect_events(), User.Unlocked)
    assert unlocked.unlocked_by is None
    assert unlocked.timestamp == locked_at + POLICY.first_lock


def test_release_expired_lock_emits_unlocked_only_once() -> None:
    # Given
    user = registered_user()
    locked_at = lock_out(user, T0)
    user.release_expired_lock(locked_at + POLICY.first_lock)
    user.collect_events()

    # When
    user.release_expired_lock(locked_at + timedelta(hours=1))

    # Then
    assert user.collect_events() == []


def test_admin_unlock_emits_unlocked_with_the_admin_id() -> None:
    # Given
    user = registered_user()
    locked_at = lock_out(user, T0)
    user.collect_events()
    admin_id = uuid4()

    # When
    user.unlock(admin_id, locked_at + timedelta(seconds=10))

    # Then
    unlocked = only(user.collect_events(), User.Unlocked)
    assert unlocked.unlocked_by == admin_id
    assert not user.is_locked(locked_at + timedelta(seconds=10))


def test_admin_unlock_resets_the_lock_period_to_the_first_lock() -> None:
    # Given: two lockouts, the second lifted by an admin
    user = registered_user()
    lock_out(user, T0)
    locked_at = lock_out(user, T0 + timedelta(hours=1))
    user.unlock(uuid4(), locked_at + timedelta(seconds=10))
    now = fail_logins(user, 4, locked_at + timedelta(minutes=1))
    user.collect_events()

    # When
    user.record_failed_login(IP, UA, POLICY, now)

    # Then
    _, locked = user.collect_events()
    assert isinstance(locked, User.LockedOut)
    assert locked.until == now + POLICY.first_lock


def test_admin_unlock_clears_the_failures_counted_so_far() -> None:
    # Given: four failures, then an admin unlock
    user = registered_user()
    now = fail_logins(user, 4, T0)
    user.unlock(uuid4(), now)
    user.collect_events()

    # When
    user.record_failed_login(IP, UA, POLICY, now + timedelta(seconds=1))

    # Then
    failed = only(user.collect_events(), User.LoginFailed)
    assert failed.failures_in_window == 1


def test_admin_unlock_of_an_account_without_failures_emits_nothing() -> None:
    # Given
    user = registered_user()

    # When
    user.unlock(uuid4(), T0 + timedelta(minutes=1))

    # Then
    assert user.collect_events() == []
