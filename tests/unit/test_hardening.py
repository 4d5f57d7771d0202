"""Attacks on the use cases, reproduced: locks, resets, bcrypt amplification."""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from application.account_mail import RESET, AccountMail
from application.audit import Auditor
from application.auth import AuthApplication
from application.errors import (
    AccountLockedError,
    EmailAlreadyRegisteredError,
    HashingBusyError,
    InvalidCredentialsError,
    InvalidMailTokenError,
    TooManyAttemptsError,
)
from application.values import AuthPolicy, session_id_of
from domain.session import RefreshPolicy, Session
from domain.throttle import ThrottlePolicy
from domain.user import LockoutPolicy, User
from infrastructure.passwords import BcryptPasswordHasher, CpuPool
from tests.unit.test_use_cases import (
    ADDRESS_KEY,
    CLIENT,
    EMAIL,
    MAIL_TOKENS,
    NEW_PASSWORD,
    OTHER_CLIENT,
    PASSWORD,
    WRONG_PASSWORD,
    FakeClock,
    facts_since,
    forgot,
    last,
    mailed_token,
    names,
    new_app,
    of_type,
    position,
    refresh_fails,
    session_events,
    stream,
)

LOCKOUT = LockoutPolicy(
    max_failures=3,
    first_lock=timedelta(minutes=1),
    longest_lock=timedelta(hours=1),
    decay=timedelta(hours=24),
)


class CountingHasher(BcryptPasswordHasher):
    """The real hasher, counting the hashes it makes (each one costs bcrypt)."""

    def __init__(self) -> None:
        self.hashes = 0
        super().__init__(b"unit-test-pepper", rounds=4)

    def hash(self, password: str) -> str:
        self.hashes += 1
        return super().hash(password)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def app(clock: FakeClock, hasher: CountingHasher) -> AuthApplication:
    return new_app(clock, AuthPolicy(lockout=LOCKOUT), hasher)


@pytest.fixture
def mail(app: AuthApplication) -> AccountMail:
    return AccountMail(app, MAIL_TOKENS)


def lock_out(app: AuthApplication) -> None:
    for n in range(LOCKOUT.max_failures):
        with pytest.raises(InvalidCredentialsError):
            app.login(EMAIL, f"{WRONG_PASSWORD} {n}", CLIENT)


def test_a_forged_reset_token_for_a_real_account_costs_no_hashing(
    app: AuthApplication, mail: AccountMail, hasher: CountingHasher
) -> None:
    # Given a real account with a pending reset, and a token naming it
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id
    forgot(mail, EMAIL, CLIENT)
    forged = MAIL_TOKENS.mint(RESET, user_id, uuid4())
    hashes, before = hasher.hashes, position(app)

    # When it is offered with a new password
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(forged, NEW_PASSWORD, CLIENT)

    # Then it was refused before any bcrypt work, and nothing was stored
    assert hasher.hashes == hashes
    assert not facts_since(app, before)


def test_signing_up_with_a_taken_email_costs_no_hashing(
    app: AuthApplication, hasher: CountingHasher
) -> None:
    app.register(EMAIL, PASSWORD, CLIENT)
    hashes, before = hasher.hashes, position(app)

    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(EMAIL, NEW_PASSWORD, CLIENT)

    assert hasher.hashes == hashes
    assert not facts_since(app, before)


