"""Erasing an account: given a user with sessions, when it is erased, then
these events; and its address signs up again as a new account."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from application.account_mail import AccountMail
from application.auth import AuthApplication
from application.errors import (
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    WrongPasswordError,
)
from application.upgrades import fold_email_claims, key_email_claims
from domain.email_claim import EmailClaim
from domain.errors import LastAdminError
from domain.reset_asks import ResetAsks
from domain.user import User
from domain.values import Role
from infrastructure.passwords import BcryptPasswordHasher
from tests.unit.test_disable import ADMIN_CLIENT, admin_of
from tests.unit.test_identities import legacy_account
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    PASSWORD,
    WRONG_PASSWORD,
    FakeClock,
    last,
    login_refusal,
    names,
    new_app,
    of_type,
    position,
    refresh_fails,
    registered,
    stored_since,
    stream,
)


def test_erasing_ends_the_sessions_and_releases_the_address_in_one_save(
    app: AuthApplication,
) -> None:
    # Given a user with two sessions, and an admin
    first = registered(app)
    second = app.login(EMAIL, PASSWORD, CLIENT)
    admin = admin_of(app)
    before = position(app)

    # When the admin erases the account
    app.erase(first.user_id, admin.id, ADMIN_CLIENT)

    # Then one save ends its sessions, releases its address and records the
    # erasure, naming the admin
    saved = stored_since(app, before)
    assert sorted(names(saved)) == [
        "EmailClaim.Released",
        "User.Erased",
        "User.SessionsRevoked",
    ]
    assert last(saved, User.Erased).erased_by == admin.id
    assert last(saved, User.SessionsRevoked).reason == "erased"
    assert last(saved, EmailClaim.Released).originator_id == app.claim_id(EMAIL)
    assert refresh_fails(app, first.refresh_token)
    assert refresh_fails(app, second.refresh_token)
    # And the address is no account's any more: its login is the generic refusal
    assert app.find_user_by_email(EMAIL) is None
    assert login_refusal(app, EMAIL, PASSWORD) == login_refusal(
        app, "nobody@example.com", PASSWORD
    )


def test_the_address_signs_up_again_as_a_new_account(app: AuthApplication) -> None:
    # Given an erased account
    old = registered(app)
    app.erase(old.user_id, None, ADMIN_CLIENT)
    old_events = len(stream(app, old.user_id))
    before = position(app)

    # When its address signs up again
    new = registered(app)

    # Then a new account holds it, claimed in a stream of its own (the next
    # generation's); neither the old account's stream nor its claim's gains
    # anything, and nothing new names the old account
    assert new.user_id != old.user_id
    saved = stored_since(app, before)
    claimed = last(saved, EmailClaim.Claimed)
    assert (claimed.originator_id, claimed.user_id) == (
        app.claim_id(EMAIL, 1),
        new.user_id,
    )
    old_claim = app.claim_id(EMAIL)
    assert not [e for e in saved if e.originator_id in (old.user_id, old_claim)]
    assert not [e for e in saved if old.user_id in vars(e).values()]
    assert len(stream(app, old.user_id)) == old_events
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == new.user_id
    # And the address is taken again
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, PASSWORD, CLIENT)


def test_erasing_ones_own_account_needs_its_password(app: AuthApplication) -> None:
    grant = registered(app)
    before = position(app)

    with pytest.raises(WrongPasswordError):
        app.erase_own(grant.user_id, WRONG_PASSWORD, CLIENT)

    # A wrong password counts toward the lock, and erases nothing
    saved = stored_since(app, before)
    assert [f.reason for f in of_type(saved, User.LoginFailed)] == ["bad_password"]
    assert not of_type(saved, User.Erased)
    app.erase_own(grant.user_id, PASSWORD, CLIENT)
    assert last(stream(app, grant.user_id), User.Erased).erased_by == grant.user_id
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)


def test_erasing_twice_stores_nothing_the_second_time(app: AuthApplication) -> None:
    user_id = registered(app).user_id
    app.erase(user_id, None, ADMIN_CLIENT)
    before = position(app)

    app.erase(user_id, None, ADMIN_CLIENT)

    assert position(app) == before


def test_the_last_admin_cannot_be_erased_and_another_admin_leaves_the_roster(
    app: AuthApplication,
) -> None:
    first = admin_of(app)
    before = position(app)
    with pytest.raises(LastAdminError):
        app.erase(first.id, first.id, ADMIN_CLIENT)
    assert position(app) == before

    second = admin_of(app, "second@example.com")
    app.erase(second.id, first.id, ADMIN_CLIENT)

    assert app.admin_roster(app.clock()).admins == [first.id]
    erased: User = app.repository.get(second.id)
    assert erased.role is Role.ADMIN  # its events stay as they were


def test_a_reset_asked_before_the_erasure_is_dispatched_as_for_no_account(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given a reset asked for an account, then the account erased
    user_id = registered(app).user_id
    mail.forgot_password(EMAIL, CLIENT)
    app.erase(user_id, None, ADMIN_CLIENT)
    before = position(app)

    # When the asks are dispatched, then the ask is marked dispatched and no
    # reset is requested on the erased account
    mail.dispatch_resets(0)

    saved = stored_since(app, before)
    assert names(saved) == ["ResetAsks.Dispatched"]
    assert not [e for e in saved if e.originator_id == user_id]


def test_no_stream_of_the_address_names_both_its_erased_and_its_next_account(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given an account whose address asked for a reset link, then erased
    old = registered(app).user_id
    mail.forgot_password(EMAIL, CLIENT)
    app.erase(old, None, ADMIN_CLIENT)
    clock.advance(timedelta(hours=1))  # past the asks' cooldown

    # When a login is tried on the address, it signs up again, and asks for a
    # reset link again
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)
    new = registered(app).user_id
    mail.forgot_password(EMAIL, CLIENT)

    # Then no stream holds events that name both accounts: the address's
    # streams begin anew with its next era
    named: dict[UUID, set[UUID]] = {}
    for event in stored_since(app, 0):
        for value in vars(event).values():
            if value in (old, new):
                named.setdefault(event.originator_id, set()).add(value)
    assert not [stream for stream, both in named.items() if both == {old, new}]
    asks = of_type(stored_since(app, 0), ResetAsks.Asked)
    assert [a.user_id for a in asks] == [old, new]
    assert asks[0].originator_id != asks[1].originator_id


class ErasingHasher(BcryptPasswordHasher):
    """The real hasher, which erases an account while its password is checked:
    a login racing an erasure."""

    def __init__(self) -> None:
        super().__init__(b"unit-test-pepper", rounds=4)
        self.app: AuthApplication | None = None
        self.target: UUID | None = None

    def verify(self, password: str, password_hash: str) -> bool:
        matches = super().verify(password, password_hash)
        if self.app is not None and self.target is not None:
            target, self.target = self.target, None
            self.app.erase(target, None, ADMIN_CLIENT)
        return matches


@pytest.mark.parametrize("password", [PASSWORD, WRONG_PASSWORD], ids=["right", "wrong"])
def test_a_login_racing_an_erasure_is_refused_as_for_no_account(
    clock: FakeClock, password: str
) -> None:
    # Given an account erased while a login checks its password
    hasher = ErasingHasher()
    app = new_app(clock, passwords=hasher)
    hasher.app, hasher.target = app, registered(app).user_id

    # When the login goes on, then it is the generic refusal, and opens nothing
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, password, CLIENT)
    assert hasher.target is None  # the erasure did happen, mid-login
    assert app.find_user_by_email(EMAIL) is None


def test_an_erased_legacy_account_s_spelling_reaches_the_new_account(
    app: AuthApplication,
) -> None:
    # Given an account registered before addresses were folded, named the
    # keyed way, erased; and its address, as typed then, signed up again
    old = legacy_account(app, "Ada@example.com")
    fold_email_claims(app)
    key_email_claims(app)
    app.erase(old, None, ADMIN_CLIENT)
    new = app.register("Ada@example.com", PASSWORD, CLIENT).user_id

    # Then every spelling, the one typed first included, reaches the new account
    for spelling in ("Ada@example.com", "ada@example.com", "ADA@example.com"):
        assert app.login(spelling, PASSWORD, CLIENT).user_id == new
