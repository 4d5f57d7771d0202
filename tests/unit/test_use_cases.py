"""Use cases on in-memory persistence: given events and commands, then stored events."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError

from application.account_mail import RESET, VERIFY, AccountMail
from application.auth import NO_METER, AuthApplication
from application.errors import (
    ConflictError,
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    InvalidMailTokenError,
    InvalidRefreshTokenError,
    SessionNotFoundError,
    TooManyAttemptsError,
    WrongPasswordError,
)
from application.ports import Meter, PasswordHasher
from application.store import retry_on_conflict
from application.values import (
    AuthPolicy,
    Client,
    SessionGrant,
    address_hash,
    lookup_name,
)
from domain.email_claim import EmailClaim
from domain.reset_asks import ResetAsks
from domain.session import RefreshPolicy, Session
from domain.throttle import ClientThrottle, ThrottlePolicy
from domain.user import LockoutPolicy, User
from domain.values import Role
from infrastructure.data_keys import memory_sealing
from infrastructure.mail_tokens import HmacMailTokens
from infrastructure.password_screen import ZxcvbnScreen
from infrastructure.passwords import BcryptPasswordHasher
from tests.unit.helpers import T0

E = TypeVar("E")

CLIENT = Client("198.51.100.7", "pytest-use-cases")
OTHER_CLIENT = Client("198.51.100.99", "pytest-use-cases-2")
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
WRONG_PASSWORD = "not the password"

# The real hasher at bcrypt's lowest cost: honest, and about a millisecond a check.
PASSWORDS = BcryptPasswordHasher(b"unit-test-pepper", rounds=4)
MAIL_TOKENS = HmacMailTokens(b"unit-test-server-secret")
SCREEN = ZxcvbnScreen()
REFRESH_KEY = b"unit-test-refresh-key"
ADDRESS_KEY = b"unit-test-address-key"
LOOKUP_KEY = b"unit-test-lookup-key"
KEY_ENCRYPTION_KEY = b"unit-test-key-encryption-key"
STRICT = AuthPolicy(refresh=RefreshPolicy(reuse_interval=timedelta(0)))

Event = DomainEventProtocol[UUID]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def new_app(
    clock: FakeClock,
    policy: AuthPolicy | None = None,
    passwords: PasswordHasher = PASSWORDS,
    meter: Meter = NO_METER,
) -> AuthApplication:
    """The auth use cases on eventsourcing's in-memory (POPO) persistence."""
    return AuthApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        mapper_of=memory_sealing(KEY_ENCRYPTION_KEY),
        passwords=passwords,
        screen=SCREEN,
        refresh_key=REFRESH_KEY,
        address_key=ADDRESS_KEY,
        lookup_key=LOOKUP_KEY,
        policy=policy,
        clock=clock,
        meter=meter,
    )


# Reading the store ---------------------------------------------------------


def position(app: AuthApplication) -> int:
    """The id of the newest stored event (0 for an empty store)."""
    return app.recorder.max_notification_id() or 0


def stored_since(app: AuthApplication, after: int) -> list[Event]:
    """Every event stored after notification `after`, in the order stored."""
    notifications = app.recorder.select_notifications(start=after + 1, limit=10_000)
    return [app.mapper.to_domain_event(n) for n in notifications]


def facts_since(app: AuthApplication, after: int) -> list[Event]:
    """What was stored after `after`, but the address counters every request adds."""
    return [
        e for e in stored_since(app, after) if not isinstance(e, ClientThrottle.Event)
    ]


def stream(app: AuthApplication, aggregate_id: UUID) -> list[Event]:
    """One aggregate's events, oldest first."""
    return list(app.events.get(aggregate_id))


def names(events: Sequence[object]) -> list[str]:
    return [type(event).__qualname__ for event in events]


def of_type(events: Sequence[object], event_type: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, event_type)]


def last(events: Sequence[object], event_type: type[E]) -> E:
    found = of_type(events, event_type)
    assert found, f"no {event_type.__qualname__} in {names(events)}"
    return found[-1]


def session_events(app: AuthApplication, session_id: UUID) -> list[str]:
    return names(stream(app, session_id))


def refresh_fails(app: AuthApplication, refresh_token: str) -> bool:
    """Whether the token is refused; a token that works must store its rotation."""
    before = position(app)
    try:
        grant = app.refresh(refresh_token, CLIENT)
    except InvalidRefreshTokenError:
        assert not of_type(stored_since(app, before), Session.TokenRotated)
        return True
    rotated = last(stored_since(app, before), Session.TokenRotated)
    assert rotated.originator_id == grant.session_id
    return False


# Arranging -----------------------------------------------------------------


def registered(app: AuthApplication, email: str = EMAIL) -> SessionGrant:
    return app.register(email, PASSWORD, CLIENT)


def race_first_save(
    monkeypatch: pytest.MonkeyPatch,
    app: AuthApplication,
    concurrent: Callable[[], object],
) -> list[int]:
    """Run `concurrent` just before the app's next save, as another request would.

    The command has read and decided by then, so its save loses to the change
    `concurrent` commits. Returns a list that counts the saves attempted.
    """
    original = app.save
    saves: list[int] = []

    def save(*objects: Any, **kwargs: Any) -> Any:
        saves.append(len(saves) + 1)
        if len(saves) == 1:
            monkeypatch.setattr(app, "save", counting)
            concurrent()
        return original(*objects, **kwargs)

    def counting(*objects: Any, **kwargs: Any) -> Any:
        saves.append(len(saves) + 1)
        return original(*objects, **kwargs)

    monkeypatch.setattr(app, "save", save)
    return saves


