"""A command sent again after an unanswered try is told what the first did.

The first try may have been stored with its answer lost (a 503, a dropped
connection): the retry must neither fail for it nor do it twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

import pytest

from application.account_mail import RESET, AccountMail
from application.auth import AuthApplication
from application.errors import (
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    InvalidMailTokenError,
    RetryKeySpentError,
    TooManyAttemptsError,
    WrongPasswordError,
)
from domain.session import Session
from domain.user import User
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    NEW_PASSWORD,
    PASSWORD,
    FakeClock,
    facts_since,
    forgot,
    mailed_token,
    names,
    of_type,
    position,
    refresh_fails,
    registered,
    stream,
)

KEYED = replace(CLIENT, retry_key="a0f1b2c3-retry-key")


def test_a_login_sent_again_under_its_key_is_answered_with_the_same_session(
    app: AuthApplication,
) -> None:
    # Given a login under a retry key
    registered(app)
    first = app.login(EMAIL, PASSWORD, KEYED)
    before = position(app)

    # When the client sends it again, as after an answer it never got
    again = app.login(EMAIL, PASSWORD, KEYED)

    # Then it gets the session the first opened, and nothing is stored
    assert (again.session_id, again.refresh_token) == (
        first.session_id,
        first.refresh_token,
    )
    assert not facts_since(app, before)
    assert not refresh_fails(app, again.refresh_token)
    # And another key, or none, is another login
    other = app.login(EMAIL, PASSWORD, replace(KEYED, retry_key="another-key"))
    unkeyed = app.login(EMAIL, PASSWORD, CLIENT)
    opened = of_type(facts_since(app, before), Session.Opened)
    assert [e.originator_id for e in opened] == [other.session_id, unkeyed.session_id]
    assert first.session_id not in {other.session_id, unkeyed.session_id}


def test_a_key_whose_session_moved_on_is_spent(app: AuthApplication) -> None:
    # Given a login under a key whose token has since been rotated
    registered(app)
    first = app.login(EMAIL, PASSWORD, KEYED)
    app.refresh(first.refresh_token, CLIENT)
    before = position(app)

    # When the key is sent again, then it is refused, and nothing is stored
    with pytest.raises(RetryKeySpentError):
        app.login(EMAIL, PASSWORD, KEYED)
    assert not facts_since(app, before)


def test_one_key_of_two_users_opens_two_sessions(app: AuthApplication) -> None:
    registered(app)
    registered(app, "grace@example.com")
    ada = app.login(EMAIL, PASSWORD, KEYED)
    grace = app.login("grace@example.com", PASSWORD, KEYED)
    assert ada.session_id != grace.session_id
    assert ada.refresh_token != grace.refresh_token


def test_a_signup_sent_again_under_its_key_is_the_account_it_made(
    app: AuthApplication,
) -> None:
    # Given a signup under a retry key
    first = app.register(EMAIL, PASSWORD, KEYED)
    before = position(app)

    # When it is sent again with the same password, it is the same account
    # and session, and nothing is stored
    again = app.register(EMAIL, PASSWORD, KEYED)
    assert (again.user_id, again.session_id, again.refresh_token) == (
        first.user_id,
        first.session_id,
        first.refresh_token,
    )
    assert not facts_since(app, before)

    # And without the key the email is taken
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, PASSWORD, CLIENT)
    assert not facts_since(app, before)


def test_a_signup_retry_is_no_way_round_the_login_rules(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given an account made under a key whose session has since rotated
    first = app.register(EMAIL, PASSWORD, KEYED)
    app.refresh(first.refresh_token, CLIENT)
    before = position(app)

    # When the key is sent with a wrong password: the email is taken, and the
    # guess counts toward the lock as a login's would
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, "a guessed passphrase", KEYED)
    assert names(facts_since(app, before)) == ["User.LoginFailed"]

    # And with the right one the spent key tells nothing more: the email is taken
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, PASSWORD, KEYED)

    # And a locked account answers no retry, even with its first session
    locked = app.register("grace@example.com", PASSWORD, KEYED)
    for _ in range(app.policy.lockout.max_failures):
        with pytest.raises(InvalidCredentialsError):
            app.login("grace@example.com", "a guessed passphrase", CLIENT)
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register("grace@example.com", PASSWORD, KEYED)
    clock.advance(timedelta(days=1))  # the lock runs out: the retry is answered
    again = app.register("grace@example.com", PASSWORD, KEYED)
    assert (again.session_id, again.refresh_token) == (
        locked.session_id,
        locked.refresh_token,
    )


def test_a_password_change_sent_again_is_done(app: AuthApplication) -> None:
    # Given a password changed, the answer lost
    grant = registered(app)
    app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)
    before = position(app)

    # When it is sent again: it is done, nothing stored, no failure counted
    app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)
    assert not facts_since(app, before)

    # But an old password with another new one is a wrong password
    with pytest.raises(WrongPasswordError):
        app.change_password(grant.user_id, PASSWORD, "yet another passphrase", CLIENT)
    assert names(facts_since(app, before)) == ["User.LoginFailed"]


def test_a_password_change_is_told_done_only_just_after_it(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a password changed a while ago
    grant = registered(app)
    app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)
    clock.advance(app.policy.retry_window + timedelta(seconds=1))
    before = position(app)

    # When the change is sent again: a stolen token gets no second guess
    with pytest.raises(WrongPasswordError):
        app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)
    assert names(facts_since(app, before)) == ["User.LoginFailed"]


def test_a_reset_sent_again_is_done_until_another_link_is_asked_for(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a password reset with its link, the answer lost
    user_id = registered(app).user_id
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, user_id, RESET)
    mail.reset_password(token, NEW_PASSWORD, CLIENT)
    before = position(app)

    # When it is sent again, it is done and nothing is stored
    mail.reset_password(token, NEW_PASSWORD, CLIENT)
    assert not facts_since(app, before)

    # But the used link sets no other password, and the guess counts
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, "yet another passphrase", CLIENT)
    assert names(facts_since(app, before)) == ["User.LoginFailed"]
    # And once a newer link is asked for, the old one tells nothing
    clock.advance(timedelta(hours=1))
    forgot(mail, EMAIL, CLIENT)
    assert of_type(facts_since(app, before), User.PasswordResetRequested)
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, NEW_PASSWORD, CLIENT)


def test_a_used_link_confirms_no_password_changed_after_it_or_once_expired(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a reset by link, then a change of the password by its owner
    grant = registered(app)
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, grant.user_id, RESET)
    mail.reset_password(token, NEW_PASSWORD, CLIENT)
    owners = "the owner's own passphrase"
    app.change_password(grant.user_id, NEW_PASSWORD, owners, CLIENT)

    # Then the old link tells nothing of the password now set
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, owners, CLIENT)

    # Nor does a link voided by a change of the password, once the moment of
    # the change has passed
    clock.advance(timedelta(hours=1))
    forgot(mail, EMAIL, CLIENT)
    voided = mailed_token(app, grant.user_id, RESET)
    app.change_password(grant.user_id, owners, NEW_PASSWORD, CLIENT)
    clock.advance(app.policy.retry_window + timedelta(seconds=1))
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(voided, NEW_PASSWORD, CLIENT)

    # Nor does a used link once it has expired
    forgot(mail, EMAIL, CLIENT)
    clock.advance(timedelta(hours=2))  # past the cooldown: a new link
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, grant.user_id, RESET)
    mail.reset_password(token, NEW_PASSWORD, CLIENT)
    clock.advance(timedelta(days=2))
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, NEW_PASSWORD, CLIENT)


def test_a_logout_everywhere_sent_again_moments_later_is_told_it_is_done(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a logout everywhere, then a login on another device
    first = registered(app)
    app.logout_all(first.user_id, CLIENT)
    since = app.login(EMAIL, PASSWORD, CLIENT)
    before = position(app)

    # When the first device sends it again with its (now ended) session's
    # token: it is told it is done, and nothing changes
    assert app.has_logged_out_everywhere(first.user_id, first.session_id)
    assert not facts_since(app, before)
    assert not refresh_fails(app, since.refresh_token)

    # But not once the moment has passed: the window does not slide
    clock.advance(app.policy.retry_window + timedelta(seconds=1))
    assert not app.has_logged_out_everywhere(first.user_id, first.session_id)
    app.logout_all(first.user_id, CLIENT)
    assert not app.has_logged_out_everywhere(first.user_id, first.session_id)


@pytest.mark.parametrize("ended_by", ["reuse", "logout", "password_change"])
def test_a_session_ended_otherwise_is_no_logout_everywhere_later(
    app: AuthApplication, clock: FakeClock, ended_by: str
) -> None:
    # Given a session ended by reuse detection, its own logout or a password
    # change, and then a logout everywhere from another session
    grant = registered(app)
    if ended_by == "reuse":
        app.refresh(grant.refresh_token, CLIENT)
        clock.advance(timedelta(minutes=1))  # past the reuse interval
        assert refresh_fails(app, grant.refresh_token)
    elif ended_by == "logout":
        app.logout(grant.user_id, grant.session_id, CLIENT)
    else:
        other = app.login(EMAIL, PASSWORD, CLIENT)
        app.change_password(
            grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT, other.session_id
        )
    other = app.login(
        EMAIL, NEW_PASSWORD if ended_by == "password_change" else PASSWORD, CLIENT
    )
    app.logout_all(other.user_id, CLIENT)

    # Then its token is told of no logout everywhere; only its own logout
    # is its own
    assert not app.has_logged_out_everywhere(grant.user_id, grant.session_id)
    assert app.has_logged_out(grant.user_id, grant.session_id) == (ended_by == "logout")
    assert app.has_logged_out_everywhere(other.user_id, other.session_id)


def test_a_session_restored_from_a_snapshot_knows_it_logged_out(
    app: AuthApplication,
) -> None:
    grant = registered(app)
    token = grant.refresh_token
    for _ in range(60):  # past the snapshot interval
        token = app.refresh(token, CLIENT).refresh_token
    app.logout(grant.user_id, grant.session_id, CLIENT)
    assert app.has_logged_out(grant.user_id, grant.session_id)


def test_a_signup_retry_from_a_blocked_address_is_refused_before_any_check(
    app: AuthApplication,
) -> None:
    # Given an account under a key, and an address blocked for failed logins
    app.register(EMAIL, PASSWORD, KEYED)
    for _ in range(app.policy.throttle.max_attempts + 1):
        with contextlib.suppress(InvalidCredentialsError, TooManyAttemptsError):
            app.login("nobody@example.com", "a guessed passphrase", KEYED)
    before = position(app)

    # When it retries the signup, then it is refused as a login would be
    with pytest.raises(TooManyAttemptsError):
        app.register(EMAIL, PASSWORD, KEYED)
    assert not facts_since(app, before)


def test_only_a_session_ended_by_a_logout_is_told_it_logged_out(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given sessions ended by reuse detection and by a password change
    replayed = registered(app)
    app.refresh(replayed.refresh_token, CLIENT)
    clock.advance(timedelta(minutes=1))  # past the reuse interval: a replay
    assert refresh_fails(app, replayed.refresh_token)
    revoked = of_type(stream(app, replayed.session_id), Session.Revoked)
    assert [e.reason for e in revoked] == ["reuse_detected"]
    changed = app.login(EMAIL, PASSWORD, CLIENT)
    app.change_password(changed.user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    # Then neither token is told it logged out
    for grant in (replayed, changed):
        assert not app.has_logged_out(grant.user_id, grant.session_id)
    # And another user's session is nobody's logout
    other = registered(app, "grace@example.com")
    app.logout(other.user_id, other.session_id, CLIENT)
    assert not app.has_logged_out(replayed.user_id, other.session_id)