def test_a_reset_lifts_the_lock_and_the_new_password_logs_in_at_once(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given a locked account whose owner asked for a reset link
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id
    lock_out(app)
    forgot(mail, EMAIL, CLIENT)
    before = position(app)

    # When the owner follows it (proof of the mailbox)
    mail.reset_password(mailed_token(app, user_id, RESET), NEW_PASSWORD, CLIENT)

    # Then the lock and the failure count are cleared with the new password
    assert names(facts_since(app, before)) == [
        "User.PasswordChanged",
        "User.FailuresCleared",
        "User.SessionsRevoked",
    ]
    assert app.login(EMAIL, NEW_PASSWORD, CLIENT).user_id == user_id


def test_a_successful_login_clears_the_failure_count(app: AuthApplication) -> None:
    # Given two failures, one short of the lock
    app.register(EMAIL, PASSWORD, CLIENT)
    for n in range(LOCKOUT.max_failures - 1):
        with pytest.raises(InvalidCredentialsError):
            app.login(EMAIL, f"{WRONG_PASSWORD} {n}", CLIENT)

    # When the owner logs in, then mistypes twice
    user_id = app.login(EMAIL, PASSWORD, CLIENT).user_id
    for n in range(LOCKOUT.max_failures - 1):
        with pytest.raises(InvalidCredentialsError):
            app.login(EMAIL, f"typo {n}", CLIENT)

    # Then the account is not locked: the count restarted at the login
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id
    assert app.get_user(user_id).locked_until is None


def test_lock_periods_double_while_attacks_continue_and_decay_after_a_quiet_day(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given an account locked four times in a row (1, 2, 4, 8 minutes)
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id
    periods = []
    for _ in range(4):
        lock_out(app)
        locked = app.get_user(user_id)
        assert locked.locked_until is not None
        periods.append(locked.locked_until - clock.now)
        clock.advance(periods[-1])
    assert periods == [timedelta(minutes=m) for m in (1, 2, 4, 8)]

    # When the next attack comes after a day without any lock
    clock.advance(LOCKOUT.decay)
    lock_out(app)

    # Then its lock is the first, short one again
    relocked = app.get_user(user_id)
    assert relocked.locked_until == clock.now + LOCKOUT.first_lock


def test_a_locked_account_refuses_a_password_change_even_with_the_right_password(
    app: AuthApplication, hasher: CountingHasher
) -> None:
    grant = app.register(EMAIL, PASSWORD, CLIENT)
    lock_out(app)
    hashes, before = hasher.hashes, position(app)

    with pytest.raises(AccountLockedError) as refused:
        app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    assert 0 < refused.value.retry_after_s <= 60
    assert hasher.hashes == hashes
    assert position(app) == before
    assert isinstance(stream(app, grant.user_id)[-1], User.LockedOut)


def test_signups_from_one_address_are_throttled_before_any_hashing(
    clock: FakeClock, hasher: CountingHasher
) -> None:
    signup = ThrottlePolicy(max_attempts=3, window=timedelta(hours=1))
    app = new_app(clock, AuthPolicy(signup=signup), hasher)
    app.register(EMAIL, PASSWORD, CLIENT)
    for n in range(signup.max_attempts - 1):  # a taken address counts too
        with pytest.raises(EmailAlreadyRegisteredError):
            app.register(EMAIL, f"{PASSWORD} {n}", CLIENT)
    hashes = hasher.hashes

    with pytest.raises(TooManyAttemptsError) as refused:
        app.register("someone.else@example.com", PASSWORD, CLIENT)

    assert 0 < refused.value.retry_after_s <= 3600
    assert hasher.hashes == hashes
    assert app.register("someone.else@example.com", PASSWORD, OTHER_CLIENT)


@pytest.mark.parametrize("link", ["reset", "verify"])
def test_mailed_link_tokens_from_one_address_are_throttled(
    app: AuthApplication, link: str
) -> None:
    mail = AccountMail(app, MAIL_TOKENS, per_address=ThrottlePolicy(max_attempts=3))
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id

    def submit(token: str) -> None:
        if link == "reset":
            mail.reset_password(token, NEW_PASSWORD, CLIENT)
        else:
            mail.verify_email(token, CLIENT)

    for _ in range(3):
        with pytest.raises(InvalidMailTokenError):
            submit(MAIL_TOKENS.mint(RESET, user_id, uuid4()))

    with pytest.raises(TooManyAttemptsError):
        submit(MAIL_TOKENS.mint(RESET, user_id, uuid4()))


def test_bcrypt_work_beyond_the_bound_is_refused_at_once() -> None:
    # Given: a hasher that runs one bcrypt at a time and lets one more wait
    bounded = BcryptPasswordHasher(b"pepper", rounds=12, concurrency=1, max_waiting=1)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(bounded.hash, "first")
        time.sleep(0.05)
        waiting = pool.submit(bounded.hash, "second")
        time.sleep(0.05)

        # When: a third asks while both are taken
        started = time.monotonic()
        with pytest.raises(HashingBusyError) as refused:
            bounded.verify_dummy("third")
        refused_after = time.monotonic() - started

        # Then: it is refused without waiting, and the others complete
        assert refused_after < 0.05
        assert refused.value.retry_after_s == 1
        assert bounded.verify("first", running.result())
        assert bounded.verify("second", waiting.result())


@pytest.mark.skipif(sys.platform != "linux", reason="threads have nice values on Linux")
def test_bcrypt_runs_in_threads_of_lower_priority_than_the_caller() -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    caller = niceness()
    pool = CpuPool(threads=1, max_waiting=0, niceness=7)

    assert pool.run(niceness) == min(19, caller + 7)
    assert niceness() == caller  # the requests' threads keep theirs


# Refresh tokens ------------------------------------------------------------


def snapshot_bytes(app: AuthApplication, session_id: UUID) -> int:
    """The size of the session's newest snapshot, as stored."""
    [snapshot] = app.snapshots.get(session_id, desc=True, limit=1)  # type: ignore[union-attr]
    return len(app.mapper.to_stored_event(snapshot).state)


def test_a_session_rotated_many_times_costs_what_a_new_one_costs(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a session rotated every 15 minutes, far past two snapshot intervals
    token = app.register(EMAIL, PASSWORD, CLIENT).refresh_token
    session_id = session_id_of(token)
    sizes = {}
    for rotation in range(1, 301):
        clock.advance(timedelta(minutes=15))
        token = app.refresh(token, CLIENT).refresh_token
        if rotation in (50, 300):
            sizes[rotation] = snapshot_bytes(app, session_id)

    # Then its state does not grow with its history: only what reuse needs
    assert sizes[300] <= sizes[50] + 8  # a few more digits, nothing per rotation
    assert not refresh_fails(app, token)


def test_tabs_racing_on_one_token_within_the_reuse_interval_all_get_the_same_one(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a session, and twenty tabs holding its token
    grant = app.register(EMAIL, PASSWORD, CLIENT)

    # When they all refresh it within a few seconds of each other
    answers = []
    for _ in range(20):
        answers.append(app.refresh(grant.refresh_token, CLIENT).refresh_token)
        clock.advance(timedelta(milliseconds=300))

    # Then one rotation is stored, every tab holds the newest token, and it works
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
    ]
    assert len(set(answers)) == 1
    assert not refresh_fails(app, answers[0])


def test_a_token_retired_longer_ago_than_the_interval_is_a_replay(
    app: AuthApplication, clock: FakeClock
) -> None:
    grant = app.register(EMAIL, PASSWORD, CLIENT)
    newest = app.refresh(grant.refresh_token, CLIENT).refresh_token
    clock.advance(RefreshPolicy().reuse_interval + timedelta(seconds=1))

    assert refresh_fails(app, grant.refresh_token)

    assert last(stream(app, grant.session_id), Session.Revoked).reason == (
        "reuse_detected"
    )
    assert refresh_fails(app, newest)


def test_any_older_token_of_the_chain_is_a_replay_and_a_forged_one_is_not(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a session rotated five times
    tokens = [app.register(EMAIL, PASSWORD, CLIENT).refresh_token]
    for _ in range(5):
        clock.advance(timedelta(minutes=15))
        tokens.append(app.refresh(tokens[-1], CLIENT).refresh_token)
    session_id = session_id_of(tokens[0])
    sid, generation, _ = tokens[1].split(".")

    # When a forged token claims an old generation, it is refused, nothing revoked
    assert refresh_fails(app, f"{sid}.{generation}.forged-secret")
    assert not of_type(stream(app, session_id), Session.Revoked)

    # When the third token, long retired, comes back: the session is revoked
    assert refresh_fails(app, tokens[2])
    assert last(stream(app, session_id), Session.Revoked).reason == "reuse_detected"
    assert refresh_fails(app, tokens[-1])


def test_a_session_of_before_generations_survives_its_first_refresh_race(
    app: AuthApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a session whose token has no generation (issued before them)
    monkeypatch.setattr(
        "application.auth.new_refresh_token",
        lambda session_id: f"{session_id.hex}.{secrets.token_urlsafe(32)}",
    )
    legacy = app.register(EMAIL, PASSWORD, CLIENT)
    assert legacy.refresh_token.count(".") == 1

    # When: two tabs refresh it, one after the other within the interval
    first = app.refresh(legacy.refresh_token, CLIENT).refresh_token
    second = app.refresh(legacy.refresh_token, CLIENT).refresh_token

    # Then: both hold the one successor, and the session lives
    assert first == second
    assert session_events(app, legacy.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
    ]
    assert not refresh_fails(app, first)


# Credential stuffing -------------------------------------------------------


def test_failed_logins_on_an_unknown_address_are_audited_under_a_keyed_hash(
    app: AuthApplication,
) -> None:
    # Given: an account, and an address that has none
    app.register(EMAIL, PASSWORD, CLIENT)
    target = "nobody.here@example.com"
    before = position(app)

    # When: a stuffing list tries the unknown address from two clients
    for client in (CLIENT, OTHER_CLIENT):
        with pytest.raises(InvalidCredentialsError):
            app.login(target, "leaked password", client)

    # And: a reset link is asked for it
    AccountMail(app, MAIL_TOKENS).forgot_password(target, CLIENT)

    # Then: an auditor who types the address sees all three attempts
    attempts = Auditor(app).unknown_logins(target.upper(), app.address_key)
    assert [(a.ip, a.user_agent, a.reason) for a in attempts] == [
        (CLIENT.ip, CLIENT.user_agent, "unknown_account"),
        (OTHER_CLIENT.ip, OTHER_CLIENT.user_agent, "unknown_account"),
        (CLIENT.ip, CLIENT.user_agent, "reset_requested"),
    ]
    assert Auditor(app).unknown_logins("someone.else@example.com", ADDRESS_KEY) == []
    # And: the address itself is stored nowhere
    stored = app.recorder.select_notifications(start=before + 1, limit=100)
    assert all(b"nobody.here" not in n.state for n in stored)