# The store itself ----------------------------------------------------------


def test_the_use_cases_run_on_in_memory_persistence_without_postgresql(
    app: AuthApplication,
) -> None:
    # Given an application built on the POPO persistence module
    # When an account is registered
    grant = registered(app)

    # Then the events live in the in-memory recorder and read back from it
    assert type(app.recorder).__module__ == "eventsourcing.popo"
    assert names(stream(app, grant.user_id)) == ["User.Registered", "User.LoggedIn"]


# Register ------------------------------------------------------------------


def test_registering_stores_the_user_its_email_claim_and_its_first_session(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given an empty store
    # When someone registers with a mixed-case domain
    grant = app.register("Ada@Example.COM", PASSWORD, CLIENT)

    # Then one save stored the user, the claim of the normalised email and a session
    events = facts_since(app, 0)
    assert sorted(names(events)) == sorted(
        ["User.Registered", "User.LoggedIn", "EmailClaim.Claimed", "Session.Opened"]
    )
    registered_event = last(events, User.Registered)
    assert registered_event.originator_id == grant.user_id
    assert registered_event.email == "Ada@example.com"
    assert registered_event.password_hash != PASSWORD
    assert PASSWORDS.verify(PASSWORD, registered_event.password_hash)
    claim = last(events, EmailClaim.Claimed)
    # Named by a keyed hash of the folded form: no guess finds it without the key
    assert claim.originator_id == app.claim_id("ada@example.com")
    assert claim.originator_id == EmailClaim.create_id(
        lookup_name(LOOKUP_KEY, "email", "ada@example.com")
    )
    assert claim.originator_id != EmailClaim.legacy_id("ada@example.com")
    assert claim.user_id == grant.user_id
    logged_in = last(events, User.LoggedIn)
    opened = last(events, Session.Opened)
    assert logged_in.session_id == opened.originator_id == grant.session_id
    assert opened.user_id == grant.user_id
    # The session names the version of the login that opened it
    assert opened.login_version == logged_in.originator_version == 2
    assert opened.timestamp == clock.now
    assert grant.refresh_expires_at == opened.expires_at
    assert grant.refresh_token.startswith(grant.session_id.hex + ".")


@pytest.mark.parametrize("second_email", [EMAIL, "ada@EXAMPLE.com"])
def test_registering_an_email_already_taken_is_refused_and_stores_nothing(
    app: AuthApplication, second_email: str
) -> None:
    # Given an account for the email
    first = registered(app)
    before = position(app)

    # When the same email (its domain perhaps in other case) registers again
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(second_email, "another password", OTHER_CLIENT)

    # Then nothing new is stored and the first account still logs in
    assert not facts_since(app, before)
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == first.user_id


# Login ---------------------------------------------------------------------


def test_logging_in_with_the_right_password_opens_a_session(
    app: AuthApplication,
) -> None:
    # Given a registered account
    first = registered(app)
    before = position(app)

    # When it logs in with the right password, domain in other case
    grant = app.login("ada@EXAMPLE.COM", PASSWORD, OTHER_CLIENT)

    # Then a new session is opened and listed on the user
    events = stored_since(app, before)
    assert names(events) == ["User.LoggedIn", "Session.Opened"]
    logged_in = last(events, User.LoggedIn)
    opened = last(events, Session.Opened)
    assert grant.user_id == first.user_id
    assert grant.session_id == logged_in.session_id == opened.originator_id
    assert grant.session_id != first.session_id
    assert opened.login_version == logged_in.originator_version == 3
    assert (opened.ip, opened.user_agent) == (OTHER_CLIENT.ip, OTHER_CLIENT.user_agent)
    assert app.refresh(grant.refresh_token, CLIENT).session_id == grant.session_id


def login_refusal(app: AuthApplication, email: str, password: str) -> str:
    """Log in expecting refusal; the refusal as the client would see it."""
    with pytest.raises(InvalidCredentialsError) as refused:
        app.login(email, password, CLIENT)
    return f"{type(refused.value).__name__}: {refused.value!s} {refused.value.args}"


def test_wrong_password_unknown_email_and_locked_account_are_one_refusal(
    clock: FakeClock,
) -> None:
    # Given an account that locks after two failures, and another one
    app = new_app(clock, AuthPolicy(lockout=LockoutPolicy(max_failures=2)))
    user_id = registered(app).user_id
    locked_id = registered(app, "bob@example.com").user_id
    for _ in range(2):
        login_refusal(app, "bob@example.com", WRONG_PASSWORD)
    assert app.get_user(locked_id).is_locked(clock.now)
    before = position(app)

    # When a wrong password, an unknown email and the locked account's right
    # password are tried
    refusals = {
        login_refusal(app, EMAIL, WRONG_PASSWORD),
        login_refusal(app, "nobody@example.com", PASSWORD),
        login_refusal(app, "bob@example.com", PASSWORD),
    }

    # Then the three refusals are indistinguishable
    assert len(refusals) == 1
    # And each was recorded: on the address, and on the account when there is one
    events = stored_since(app, before)
    assert (
        names(of_type(events, ClientThrottle.FailureCounted))
        == ["ClientThrottle.FailureCounted"] * 3
    )
    failed = of_type(events, User.LoginFailed)
    assert [(f.originator_id, f.reason) for f in failed] == [
        (user_id, "bad_password"),
        (locked_id, "locked"),
    ]
    assert not of_type(events, Session.Opened)


def test_a_wrong_password_records_a_failure_on_the_user_and_the_address(
    app: AuthApplication,
) -> None:
    # Given a registered account
    user_id = registered(app).user_id
    before = position(app)

    # When a wrong password is tried
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, CLIENT)

    # Then the user counts one failure and the address one attempt, in one save
    events = stored_since(app, before)
    assert sorted(names(events)) == [
        "ClientThrottle.FailureCounted",
        "ClientThrottle.Started",
        "User.LoginFailed",
    ]
    failed = last(events, User.LoginFailed)
    assert failed.originator_id == user_id
    assert (failed.reason, failed.failures_in_window) == ("bad_password", 1)
    assert (failed.ip, failed.user_agent) == (CLIENT.ip, CLIENT.user_agent)
    throttle = last(events, ClientThrottle.FailureCounted)
    assert throttle.originator_id == app.throttle(CLIENT.ip, T0).id
    # And the address's counter is named by its keyed hash, never by the address
    started = last(events, ClientThrottle.Started)
    assert started.key == lookup_name(LOOKUP_KEY, "client", CLIENT.ip)
    assert throttle.originator_id != ClientThrottle.create_id(CLIENT.ip)


