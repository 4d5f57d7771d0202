"""The last admin keeps the role: given the roster, when a role changes, then."""

from __future__ import annotations

import pytest

from application.auth import AuthApplication
from application.upgrades import start_admin_roster
from application.values import Client
from domain.admin_roster import AdminRoster
from domain.errors import LastAdminError
from domain.user import User
from domain.values import Role
from tests.unit.test_use_cases import (
    CLIENT,
    PASSWORD,
    FakeClock,
    names,
    new_app,
    position,
    stored_since,
    stream,
)


@pytest.fixture
def app(clock: FakeClock) -> AuthApplication:
    return new_app(clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def admin(app: AuthApplication, email: str) -> AdminRoster:
    app.register(email, PASSWORD, Client(), role=Role.ADMIN)
    roster: AdminRoster = app.repository.get(AdminRoster.create_id())
    return roster


def test_an_admin_created_is_put_on_the_roster_in_the_same_save(
    app: AuthApplication,
) -> None:
    before = position(app)

    roster = admin(app, "root@example.com")

    saved = names(stored_since(app, before))
    assert saved[-2:] == ["AdminRoster.Started", "AdminRoster.Appointed"]
    assert len(roster.admins) == 1


def test_the_last_admin_cannot_be_demoted_and_nothing_is_stored(
    app: AuthApplication,
) -> None:
    roster = admin(app, "root@example.com")
    only = roster.admins[0]
    before = position(app)

    with pytest.raises(LastAdminError):
        app.change_role(only, Role.USER, changed_by=only)

    assert position(app) == before
    assert app.get_user(only).role == Role.ADMIN


def test_an_admin_demoted_while_another_remains_leaves_the_roster(
    app: AuthApplication,
) -> None:
    admin(app, "root@example.com")
    roster = admin(app, "second@example.com")
    first, second = roster.admins

    app.change_role(second, Role.USER, changed_by=first)

    assert names(stream(app, AdminRoster.create_id()))[-1] == "AdminRoster.Dismissed"
    assert app.admin_roster(app.clock()).admins == [first]
    assert app.get_user(second).role == Role.USER
    with pytest.raises(LastAdminError):
        app.change_role(first, Role.USER, changed_by=first)


def test_a_user_promoted_joins_the_roster_and_users_change_freely(
    app: AuthApplication,
) -> None:
    roster = admin(app, "root@example.com")
    user = app.register("ada@example.com", PASSWORD, CLIENT).user_id

    app.change_role(user, Role.ADMIN, changed_by=roster.admins[0])
    app.change_role(roster.admins[0], Role.USER, changed_by=user)

    assert app.admin_roster(app.clock()).admins == [user]


def test_the_roster_starts_from_the_roles_in_the_log_once(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given: a store from before the roster, with roles changed both ways
    first = User.register("a@example.com", "hash", Role.ADMIN, clock.now)
    second = User.register("b@example.com", "hash", Role.USER, clock.now)
    third = User.register("c@example.com", "hash", Role.ADMIN, clock.now)
    app.save(first, second, third)
    second.change_role(Role.ADMIN, first.id, clock.now)
    third.change_role(Role.USER, first.id, clock.now)
    app.save(second, third)

    # When: the upgrade runs, twice
    started = start_admin_roster(app)
    again = start_admin_roster(app)

    # Then: the roster holds the admins of now, in log order, started once
    roster = app.admin_roster(app.clock())
    assert (started, again) == (2, 0)
    assert roster.admins == [first.id, second.id]
    assert names(stream(app, AdminRoster.create_id())) == ["AdminRoster.Started"]
