"""The second factor as events: enrolment, challenges after the password,
recovery codes, replay, lockout, turning it off. Codes come from pyotp, not
from the service's own code path."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyotp
import pytest

from application.audit import Auditor
from application.auth import AuthApplication
from application.errors import (
    AccountLockedError,
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    MfaRequiredError,
    WrongChallengeCodeError,
    WrongPasswordError,
)
from application.mfa import SecondFactor, normal_code
from application.values import Client
from domain.errors import InvalidCodeError, InvalidMfaChallengeError, MfaStateError
from domain.session import Session
from domain.user import MAX_OPEN_CHALLENGES, User
from domain.values import Factor
from infrastructure.totp import Totp
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    PASSWORD,
    WRONG_PASSWORD,
    FakeClock,
    last,
    names,
    position,
    refresh_fails,
    registered,
    stored_since,
    stream,
)

STEP = timedelta(seconds=30)


@pytest.fixture
def mfa(app: AuthApplication) -> SecondFactor:
    return SecondFactor(app, Totp())


def code(secret: str, clock: FakeClock, offset: timedelta = timedelta(0)) -> str:
    return pyotp.TOTP(secret).at(clock.now + offset)


def wrong(secret: str, clock: FakeClock) -> str:
    """A six-digit code that is no code of this step or the ones beside it."""
    near = {code(secret, clock, k * STEP) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def enrolled(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> tuple[Any, str, list[str]]:
    """An account with MFA on: its grant, its secret, its recovery codes."""
    grant = registered(app)
    secret = mfa.enrol(grant.user_id, PASSWORD, CLIENT).secret
    recovery = mfa.confirm(grant.user_id, code(secret, clock), CLIENT)
    clock.advance(STEP)  # the confirming code's step is spent
    return grant, secret, recovery


def challenged(app: AuthApplication) -> str:
    """The mfa_token of a login whose password was right."""
    with pytest.raises(MfaRequiredError) as required:
        app.login(EMAIL, PASSWORD, CLIENT)
    assert required.value.expires_in == 300
    return required.value.mfa_token


def test_an_enrolment_is_pending_until_a_code_confirms_it(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account
    grant = registered(app)

    # When it enrols, twice (the second replaces the first)
    first = mfa.enrol(grant.user_id, PASSWORD, CLIENT)
    second = mfa.enrol(grant.user_id, PASSWORD, CLIENT)

    # Then nothing is enforced: a login still opens a session
    assert app.login(EMAIL, PASSWORD, CLIENT).factors == (Factor.PASSWORD,)
    assert first.secret != second.secret
    assert second.otpauth_uri.startswith("otpauth://totp/authledger:")
    assert f"secret={second.secret}" in second.otpauth_uri
    # And a code of the replaced secret confirms nothing
    with pytest.raises(InvalidCodeError):
        mfa.confirm(grant.user_id, code(first.secret, clock), CLIENT)
    # When a code of the pending secret confirms it
    recovery = mfa.confirm(grant.user_id, code(second.secret, clock), CLIENT)

    # Then MFA is on, with ten distinct recovery codes stored as slow hashes
    user = app.get_user(grant.user_id)
    assert user.mfa_enabled
    assert len(set(recovery)) == 10
    enabled = last(stream(app, grant.user_id), User.MfaEnabled)
    assert all(h.startswith("$2b$") for h in enabled.recovery_code_hashes)
    assert all(
        app.passwords.verify(normal_code(typed), stored)
        for typed, stored in zip(recovery, enabled.recovery_code_hashes, strict=True)
    )
    assert [
        n for n in names(stream(app, grant.user_id)) if "Totp" in n or "Mfa" in n
    ] == [
        "User.TotpEnrolmentStarted",
        "User.TotpEnrolmentStarted",
        "User.MfaEnabled",
    ]


def test_enrolling_needs_the_password_and_mfa_off(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant = registered(app)
    with pytest.raises(WrongPasswordError):
        mfa.enrol(grant.user_id, WRONG_PASSWORD, CLIENT)
    assert last(stream(app, grant.user_id), User.LoginFailed).reason == "bad_password"
    with pytest.raises(MfaStateError):
        mfa.confirm(grant.user_id, code(pyotp.random_base32(), clock), CLIENT)
    enrolled_grant = mfa.enrol(grant.user_id, PASSWORD, CLIENT)
    mfa.confirm(grant.user_id, code(enrolled_grant.secret, clock), CLIENT)
    with pytest.raises(MfaStateError):
        mfa.enrol(grant.user_id, PASSWORD, CLIENT)


def test_a_login_with_mfa_on_asks_for_a_code_then_opens_a_session_with_both_factors(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account with MFA on
    grant, secret, _ = enrolled(app, mfa, clock)
    before = position(app)

    # When it logs in with the right password
    token = challenged(app)

    # Then no session opens; a challenge is recorded, by its token's hash only
    assert names(stored_since(app, before)) == ["User.MfaChallenged"]
    assert token not in str(stored_since(app, before)[0].__dict__)

    # When the current code is sent with the token
    opened = mfa.verify(token, code(secret, clock), CLIENT)

    # Then a session opens that names both factors
    assert opened.factors == (Factor.PASSWORD, Factor.TOTP)
    session = last(stored_since(app, before), Session.Opened)
    assert session.factors == ["pwd", "otp"]
    passed = last(stream(app, grant.user_id), User.MfaChallengePassed)
    assert passed.factor == "otp"
    # And the token is spent
    clock.advance(STEP)
    with pytest.raises(InvalidMfaChallengeError):
        mfa.verify(token, code(secret, clock), CLIENT)


def test_a_wrong_password_is_the_same_refusal_with_mfa_on(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    enrolled(app, mfa, clock)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, CLIENT)


def test_a_code_of_a_step_already_used_is_refused(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given a login that passed with the current code
    _, secret, _ = enrolled(app, mfa, clock)
    used = code(secret, clock)
    mfa.verify(challenged(app), used, CLIENT)

    # When the same code, then the previous step's, are sent for a new login
    token = challenged(app)
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(token, used, CLIENT)
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(token, code(secret, clock, -STEP), CLIENT)

    # Then the next step's code (drift) still passes
    assert mfa.verify(token, code(secret, clock, STEP), CLIENT).factors[1] is (
        Factor.TOTP
    )


def test_a_recovery_code_logs_in_once_and_is_recorded_as_such(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, _, recovery = enrolled(app, mfa, clock)

    opened = mfa.verify(challenged(app), recovery[3].upper(), CLIENT)

    assert opened.factors == (Factor.PASSWORD, Factor.RECOVERY_CODE)
    events = stream(app, grant.user_id)
    assert last(events, User.RecoveryCodeUsed).slot == 3
    assert last(events, User.MfaChallengePassed).factor == "recovery_code"
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(challenged(app), recovery[3], CLIENT)
    assert mfa.verify(challenged(app), recovery[4], CLIENT).session_id


def test_new_recovery_codes_end_the_old_set(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, secret, old = enrolled(app, mfa, clock)

    with pytest.raises(InvalidCodeError):
        mfa.regenerate_recovery_codes(grant.user_id, "000000", CLIENT)
    new = mfa.regenerate_recovery_codes(grant.user_id, code(secret, clock), CLIENT)

    assert not set(new) & set(old)
    for spent in old[:3]:
        with pytest.raises(WrongChallengeCodeError):
            mfa.verify(challenged(app), spent, CLIENT)
    assert mfa.verify(challenged(app), new[0], CLIENT).session_id


def test_an_mfa_token_dies_after_five_wrong_codes_or_its_expiry(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, secret, _ = enrolled(app, mfa, clock)
    token = challenged(app)
    for _ in range(4):
        with pytest.raises(WrongChallengeCodeError):
            mfa.verify(token, wrong(secret, clock), CLIENT)
    # Wrong codes count toward the account's lock too: lift it to see the
    # token's own limit.
    app.unlock(grant.user_id, None)
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(token, wrong(secret, clock), CLIENT)
    with pytest.raises(InvalidMfaChallengeError):  # the sixth try, right or not
        mfa.verify(token, code(secret, clock), CLIENT)

    late = challenged(app)
    clock.advance(timedelta(minutes=5))
    with pytest.raises(InvalidMfaChallengeError):
        mfa.verify(late, code(secret, clock), CLIENT)


def test_wrong_codes_count_toward_the_lock_like_wrong_passwords(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, secret, _ = enrolled(app, mfa, clock)
    for _ in range(5):
        with pytest.raises(WrongChallengeCodeError):
            mfa.verify(challenged(app), wrong(secret, clock), CLIENT)

    events = stream(app, grant.user_id)
    failed = [e for e in events if isinstance(e, User.MfaChallengeFailed)]
    assert [e.failures_in_window for e in failed] == [1, 2, 3, 4, 5]
    assert {e.reason for e in failed} == {"bad_code"}
    assert isinstance(events[-1], User.LockedOut)
    # Locked: even the right password and code open nothing
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)


def test_a_right_password_clears_no_failures_while_a_code_is_owed(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, secret, _ = enrolled(app, mfa, clock)
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(challenged(app), wrong(secret, clock), CLIENT)
    challenged(app)
    assert app.get_user(grant.user_id).failed_logins == 1
    mfa.verify(challenged(app), code(secret, clock), CLIENT)
    assert app.get_user(grant.user_id).failed_logins == 0


def test_turning_mfa_off_needs_password_and_code_and_ends_other_sessions(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, secret, _ = enrolled(app, mfa, clock)
    other = mfa.verify(challenged(app), code(secret, clock), CLIENT)
    clock.advance(STEP)

    kept = grant.session_id
    with pytest.raises(WrongPasswordError):
        mfa.disable(grant.user_id, WRONG_PASSWORD, code(secret, clock), CLIENT, kept)
    with pytest.raises(InvalidCodeError):
        mfa.disable(grant.user_id, PASSWORD, wrong(secret, clock), CLIENT, kept)
    assert app.get_user(grant.user_id).mfa_enabled

    mfa.disable(grant.user_id, PASSWORD, code(secret, clock), CLIENT, kept)

    assert not app.get_user(grant.user_id).mfa_enabled
    events = stream(app, grant.user_id)
    assert last(events, User.MfaDisabled).disabled_by == grant.user_id
    revoked = last(events, User.SessionsRevoked)
    assert (revoked.reason, revoked.kept_session_id) == ("mfa_disabled", kept)
    assert refresh_fails(app, other.refresh_token)
    assert app.login(EMAIL, PASSWORD, CLIENT).factors == (Factor.PASSWORD,)


def test_an_admin_reset_turns_mfa_off_naming_the_admin(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant, _, _ = enrolled(app, mfa, clock)
    admin = app.register("root@example.com", PASSWORD, CLIENT)

    mfa.reset(grant.user_id, admin.user_id, CLIENT)

    assert last(stream(app, grant.user_id), User.MfaDisabled).disabled_by == (
        admin.user_id
    )
    assert app.login(EMAIL, PASSWORD, CLIENT).session_id
    with pytest.raises(MfaStateError):
        mfa.reset(grant.user_id, admin.user_id, CLIENT)


def test_the_totp_secret_is_sealed_in_the_stored_events(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    before = position(app)
    _, secret, _ = enrolled(app, mfa, clock)
    stored = app.recorder.select_notifications(start=before + 1, limit=100)
    assert stored
    assert not any(secret.encode() in n.state for n in stored)
    assert any(b"sealed:v1:" in n.state and b"totp_secret" in n.state for n in stored)


def test_every_mfa_fact_is_in_the_audit_history_with_address_and_agent(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account that does everything MFA allows, and an admin's reset
    grant, secret, recovery = enrolled(app, mfa, clock)
    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(challenged(app), wrong(secret, clock), CLIENT)
    mfa.verify(challenged(app), code(secret, clock), CLIENT)
    mfa.verify(challenged(app), recovery[0], CLIENT)
    clock.advance(STEP)
    mfa.regenerate_recovery_codes(grant.user_id, code(secret, clock), CLIENT)
    clock.advance(STEP)
    mfa.disable(grant.user_id, PASSWORD, code(secret, clock), CLIENT, grant.session_id)
    enrolment = mfa.enrol(grant.user_id, PASSWORD, CLIENT)
    mfa.confirm(grant.user_id, code(enrolment.secret, clock), CLIENT)
    admin = app.register("root@example.com", PASSWORD, CLIENT)
    mfa.reset(grant.user_id, admin.user_id, CLIENT)

    # Then the audit history shows each, when, from where and with what
    timeline = Auditor(app).timeline(grant.user_id)
    shown = {e.event: e for e in timeline}
    for name in (
        "mfa_enrolment_started",
        "mfa_enabled",
        "mfa_challenged",
        "mfa_challenge_failed",
        "mfa_challenge_passed",
        "recovery_code_used",
        "recovery_codes_regenerated",
        "mfa_disabled",
        "mfa_reset",
    ):
        assert (shown[name].ip, shown[name].user_agent) == (
            CLIENT.ip,
            CLIENT.user_agent,
        )
        assert shown[name].at <= clock.now
    assert shown["mfa_reset"].detail == f"by {admin.user_id}"
    passed = [e.detail for e in timeline if e.event == "mfa_challenge_passed"]
    assert passed == ["otp", "recovery_code"]
    # And nothing of the secret or the codes, in it or in the export
    exported = str(list(Auditor(app).export()))
    for secret_value in (secret, *recovery):
        assert secret_value not in str(timeline)
        assert secret_value not in exported
    assert "recovery_code_hashes" not in exported
    assert "challenge_hash" not in exported


def test_a_signup_replayed_under_its_retry_key_opens_nothing_once_mfa_is_on(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account signed up under a retry key, whose first session is
    # still current, that turned MFA on
    keyed = Client(CLIENT.ip, CLIENT.user_agent, retry_key="signup-retry-key-1")
    grant = app.register(EMAIL, PASSWORD, keyed)
    secret = mfa.enrol(grant.user_id, PASSWORD, CLIENT).secret
    mfa.confirm(grant.user_id, code(secret, clock), CLIENT)

    # When the signup is sent again, with the password and the key: the
    # taken address, not the session's tokens (no second factor was asked)
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, PASSWORD, keyed)
    # And a login under the key is asked for its second factor, as any
    with pytest.raises(MfaRequiredError):
        app.login(EMAIL, PASSWORD, keyed)


def test_an_mfa_token_dies_when_the_password_changes_or_every_session_ends(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account with MFA on, and a login waiting for its code (a
    # phished password, say)
    grant, secret, _ = enrolled(app, mfa, clock)
    token = challenged(app)

    # When its owner changes the password
    app.change_password(grant.user_id, PASSWORD, "a new pass phrase 4 me", CLIENT)

    # Then the waiting login cannot finish, even with the right code
    with pytest.raises(InvalidMfaChallengeError):
        mfa.verify(token, code(secret, clock), CLIENT)

    # And so after "log out everywhere"
    with pytest.raises(MfaRequiredError) as required:
        app.login(EMAIL, "a new pass phrase 4 me", CLIENT)
    app.logout_all(grant.user_id, CLIENT)
    with pytest.raises(InvalidMfaChallengeError):
        mfa.verify(required.value.mfa_token, code(secret, clock), CLIENT)


def test_a_recovery_code_of_a_replaced_set_spends_no_slot_of_the_new_one(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account whose recovery codes were checked (as a login racing
    # a regeneration would) just before a new set replaced them
    grant, secret, _ = enrolled(app, mfa, clock)
    checked = app.get_user(grant.user_id)
    old_hash = checked.recovery_code_hashes[3]
    mfa.regenerate_recovery_codes(grant.user_id, code(secret, clock), CLIENT)

    # When the slot is spent by the old code's hash on the fresh account
    current = app.get_user(grant.user_id)
    with pytest.raises(InvalidCodeError):
        current.use_recovery_code(old_hash, CLIENT.ip, CLIENT.user_agent, clock.now)

    # Then the new set's code of that slot still works
    assert current.recovery_code_hashes[3]


def test_wrong_codes_to_confirm_an_enrolment_count_toward_the_lock(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant = registered(app)
    secret = mfa.enrol(grant.user_id, PASSWORD, CLIENT).secret
    for _ in range(5):
        with pytest.raises(InvalidCodeError):
            mfa.confirm(grant.user_id, wrong(secret, clock), CLIENT)

    failed = [e for e in stream(app, grant.user_id) if isinstance(e, User.LoginFailed)]
    assert [(e.reason, e.failures_in_window) for e in failed] == [
        ("bad_code", n) for n in range(1, 6)
    ]
    assert isinstance(stream(app, grant.user_id)[-1], User.LockedOut)
    with pytest.raises(AccountLockedError):  # locked: the right code waits too
        mfa.confirm(grant.user_id, code(secret, clock), CLIENT)


def test_only_the_newest_logins_waiting_for_a_code_are_kept(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    # Given an account with MFA on, and many logins whose password was right
    _, secret, _ = enrolled(app, mfa, clock)
    tokens = [challenged(app) for _ in range(MAX_OPEN_CHALLENGES + 3)]

    # Then the aggregate keeps only the newest few
    user = app.get_user(app.find_user_by_email(EMAIL).id)  # type: ignore[union-attr]
    assert len(user.challenges) == MAX_OPEN_CHALLENGES
    with pytest.raises(InvalidMfaChallengeError):
        mfa.verify(tokens[0], code(secret, clock), CLIENT)
    assert mfa.verify(tokens[-1], code(secret, clock), CLIENT).session_id


def test_the_code_that_confirmed_the_enrolment_opens_no_login(
    app: AuthApplication, mfa: SecondFactor, clock: FakeClock
) -> None:
    grant = registered(app)
    secret = mfa.enrol(grant.user_id, PASSWORD, CLIENT).secret
    confirming = code(secret, clock)
    mfa.confirm(grant.user_id, confirming, CLIENT)

    with pytest.raises(WrongChallengeCodeError):
        mfa.verify(challenged(app), confirming, CLIENT)