def test_an_unknown_email_counts_against_the_address_and_its_hash_only(
    app: AuthApplication,
) -> None:
    # Given an empty store
    # When an unknown email tries to log in
    with pytest.raises(InvalidCredentialsError):
        app.login("nobody@example.com", PASSWORD, CLIENT)

    # Then the client address's throttle and the keyed hash of the email record
    # it, in one save; no account is created
    assert sorted(names(stored_since(app, 0))) == [
        "ClientThrottle.FailureCounted",
        "ClientThrottle.Started",
        "UnknownLogins.Attempted",
        "UnknownLogins.Started",
    ]


def test_the_account_locks_after_max_failures_and_refuses_even_the_right_password(
    clock: FakeClock,
) -> None:
    # Given an account that locks after three failures in a window
    policy = AuthPolicy(
        lockout=LockoutPolicy(max_failures=3, first_lock=timedelta(minutes=1))
    )
    app = new_app(clock, policy)
    user_id = registered(app).user_id

    # When the password is wrong three times
    for _ in range(2):
        with pytest.raises(InvalidCredentialsError):
            app.login(EMAIL, WRONG_PASSWORD, CLIENT)
    assert not app.get_user(user_id).is_locked(clock.now)
    before = position(app)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, CLIENT)

    # Then the third failure locks the account for the first lock period
    user_events = [e for e in stored_since(app, before) if e.originator_id == user_id]
    assert names(user_events) == ["User.LoginFailed", "User.LockedOut"]
    assert last(user_events, User.LoginFailed).failures_in_window == 3
    assert last(user_events, User.LockedOut).until == clock.now + timedelta(minutes=1)

    # And the right password is refused while locked, recorded as such
    clock.advance(timedelta(seconds=59))
    before = position(app)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)
    refused = last(stored_since(app, before), User.LoginFailed)
    assert refused.reason == "locked"
    assert not of_type(stored_since(app, before), Session.Opened)
    assert app.get_user(user_id).is_locked(clock.now)


def test_once_the_lock_runs_out_the_right_password_logs_in(clock: FakeClock) -> None:
    # Given an account locked for one minute
    policy = AuthPolicy(
        lockout=LockoutPolicy(max_failures=1, first_lock=timedelta(minutes=1))
    )
    app = new_app(clock, policy)
    user_id = registered(app).user_id
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, CLIENT)
    before = position(app)

    # When the right password comes after the minute
    clock.advance(timedelta(minutes=1))
    grant = app.login(EMAIL, PASSWORD, CLIENT)

    # Then the lock's end is recorded and a session opens
    assert names(stored_since(app, before)) == [
        "User.Unlocked",
        "User.LoggedIn",
        "Session.Opened",
    ]
    assert grant.user_id == user_id
    assert app.get_user(user_id).failed_logins == 0


def test_an_address_that_fails_too_often_is_refused_before_any_check(
    clock: FakeClock,
) -> None:
    # Given an address throttled after three attempts
    app = new_app(clock, AuthPolicy(throttle=ThrottlePolicy(max_attempts=3)))
    user_id = registered(app).user_id
    for _ in range(3):
        with pytest.raises(InvalidCredentialsError):
            app.login("nobody@example.com", WRONG_PASSWORD, CLIENT)
    before = position(app)

    # When it tries again, even with the right password of a real account
    with pytest.raises(TooManyAttemptsError) as blocked:
        app.login(EMAIL, PASSWORD, CLIENT)

    # Then it is told to wait, nothing is stored, and another address may log in
    assert blocked.value.retry_after_s == 15 * 60
    assert position(app) == before
    assert app.login(EMAIL, PASSWORD, OTHER_CLIENT).user_id == user_id


# Refresh -------------------------------------------------------------------


def test_refreshing_rotates_the_token_and_the_new_one_works(
    app: AuthApplication,
) -> None:
    # Given a session
    grant = registered(app)
    before = position(app)

    # When its refresh token is presented
    rotated = app.refresh(grant.refresh_token, OTHER_CLIENT)

    # Then the session rotates to a new token, which works in turn
    events = stored_since(app, before)
    assert names(events) == ["Session.TokenRotated"]
    rotation = last(events, Session.TokenRotated)
    assert rotation.originator_id == grant.session_id
    assert rotation.generation == 1
    assert rotated.session_id == grant.session_id
    assert rotated.refresh_token != grant.refresh_token
    again = app.refresh(rotated.refresh_token, CLIENT)
    assert again.refresh_token not in {grant.refresh_token, rotated.refresh_token}
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
        "Session.TokenRotated",
    ]


