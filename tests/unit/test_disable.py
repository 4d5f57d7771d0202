"""Disabling an account: given a user with sessions, when an admin disables or
enables it, then these events, these refusals."""

from __future__ import annotations

import pytest

from application.auth import AuthApplication
from application.errors import InvalidCredentialsError
from application.values import AccountChanges, AuthPolicy, Client
from domain.admin_roster import AdminRoster
from domain.errors import LastAdminError
from domain.session import Session
from domain.user import LockoutPolicy, User
from domain.values import Role
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    PASSWORD,
    FakeClock,
    last,
    names,
    new_app,
    of_type,
    position,
    refresh_fails,
    registered,
    stored_since,
)

ADMIN_CLIENT = Client("203.0.113.9", "pytest-admin")


def admin_of(app: AuthApplication, email: str = "root@example.com") -> User:
    grant = app.register(email, PASSWORD, ADMIN_CLIENT, role=Role.ADMIN)
    return app.get_user(grant.user_id)


def test_disabling_ends_every_session_in_one_save_naming_the_admin(
    app: AuthApplication,
) -> None:
    # Given a user with two sessions, and an admin
    first = registered(app)
    second = app.login(EMAIL, PASSWORD, CLIENT)
    admin = admin_of(app)
    before = position(app)

    # When the admin disables the account
    app.set_disabled(first.user_id, True, admin.id, ADMIN_CLIENT)

    # Then one save records who disabled it and ends every session
    saved = stored_since(app, before)
    assert names(saved) == ["User.Disabled", "User.SessionsRevoked"]
    assert last(saved, User.Disabled).disabled_by == admin.id
    assert last(saved, User.SessionsRevoked).reason == "disabled"
    assert last(saved, User.SessionsRevoked).ip == ADMIN_CLIENT.ip
    # And neither session refreshes any more
    assert refresh_fails(app, first.refresh_token)
    assert refresh_fails(app, second.refresh_token)
    assert app.get_user(first.user_id).is_disabled


def test_a_disabled_account_is_refused_like_a_wrong_password_and_not_locked(
    clock: FakeClock,
) -> None:
    # Given a disabled account that would lock after two failures
    app = new_app(clock, AuthPolicy(lockout=LockoutPolicy(max_failures=2)))
    user_id = registered(app).user_id
    app.set_disabled(user_id, True, None, ADMIN_CLIENT)
    before = position(app)

    # When its right password is tried three times, and a wrong one once
    refusals = set()
    for password in (PASSWORD, PASSWORD, PASSWORD, "wrong horse battery staple"):
        with pytest.raises(InvalidCredentialsError) as refused:
            app.login(EMAIL, password, CLIENT)
        refusals.add((type(refused.value), str(refused.value)))

    # Then every refusal is the generic one, recorded as disabled, and no
    # session opens; nor does the account lock (it is not counted)
    assert len(refusals) == 1
    events = stored_since(app, before)
    assert {f.reason for f in of_type(events, User.LoginFailed)} == {"disabled"}
    assert not of_type(events, Session.Opened)
    assert not of_type(events, User.LockedOut)


def test_enabling_lets_the_account_log_in_again_and_keeps_old_sessions_ended(
    app: AuthApplication,
) -> None:
    grant = registered(app)
    admin = admin_of(app)
    app.set_disabled(grant.user_id, True, admin.id, ADMIN_CLIENT)
    before = position(app)

    app.set_disabled(grant.user_id, False, admin.id, ADMIN_CLIENT)

    saved = stored_since(app, before)
    assert names(saved) == ["User.Enabled"]
    assert last(saved, User.Enabled).enabled_by == admin.id
    assert refresh_fails(app, grant.refresh_token)
    assert not refresh_fails(app, app.login(EMAIL, PASSWORD, CLIENT).refresh_token)


def test_disabling_or_enabling_twice_stores_nothing_the_second_time(
    app: AuthApplication,
) -> None:
    user_id = registered(app).user_id
    for disabled in (True, False):
        app.set_disabled(user_id, disabled, None, ADMIN_CLIENT)
        before = position(app)

        app.set_disabled(user_id, disabled, None, ADMIN_CLIENT)

        assert position(app) == before