def test_replaying_a_rotated_token_in_strict_mode_revokes_the_session(
    clock: FakeClock,
) -> None:
    # Given a session whose token was rotated (no reuse interval)
    app = new_app(clock, STRICT)
    grant = registered(app)
    rotated = app.refresh(grant.refresh_token, CLIENT)
    before = position(app)

    # When the retired token is presented again, even at once
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(grant.refresh_token, CLIENT)

    # Then the whole session is revoked as a reuse, and its newest token is dead
    revoked = last(stored_since(app, before), Session.Revoked)
    assert revoked.originator_id == grant.session_id
    assert revoked.reason == "reuse_detected"
    assert refresh_fails(app, rotated.refresh_token)
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
        "Session.Revoked",
    ]


def test_within_the_reuse_interval_a_retired_token_gets_the_newest_again(
    clock: FakeClock,
) -> None:
    # Given a 30-second reuse interval and a rotated token
    policy = AuthPolicy(refresh=RefreshPolicy(reuse_interval=timedelta(seconds=30)))
    app = new_app(clock, policy)
    grant = registered(app)
    rotated = app.refresh(grant.refresh_token, CLIENT)

    # When the retired token comes again within the interval
    clock.advance(timedelta(seconds=30))
    again = app.refresh(grant.refresh_token, CLIENT)

    # Then it gets the newest token, as a concurrent tab would; nothing is stored
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
    ]
    assert again.refresh_token == rotated.refresh_token

    # But once the interval measured from its retirement has passed, it is a replay
    clock.advance(timedelta(seconds=1))
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(grant.refresh_token, CLIENT)
    revoked = last(stream(app, grant.session_id), Session.Revoked)
    assert revoked.reason == "reuse_detected"
    assert refresh_fails(app, again.refresh_token)


def test_an_expired_refresh_token_ends_its_session(
    clock: FakeClock, app: AuthApplication
) -> None:
    # Given a session
    grant = registered(app)

    # When its token is presented after its lifetime
    clock.advance(RefreshPolicy().token_ttl)
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(grant.refresh_token, CLIENT)

    # Then the session is revoked as expired
    assert last(stream(app, grant.session_id), Session.Revoked).reason == "expired"


@pytest.mark.parametrize(
    "token",
    ["", "no-dot", f"{uuid4().hex}.unknown-session", "x" * 200],
)
def test_a_malformed_or_unknown_refresh_token_is_refused_and_stores_nothing(
    app: AuthApplication, token: str
) -> None:
    # Given a session
    registered(app)
    before = position(app)

    # When garbage is presented as a refresh token
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(token, CLIENT)

    # Then nothing is stored
    assert position(app) == before


def test_a_forged_secret_for_a_real_session_is_refused_without_revoking_it(
    app: AuthApplication,
) -> None:
    # Given a session
    grant = registered(app)

    # When its id comes with a secret it never issued
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(f"{grant.session_id.hex}.forged", CLIENT)

    # Then the session lives on: guessing must not let anyone end it
    assert session_events(app, grant.session_id) == ["Session.Opened"]
    assert not refresh_fails(app, grant.refresh_token)


def test_two_refreshes_racing_in_strict_mode_refuse_the_loser_without_revoking(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a session, and another tab refreshing the same token first
    app = new_app(clock, STRICT)
    grant = registered(app)
    winner: list[SessionGrant] = []
    race_first_save(
        monkeypatch,
        app,
        lambda: winner.append(app.refresh(grant.refresh_token, CLIENT)),
    )

    # When this refresh, decided on the same version, saves second
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(grant.refresh_token, CLIENT)

    # Then it raced rather than replayed: refused, the session kept, the winner's
    # token working
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
    ]
    assert not refresh_fails(app, winner[0].refresh_token)


def test_two_refreshes_racing_within_a_reuse_interval_both_get_a_token(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a reuse interval, a session, and another tab refreshing the token first
    policy = AuthPolicy(refresh=RefreshPolicy(reuse_interval=timedelta(seconds=10)))
    app = new_app(clock, policy)
    grant = registered(app)
    winner: list[SessionGrant] = []
    saves = race_first_save(
        monkeypatch,
        app,
        lambda: winner.append(app.refresh(grant.refresh_token, CLIENT)),
    )

    # When this refresh saves second
    loser = app.refresh(grant.refresh_token, CLIENT)

    # Then it is decided again on the winner's version and gets the winner's token
    assert len(saves) == 2  # its lost save, the winner's; the retry saves nothing
    assert session_events(app, grant.session_id) == [
        "Session.Opened",
        "Session.TokenRotated",
    ]
    assert loser.refresh_token == winner[0].refresh_token
    assert not refresh_fails(app, loser.refresh_token)


# Logout --------------------------------------------------------------------


def test_logging_out_revokes_that_one_session(app: AuthApplication) -> None:
    # Given two sessions of one user
    first = registered(app)
    second = app.login(EMAIL, PASSWORD, CLIENT)
    before = position(app)

    # When one logs out
    app.logout(first.user_id, first.session_id, OTHER_CLIENT)

    # Then only that session is revoked, with reason logout
    events = stored_since(app, before)
    assert names(events) == ["Session.Revoked"]
    revoked = last(events, Session.Revoked)
    assert revoked.originator_id == first.session_id
    assert (revoked.reason, revoked.ip) == ("logout", OTHER_CLIENT.ip)
    assert refresh_fails(app, first.refresh_token)
    assert not refresh_fails(app, second.refresh_token)


def test_logging_out_another_users_session_is_not_found_and_changes_nothing(
    app: AuthApplication,
) -> None:
    # Given two users with a session each
    ada = registered(app)
    bob = registered(app, "bob@example.com")
    before = position(app)

    # When Ada names Bob's session to log out
    with pytest.raises(SessionNotFoundError):
        app.logout(ada.user_id, bob.session_id, CLIENT)

    # Then nothing is stored and Bob's session still refreshes
    assert position(app) == before
    assert not refresh_fails(app, bob.refresh_token)


@pytest.mark.parametrize("ended_by", ["logout", "logout_all"])
def test_logging_out_a_session_already_ended_is_done_and_stores_nothing(
    app: AuthApplication, ended_by: str
) -> None:
    # Given a session ended by a logout, or by logging out everywhere
    grant = registered(app)
    if ended_by == "logout":
        app.logout(grant.user_id, grant.session_id, CLIENT)
    else:
        app.logout_all(grant.user_id, CLIENT)
    before = position(app)

    # When it logs out (again: a retry of the logout that ended it)
    app.logout(grant.user_id, grant.session_id, CLIENT)

    # Then nothing more is stored, and the session stays over
    assert position(app) == before
    assert refresh_fails(app, grant.refresh_token)
    assert app.has_logged_out(grant.user_id, grant.session_id)


def test_logging_out_an_unknown_session_is_not_found(app: AuthApplication) -> None:
    # Given a user
    grant = registered(app)

    # When it names a session that never existed, or a non-session aggregate
    # Then neither is found
    with pytest.raises(SessionNotFoundError):
        app.logout(grant.user_id, uuid4(), CLIENT)
    with pytest.raises(SessionNotFoundError):
        app.logout(grant.user_id, grant.user_id, CLIENT)


# Logout everywhere ---------------------------------------------------------


def test_logging_out_everywhere_ends_every_earlier_session_with_one_event(
    app: AuthApplication,
) -> None:
    # Given a user with three sessions, one already rotated
    grants = [registered(app)] + [app.login(EMAIL, PASSWORD, CLIENT) for _ in range(2)]
    tokens = [g.refresh_token for g in grants]
    tokens[1] = app.refresh(tokens[1], CLIENT).refresh_token
    user_id = grants[0].user_id
    before = position(app)

    # When it logs out everywhere
    app.logout_all(user_id, OTHER_CLIENT)

    # Then one event on the user records it, and no session is touched
    events = stored_since(app, before)
    assert names(events) == ["User.SessionsRevoked"]
    revoked = last(events, User.SessionsRevoked)
    assert revoked.originator_id == user_id
    assert (revoked.reason, revoked.kept_session_id) == ("logout_all", None)
    assert revoked.ip == OTHER_CLIENT.ip
    # And every earlier session's refresh token is refused
    for token in tokens:
        assert refresh_fails(app, token)
    assert position(app) == before + 1

    # But a session opened after it refreshes
    later = app.login(EMAIL, PASSWORD, CLIENT)
    assert not refresh_fails(app, later.refresh_token)


def test_logging_out_everywhere_spares_other_users(app: AuthApplication) -> None:
    # Given two users
    ada = registered(app)
    bob = registered(app, "bob@example.com")

    # When Ada logs out everywhere
    app.logout_all(ada.user_id, CLIENT)

    # Then Bob's session lives
    assert refresh_fails(app, ada.refresh_token)
    assert not refresh_fails(app, bob.refresh_token)


def test_a_login_racing_a_logout_everywhere_is_ended_by_it(
    app: AuthApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user, and a login that commits after logout_all read the user
    first = registered(app)
    racing: list[SessionGrant] = []
    saves = race_first_save(
        monkeypatch, app, lambda: racing.append(app.login(EMAIL, PASSWORD, CLIENT))
    )

    # When logout_all saves
    app.logout_all(first.user_id, CLIENT)

    # Then its lost save was retried after the login, and ended that session too
    assert len(saves) == 3
    user_events = names(stream(app, first.user_id))
    assert user_events == [
        "User.Registered",
        "User.LoggedIn",
        "User.LoggedIn",
        "User.SessionsRevoked",
    ]
    assert refresh_fails(app, first.refresh_token)
    assert refresh_fails(app, racing[0].refresh_token)


# Change password -----------------------------------------------------------


def test_changing_the_password_ends_every_other_session_in_the_same_save(
    app: AuthApplication,
) -> None:
    # Given a user with three sessions
    grants = [registered(app)] + [app.login(EMAIL, PASSWORD, CLIENT) for _ in range(2)]
    current = grants[1]
    user_id = current.user_id
    before = position(app)

    # When it changes its password from one of them, keeping it
    app.change_password(
        user_id, PASSWORD, NEW_PASSWORD, OTHER_CLIENT, keep=current.session_id
    )

    # Then the change and the revocation are consecutive events of one save
    events = stored_since(app, before)
    assert names(events) == ["User.PasswordChanged", "User.SessionsRevoked"]
    changed = last(events, User.PasswordChanged)
    revoked = last(events, User.SessionsRevoked)
    assert revoked.originator_version == changed.originator_version + 1
    assert PASSWORDS.verify(NEW_PASSWORD, changed.password_hash)
    assert revoked.reason == "password_changed"
    assert revoked.kept_session_id == current.session_id
    # And the other sessions are over while the kept one rotates
    assert refresh_fails(app, grants[0].refresh_token)
    assert refresh_fails(app, grants[2].refresh_token)
    assert not refresh_fails(app, current.refresh_token)
    # And only the new password logs in
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)
    assert app.login(EMAIL, NEW_PASSWORD, CLIENT).user_id == user_id


def test_changing_the_password_with_nothing_kept_ends_every_session(
    app: AuthApplication,
) -> None:
    # Given a user with a session
    grant = registered(app)

    # When it changes its password keeping nothing
    app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    # Then that session is over too
    revoked = last(stream(app, grant.user_id), User.SessionsRevoked)
    assert revoked.kept_session_id is None
    assert refresh_fails(app, grant.refresh_token)


def test_a_wrong_current_password_changes_nothing_but_counts_a_failure(
    app: AuthApplication,
) -> None:
    # Given a user with a session
    grant = registered(app)
    before = position(app)

    # When it confirms a change with a wrong current password
    with pytest.raises(WrongPasswordError):
        app.change_password(
            grant.user_id, WRONG_PASSWORD, NEW_PASSWORD, CLIENT, keep=grant.session_id
        )

    # Then only a failure is recorded, like a failed login
    events = stored_since(app, before)
    assert sorted(names(events)) == [
        "ClientThrottle.FailureCounted",
        "ClientThrottle.Started",
        "User.LoginFailed",
    ]
    assert last(events, User.LoginFailed).originator_id == grant.user_id
    # And the password and the session are as they were
    assert not refresh_fails(app, grant.refresh_token)
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == grant.user_id
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, NEW_PASSWORD, CLIENT)