def test_the_last_admin_cannot_be_disabled_and_nothing_is_stored(
    app: AuthApplication,
) -> None:
    admin = admin_of(app)
    before = position(app)

    with pytest.raises(LastAdminError):
        app.set_disabled(admin.id, True, admin.id, ADMIN_CLIENT)

    assert position(app) == before
    assert not app.get_user(admin.id).is_disabled


def test_a_disabled_admin_leaves_the_roster_and_does_not_count_as_one(
    app: AuthApplication,
) -> None:
    # Given two admins, one of them disabled
    first = admin_of(app)
    second = admin_of(app, "second@example.com")
    app.set_disabled(second.id, True, first.id, ADMIN_CLIENT)
    assert app.admin_roster(app.clock()).admins == [first.id]

    # When the disabled one is given the admin role again, the remaining admin
    # still cannot be demoted: a disabled admin holds no seat
    app.change_role(second.id, Role.ADMIN, changed_by=first.id)
    with pytest.raises(LastAdminError):
        app.change_role(first.id, Role.USER, changed_by=first.id)

    # And once enabled, it is back on the roster
    app.set_disabled(second.id, False, first.id, ADMIN_CLIENT)
    roster: AdminRoster = app.repository.get(AdminRoster.create_id())
    assert roster.admins == [first.id, second.id]


def test_the_last_admin_restored_from_a_snapshot_still_cannot_be_disabled_or_erased(
    app: AuthApplication,
) -> None:
    # Given the only admin, with enough events for its stream to be snapshotted
    # (a snapshot restores the role as a plain string)
    admin = admin_of(app)
    for _ in range(50):  # the store snapshots users every 50 events
        app.login("root@example.com", PASSWORD, ADMIN_CLIENT)
    assert app.snapshots is not None
    assert list(app.snapshots.get(admin.id))
    before = position(app)

    # When it is disabled or erased, then both are refused and nothing is stored
    with pytest.raises(LastAdminError):
        app.set_disabled(admin.id, True, admin.id, ADMIN_CLIENT)
    with pytest.raises(LastAdminError):
        app.erase(admin.id, admin.id, ADMIN_CLIENT)
    assert position(app) == before


def test_an_admins_changes_to_an_account_are_stored_together(
    app: AuthApplication,
) -> None:
    # Given a user with a session and a failed login, and an admin
    grant = registered(app)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, "not the password", CLIENT)
    admin = admin_of(app)
    before = position(app)

    # When the admin makes it an admin, lifts its failures and disables it
    changes = AccountChanges(role=Role.ADMIN, unlock=True, disabled=True)
    app.administer(grant.user_id, changes, admin.id, ADMIN_CLIENT)

    # Then the user's events record all three, each naming the admin; as a
    # disabled admin it does not join the roster
    saved = stored_since(app, before)
    assert names(saved) == [
        "User.RoleChanged",
        "User.Unlocked",
        "User.Disabled",
        "User.SessionsRevoked",
    ]
    assert last(saved, User.RoleChanged).changed_by == admin.id
    assert last(saved, User.Unlocked).unlocked_by == admin.id
    assert app.admin_roster(app.clock()).admins == [admin.id]


def test_changes_one_of_which_is_refused_store_none_of_them(
    app: AuthApplication,
) -> None:
    # Given the only admin, with a failed login counted against it
    admin = admin_of(app)
    with pytest.raises(InvalidCredentialsError):
        app.login("root@example.com", "not the password", CLIENT)
    before = position(app)

    # When it is asked to lift its failures and to step down at once
    changes = AccountChanges(role=Role.USER, unlock=True)
    with pytest.raises(LastAdminError):
        app.administer(admin.id, changes, admin.id, ADMIN_CLIENT)

    # Then nothing is stored: its failures stand, and it is still the admin
    assert position(app) == before
    assert app.get_user(admin.id).failed_logins == 1
    assert app.admin_roster(app.clock()).admins == [admin.id]