def test_a_session_already_ended_by_logging_out_everywhere_is_not_kept(
    app: AuthApplication,
) -> None:
    # Given a session ended by logging out everywhere, and a later one
    old = registered(app)
    app.logout_all(old.user_id, CLIENT)
    later = app.login(EMAIL, PASSWORD, CLIENT)

    # When the password changes with the old session named as the one to keep
    app.change_password(
        old.user_id, PASSWORD, NEW_PASSWORD, CLIENT, keep=old.session_id
    )

    # Then nothing is kept: the old session stays over, and the later one ends too
    revoked = last(stream(app, old.user_id), User.SessionsRevoked)
    assert revoked.reason == "password_changed"
    assert revoked.kept_session_id is None
    assert refresh_fails(app, old.refresh_token)
    assert refresh_fails(app, later.refresh_token)


def test_a_session_already_logged_out_is_not_kept(app: AuthApplication) -> None:
    # Given a session that logged out
    grant = registered(app)
    app.logout(grant.user_id, grant.session_id, CLIENT)

    # When the password changes naming it as the one to keep
    app.change_password(
        grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT, keep=grant.session_id
    )

    # Then nothing is kept
    revoked = last(stream(app, grant.user_id), User.SessionsRevoked)
    assert revoked.kept_session_id is None


def test_a_login_racing_a_password_change_is_refused_on_its_retry(
    app: AuthApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user, and a password change that commits after a login checked the
    # old password
    user_id = registered(app).user_id
    race_first_save(
        monkeypatch,
        app,
        lambda: app.change_password(user_id, PASSWORD, NEW_PASSWORD, OTHER_CLIENT),
    )
    before = position(app)

    # When the login saves
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)

    # Then it was decided again on the new password and opened nothing
    assert names(stored_since(app, before)) == [
        "User.PasswordChanged",
        "User.SessionsRevoked",
    ]


def test_sessions_revoked_before_a_snapshot_of_the_user_stay_revoked(
    app: AuthApplication,
) -> None:
    # Given a user whose stream passes its snapshot interval (50) after a revocation
    old = registered(app)
    kept = app.login(EMAIL, PASSWORD, CLIENT)
    app.change_password(
        old.user_id, PASSWORD, NEW_PASSWORD, CLIENT, keep=kept.session_id
    )
    for _ in range(50):
        app.login(EMAIL, NEW_PASSWORD, CLIENT)
    assert app.snapshots is not None
    assert [s.originator_version for s in app.snapshots.get(old.user_id)] == [50]

    # When the user is read from its snapshot
    user = app.get_user(old.user_id)

    # Then it still knows which sessions ended and which was kept
    assert user.version > 50
    assert user.has_revoked(old.session_id, 2)
    assert not user.has_revoked(kept.session_id, 3)
    assert refresh_fails(app, old.refresh_token)
    assert not refresh_fails(app, kept.refresh_token)


# Mailed links --------------------------------------------------------------


def forgot(mail: AccountMail, email: str, client: Client) -> None:
    """Ask for a reset link, and dispatch the ask, as the mailer's round does."""
    mail.forgot_password(email, client)
    mail.dispatch_resets(0)


def mailed_token(app: AuthApplication, user_id: UUID, purpose: str) -> str:
    """Mint the newest mailed link's token again, as the outbox does."""
    events = stream(app, user_id)
    requested: User.VerificationRequested | User.PasswordResetRequested
    if purpose == VERIFY:
        requested = last(events, User.VerificationRequested)
    else:
        requested = last(events, User.PasswordResetRequested)
    return MAIL_TOKENS.mint(purpose, user_id, requested.request_id)


def test_a_verification_link_verifies_the_email_once(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a user who asked for a verification link
    user_id = registered(app).user_id
    before = position(app)
    mail.request_verification(user_id, CLIENT)
    requested_events = stored_since(app, before)
    assert sorted(names(requested_events)) == [
        "ClientThrottle.FailureCounted",
        "ClientThrottle.Started",
        "User.VerificationRequested",
    ]
    requested = last(requested_events, User.VerificationRequested)
    token = mailed_token(app, user_id, VERIFY)
    # Only the hash of the token is stored
    assert token not in repr(requested_events)
    assert requested.email == EMAIL

    # When the link is followed
    clock.advance(timedelta(minutes=5))
    before = position(app)
    mail.verify_email(token, CLIENT)

    # Then the email is verified, and the link does not work twice
    assert names(facts_since(app, before)) == ["User.EmailVerified"]
    assert app.get_user(user_id).is_verified
    with pytest.raises(InvalidMailTokenError):
        mail.verify_email(token, CLIENT)


def test_a_reset_token_does_not_verify_an_email(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given a user with a pending verification and a pending reset
    user_id = registered(app).user_id
    mail.request_verification(user_id, CLIENT)
    forgot(mail, EMAIL, CLIENT)
    before = position(app)

    # When the reset link's token is offered as a verification
    with pytest.raises(InvalidMailTokenError):
        mail.verify_email(mailed_token(app, user_id, RESET), CLIENT)

    # Then nothing changes
    assert not facts_since(app, before)
    assert not app.get_user(user_id).is_verified


def test_forgetting_the_password_of_an_unknown_email_does_the_same_work(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given one account
    user_id = registered(app).user_id

    # When a reset is asked for it and for an unknown email, from two addresses,
    # each twice: the second within the cooldown
    def asked(email: str, client: Client) -> list[Event]:
        before = position(app)
        mail.forgot_password(email, client)
        return stored_since(app, before)

    known = [asked(EMAIL, CLIENT) for _ in range(2)]
    unknown = [asked("Nobody@example.com", OTHER_CLIENT) for _ in range(2)]

    # Then the request does the same for both: it counts against the client's
    # address and records the ask under the email's keyed hash, nothing else
    # (the account's stream is not read); within the cooldown only the count
    counted = ["ClientThrottle.FailureCounted"]
    first_ask = [
        "ClientThrottle.Started",
        *counted,
        "ResetAsks.Started",
        "ResetAsks.Asked",
    ]
    assert names(known[0]) == names(unknown[0]) == first_ask
    assert names(known[1]) == names(unknown[1]) == counted
    key = address_hash(ADDRESS_KEY, "nobody@example.com")
    assert {e.originator_id for e in of_type(unknown[0], ResetAsks.Event)} == {
        ResetAsks.create_id(key)
    }

    # When the asks are dispatched, off the request, twice (as after a crash)
    before = position(app)
    assert mail.dispatch_resets(0) == before  # how far it got: all stored then
    mail.dispatch_resets(0)

    # Then the account, and only it, has one reset request; both asks are
    # marked dispatched, so both streams grow alike
    dispatched = stored_since(app, before)
    assert names(dispatched) == [
        "User.PasswordResetRequested",
        "ResetAsks.Dispatched",
        "ResetAsks.Dispatched",
    ]
    assert dispatched[0].originator_id == user_id
    assert {e.originator_id for e in dispatched[1:]} == {
        e.originator_id for e in known[0] + unknown[0] if isinstance(e, ResetAsks.Event)
    }


def test_a_used_reset_link_stays_used_however_often_its_ask_is_dispatched(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given a reset link asked for, dispatched, and used
    user_id = registered(app).user_id
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, user_id, RESET)
    mail.reset_password(token, NEW_PASSWORD, CLIENT)
    before = position(app)

    # When every ask is dispatched again (a lost dispatch position)
    mail.dispatch_resets(0)

    # Then nothing is recorded, and the link still fails
    assert stored_since(app, before) == []
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, "a third passphrase", CLIENT)


def test_an_ask_older_than_a_links_lifetime_is_never_dispatched(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    registered(app)
    mail.forgot_password(EMAIL, CLIENT)
    clock.advance(timedelta(minutes=30))
    before = position(app)

    mail.dispatch_resets(0)

    assert stored_since(app, before) == []


def test_resetting_the_password_ends_every_session_and_works_once(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a user with two sessions who asked for a reset link
    grants = [registered(app), app.login(EMAIL, PASSWORD, CLIENT)]
    user_id = grants[0].user_id
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, user_id, RESET)
    clock.advance(timedelta(minutes=10))
    before = position(app)

    # When the link sets a new password
    mail.reset_password(token, NEW_PASSWORD, OTHER_CLIENT)

    # Then the password changes and every session ends, nothing kept, in one save
    events = facts_since(app, before)
    assert names(events) == ["User.PasswordChanged", "User.SessionsRevoked"]
    revoked = last(events, User.SessionsRevoked)
    assert (revoked.reason, revoked.kept_session_id) == ("password_changed", None)
    for grant in grants:
        assert refresh_fails(app, grant.refresh_token)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, CLIENT)
    assert app.login(EMAIL, NEW_PASSWORD, CLIENT).user_id == user_id

    # And the used link sets no other password: refused, and (its holder
    # could be telling the password set by it) counted as a guess
    before = position(app)
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, "a third password", CLIENT)
    assert names(facts_since(app, before)) == ["User.LoginFailed"]


@pytest.mark.parametrize(
    "token_of",
    [
        lambda _: "not-a-token",
        lambda _: f"{uuid4().hex}.{uuid4().hex}.forged",
        lambda user_id: f"{user_id.hex}.{uuid4().hex}.forged",
        lambda user_id: MAIL_TOKENS.mint(RESET, user_id, uuid4()),
        lambda user_id: HmacMailTokens(b"another secret").mint(RESET, user_id, uuid4()),
    ],
    ids=["garbage", "unknown-user", "forged", "other-request", "other-secret"],
)
def test_an_unknown_reset_token_is_refused_and_stores_nothing(
    app: AuthApplication, mail: AccountMail, token_of: Callable[[UUID], str]
) -> None:
    # Given a user with a pending reset and a session
    grant = registered(app)
    forgot(mail, EMAIL, CLIENT)
    before = position(app)

    # When a token that is not the mailed one is used
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token_of(grant.user_id), NEW_PASSWORD, CLIENT)

    # Then nothing is stored and the session lives
    assert not facts_since(app, before)
    assert not refresh_fails(app, grant.refresh_token)


def test_a_reset_link_expires(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a reset link, which lives 30 minutes by default
    grant = registered(app)
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, grant.user_id, RESET)

    # When it is followed 30 minutes later
    clock.advance(timedelta(minutes=30))
    before = position(app)

    # Then it is refused, and the sessions and password are untouched
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, NEW_PASSWORD, CLIENT)
    assert not facts_since(app, before)
    assert not refresh_fails(app, grant.refresh_token)


def test_a_new_reset_request_replaces_the_link_but_not_within_the_cooldown(
    app: AuthApplication, mail: AccountMail, clock: FakeClock
) -> None:
    # Given a reset link
    user_id = registered(app).user_id
    forgot(mail, EMAIL, CLIENT)
    first = mailed_token(app, user_id, RESET)

    # When another is asked for within the one-minute cooldown
    clock.advance(timedelta(seconds=59))
    forgot(mail, EMAIL, CLIENT)

    # Then no new link is recorded (silently: the answer must not differ)
    assert mailed_token(app, user_id, RESET) == first

    # When another is asked for after the cooldown
    clock.advance(timedelta(seconds=1))
    forgot(mail, EMAIL, CLIENT)

    # Then the new link replaces the first one
    second = mailed_token(app, user_id, RESET)
    assert second != first
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(first, NEW_PASSWORD, CLIENT)
    mail.reset_password(second, NEW_PASSWORD, CLIENT)
    assert app.login(EMAIL, NEW_PASSWORD, CLIENT).user_id == user_id


@pytest.mark.parametrize("email", [EMAIL, "nobody@example.com"])
def test_an_address_asking_for_too_many_links_is_blocked_whether_or_not_known(
    app: AuthApplication, email: str
) -> None:
    # Given an address limited to three mail requests, and one account
    user_id = registered(app).user_id
    mail = AccountMail(app, MAIL_TOKENS, per_address=ThrottlePolicy(max_attempts=3))
    for _ in range(3):
        forgot(mail, email, CLIENT)
    before = position(app)

    # When it asks a fourth time
    # Then it must wait, alike for a known and an unknown email, and nothing is
    # stored
    with pytest.raises(TooManyAttemptsError):
        forgot(mail, email, CLIENT)
    assert position(app) == before
    # But the login throttle of the address is a separate count
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id


def test_a_password_change_makes_an_outstanding_reset_link_worthless(
    app: AuthApplication, mail: AccountMail
) -> None:
    # Given a reset link, and then a password change
    user_id = registered(app).user_id
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, user_id, RESET)
    app.change_password(user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    # When the link is followed
    # Then it is refused and the changed password stands
    with pytest.raises(InvalidMailTokenError):
        mail.reset_password(token, "a third password", CLIENT)
    assert app.login(EMAIL, NEW_PASSWORD, CLIENT).user_id == user_id


# Retrying lost races -------------------------------------------------------


def test_a_command_that_loses_a_race_is_decided_again_on_the_state_that_won(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a user, and a concurrent role change saved after the command read it
    user_id = registered(app).user_id
    seen_roles: list[Role] = []

    def verify(user: User) -> None:
        seen_roles.append(Role(user.role))
        if len(seen_roles) == 1:
            other_copy = app.get_user(user_id)
            other_copy.change_role(Role.ADMIN, None, clock.now)
            app.save(other_copy)
        user.verify_email(clock.now)

    # When the command saves
    app.update_user(user_id, verify)

    # Then it ran again on the fresh user, and the stored state has both changes
    assert seen_roles == [Role.USER, Role.ADMIN]
    assert names(stream(app, user_id))[-2:] == [
        "User.RoleChanged",
        "User.EmailVerified",
    ]
    user = app.get_user(user_id)
    assert (user.role, user.is_verified) == (Role.ADMIN, True)


def test_a_command_that_loses_every_race_raises_conflict_error(
    app: AuthApplication, clock: FakeClock
) -> None:
    # Given a user, and a concurrent writer that always saves first
    user_id = registered(app).user_id
    attempts: list[int] = []

    def lose() -> None:
        attempts.append(len(attempts) + 1)
        user = app.get_user(user_id)
        other_copy = app.get_user(user_id)
        other_copy.record_login(uuid4(), CLIENT.ip, CLIENT.user_agent, clock.now)
        app.save(other_copy)
        user.verify_email(clock.now)
        app.save(user)

    # When the command is retried three times
    with pytest.raises(ConflictError):
        retry_on_conflict(lose, attempts=3)

    # Then it was tried three times, the winners are stored and its change is not
    assert attempts == [1, 2, 3]
    user_events = names(stream(app, user_id))
    assert user_events.count("User.LoggedIn") == 1 + 3
    assert "User.EmailVerified" not in user_events


def test_retrying_returns_the_first_result_that_wins() -> None:
    # Given a command that loses twice, then wins
    outcomes: Iterator[bool] = iter([False, False, True])

    def command() -> str:
        if not next(outcomes):
            raise IntegrityError
        return "won"

    # When it is retried
    # Then its winning result comes back, after exactly three runs
    assert retry_on_conflict(command, attempts=3) == "won"
    assert next(outcomes, None) is None
