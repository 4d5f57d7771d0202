"""AuthApplication: every command of the auth service, each one atomic save.

Commands decide from aggregates only, never from read models: the sessions a
revocation ends are those the user's own stream lists before it.
"""

from __future__ import annotations

import contextlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.errors import (
    AccountLockedError,
    ConflictError,
    EmailAlreadyRegisteredError,
    HashingBusyError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    MfaRequiredError,
    RetryKeySpentError,
    SessionNotFoundError,
    TooManyAttemptsError,
    UserNotFoundError,
    WeakPasswordError,
    WrongPasswordError,
)
from application.ports import (
    Clock,
    MapperFactory,
    Meter,
    NoMeter,
    PasswordHasher,
    PasswordScreen,
    Tally,
    utc_now,
)
from application.read_models import UserRow
from application.store import RECENT_EVENTS, RETRY_ATTEMPTS, AuthStore
from application.values import (
    AccountChanges,
    AuthPolicy,
    Client,
    SessionGrant,
    address_name,
    address_streams,
    generation_of,
    hash_token,
    keyed_session,
    new_mfa_token,
    new_refresh_token,
    session_id_of,
    successor_token,
)
from domain.email_claim import EmailClaim
from domain.errors import DomainError, UnknownRefreshTokenError
from domain.session import Session
from domain.user import User
from domain.values import (
    Factor,
    FailuresClearedBy,
    LoginFailure,
    RevocationReason,
    Role,
    email_identity,
    normalise_email,
)

if TYPE_CHECKING:
    from eventsourcing.domain import BaseAggregate
    from eventsourcing.utils import EnvType

    from domain.admin_roster import AdminRoster

T = TypeVar("T")
NO_METER = NoMeter()


class LockedLoginError(InvalidCredentialsError):
    """A login refused for the account's lock: counted apart, then told as
    the one InvalidCredentialsError (it never leaves the application)."""


class ReplayedRefreshTokenError(InvalidRefreshTokenError):
    """A retired refresh token came back and revoked its session: counted
    apart, then told as InvalidRefreshTokenError."""


# Each command's refusals, as its tally names them (first match wins).
LOGIN_OUTCOMES: Mapping[type[Exception], str] = {
    MfaRequiredError: "mfa_required",
    LockedLoginError: "locked",
    InvalidCredentialsError: "invalid_credentials",
    TooManyAttemptsError: "throttled",
    HashingBusyError: "busy",
    RetryKeySpentError: "retry_key_spent",
}
SIGNUP_OUTCOMES: Mapping[type[Exception], str] = {
    EmailAlreadyRegisteredError: "email_taken",
    WeakPasswordError: "weak_password",
    TooManyAttemptsError: "throttled",
    HashingBusyError: "busy",
}
REFRESH_OUTCOMES: Mapping[type[Exception], str] = {
    ReplayedRefreshTokenError: "reused",
    InvalidRefreshTokenError: "invalid",
}


class AuthApplication(AuthStore):
    """Register, log in, refresh, log out and manage accounts, all as events."""

    name = "Auth"

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        mapper_of: MapperFactory,
        passwords: PasswordHasher,
        screen: PasswordScreen,
        refresh_key: bytes,
        address_key: bytes,
        lookup_key: bytes,
        policy: AuthPolicy | None = None,
        clock: Clock = utc_now,
        meter: Meter = NO_METER,
    ) -> None:
        super().__init__(env, mapper_of=mapper_of)
        self.meter = meter
        self.policy = policy or AuthPolicy()
        self.passwords = passwords
        self.screen = screen
        # Refresh tokens after the first are HMACs of their predecessor.
        self.refresh_key = refresh_key
        # Addresses without an account are audited by a keyed hash only.
        self.address_key = address_key
        # Claims and throttles are found by keyed hashes of addresses.
        self.lookup_key = lookup_key
        self.clock = clock

    def hash_new_password(self, password: str, email: str) -> str:
        """Hash a password chosen for `email`'s account, unless it is easily guessed."""
        weakness = self.screen.weakness(password, email)
        if weakness is not None:
            raise WeakPasswordError(weakness)
        return self.passwords.hash(password)

    def tallied(
        self,
        tally: Tally,
        outcomes: Mapping[type[Exception], str],
        command: Callable[[], T],
    ) -> T:
        """Run `command`, counting its outcome: "success" ("replayed" for the
        answer to a retry), the word its error has in `outcomes`, or "error"."""
        try:
            result = command()
        except Exception as error:
            kinds = (word for kind, word in outcomes.items() if isinstance(error, kind))
            self.meter.count(tally, next(kinds, "error"))
            raise
        replayed = isinstance(result, SessionGrant) and result.replayed
        self.meter.count(tally, "replayed" if replayed else "success")
        return result

    # Commands --------------------------------------------------------------

    def register(
        self, email: str, password: str, client: Client, role: Role = Role.USER
    ) -> SessionGrant:
        """Create an account, claim its email and open its first session."""
        return self.tallied(
            Tally.SIGNUP,
            SIGNUP_OUTCOMES,
            lambda: self._register(email, password, client, role),
        )

    def _register(
        self, email: str, password: str, client: Client, role: Role
    ) -> SessionGrant:
        email = normalise_email(email)
        if client.ip:  # a network caller (the CLI's create-admin has no address)
            self.count_attempt(f"signup:{client.ip}", self.policy.signup, self.clock())
        # Cheap refusals first: a taken address costs no bcrypt work.
        claim_id, held = self.standing_claim(email_identity(email))
        if held is not None:
            return self._signup_replayed(email, password, client)
        password_hash = self.hash_new_password(password, email)
        now = self.clock()
        user = User.register(email, password_hash, role, now)
        claim = EmailClaim.claim(claim_id, email, user.id, now)
        session, refresh_token = self.open_session(user, client, now)
        rosters: list[AdminRoster] = []  # an admin is put on it in the same save
        if role is Role.ADMIN:
            roster = self.admin_roster(now)
            roster.appoint(user.id, now)
            rosters.append(roster)
        try:
            self.save(user, claim, session, *rosters)
        except IntegrityError:
            if self.standing_claim(email_identity(email))[1] is not None:
                return self._signup_replayed(email, password, client)
            raise ConflictError from None
        return self.grant(user, session, refresh_token)

    def _signup_replayed(
        self, email: str, password: str, client: Client
    ) -> SessionGrant:
        """The first answer to a signup sent again under its retry key, by the
        one who knows the account's password; any other is a taken email."""
        user = self.find_user_by_email(email) if client.retry_key else None
        if user is None:
            raise EmailAlreadyRegisteredError
        # As careful as a login: a blocked address and a locked account get no
        # answer, a wrong password counts toward the lock; any refusal is the
        # taken email.
        now = self.clock()
        self.check_not_blocked(client.ip, now)
        user.release_expired_lock(now)
        if user.is_locked(now):
            raise EmailAlreadyRegisteredError
        if not self.passwords.verify(password, user.password_hash) or user.is_disabled:
            self.record_failure(client, user.id, now)  # a disabled one is not counted
            raise EmailAlreadyRegisteredError
        if user.mfa_enabled:  # a password alone opens nothing now
            raise EmailAlreadyRegisteredError
        try:
            grant = self._replayed(user, client)
        except RetryKeySpentError:
            raise EmailAlreadyRegisteredError from None
        if grant is None:
            raise EmailAlreadyRegisteredError
        return grant

    def _replayed(self, user: User, client: Client) -> SessionGrant | None:
        """The session a login under the client's retry key opened, if it did.

        Its first token is handed out again only while it is the session's
        current one: once rotated or ended, the key is spent (a conflict).
        """
        session_id, token = keyed_session(self.refresh_key, user.id, client.retry_key)
        session = self._find_session(session_id)
        if session is None:
            return None
        if (
            session.user_id != user.id
            or session.generation != 0
            or _over(session, user)
            or not hmac.compare_digest(session.refresh_token_hash, hash_token(token))
        ):
            raise RetryKeySpentError
        return replace(self.grant(user, session, token), replayed=True)

    def login(self, email: str, password: str, client: Client) -> SessionGrant:
        """Check the password and open a session; every refusal is the same error.

        A blocked client address is refused before any hashing. Otherwise an
        unknown email, a wrong password and a locked account all cost one
        bcrypt check and one save, and end in the same InvalidCredentialsError.
        """
        try:
            return self.tallied(
                Tally.LOGIN,
                LOGIN_OUTCOMES,
                lambda: self._login(email, password, client),
            )
        except LockedLoginError:
            raise InvalidCredentialsError from None

    def _login(self, email: str, password: str, client: Client) -> SessionGrant:
        now = self.clock()
        self.check_not_blocked(client.ip, now)
        user = self.find_user_by_email(email)
        if user is None:
            self.passwords.verify_dummy(password)
            self.record_failure(client, None, now, self.address_name(email))
            raise InvalidCredentialsError
        password_matches = self.passwords.verify(password, user.password_hash)
        user.release_expired_lock(now)
        if not password_matches or user.is_locked(now) or user.is_disabled:
            self.record_failure(client, user.id, now)
            raise LockedLoginError if user.is_locked(now) else InvalidCredentialsError
        checked_hash = user.password_hash

        def open_session() -> SessionGrant | MfaRequiredError:
            # Decide on the user as it is now: a new password, a lock or an
            # erasure since the check refuses this login; another login is harmless.
            try:
                current = self.get_user(user.id)
            except UserNotFoundError:
                raise InvalidCredentialsError from None
            current.release_expired_lock(now)
            if current.is_locked(now):
                raise LockedLoginError
            if current.password_hash != checked_hash or current.is_disabled:
                raise InvalidCredentialsError
            if current.mfa_enabled:  # no session yet, nor a replayed one
                return self._challenge(current, client, now)
            replayed = self._replayed(current, client) if client.retry_key else None
            if replayed is not None:
                return replayed
            current.clear_failures(
                FailuresClearedBy.LOGIN, client.ip, client.user_agent, now
            )
            session, refresh_token = self.open_session(current, client, now)
            self.save(current, session)
            return self.grant(current, session, refresh_token)

        granted = self.attempt(open_session)
        if isinstance(granted, MfaRequiredError):
            raise granted
        return granted

    def _challenge(self, user: User, client: Client, now: datetime) -> MfaRequiredError:
        """Ask for the second factor: the failures so far still count (only a
        passed challenge clears them), so a known password buys no guesses."""
        token = new_mfa_token(user.id)
        policy = self.policy.mfa
        user.challenge(hash_token(token), policy, client.ip, client.user_agent, now)
        self.save(user)
        return MfaRequiredError(token, int(policy.challenge_ttl.total_seconds()))

    def refresh(self, refresh_token: str, client: Client) -> SessionGrant:
        """Rotate a refresh token; a stale one revokes its whole session."""
        try:
            return self.tallied(
                Tally.REFRESH,
                REFRESH_OUTCOMES,
                lambda: self._refresh(refresh_token, client),
            )
        except ReplayedRefreshTokenError:
            raise InvalidRefreshTokenError from None

    def _refresh(self, refresh_token: str, client: Client) -> SessionGrant:
        """Rotate, or revoke on a replay.

        Two requests racing on one token are both decided on the same version of
        the session: one commits, and the loser's save fails on the version. In
        strict mode (no reuse interval) the loser is refused without revoking,
        since it raced rather than replayed; with an interval it is decided again
        on the new version and gets the winner's token, its token's successor.
        """
        session_id = session_id_of(refresh_token)
        presented = hash_token(refresh_token)

        def rotate() -> SessionGrant | RevocationReason:
            session = self._get(session_id, Session, InvalidRefreshTokenError)
            self.behind(session.user_id)  # a revocation in flight ends it first
            user = self._get(session.user_id, User, InvalidRefreshTokenError)
            if user.is_disabled or user.has_revoked(session.id, session.login_version):
                raise InvalidRefreshTokenError
            generation = generation_of(refresh_token)
            if generation is None:  # a token of before generations: where is it?
                is_previous = presented == session.previous_token_hash
                next_generation = session.generation + (0 if is_previous else 1)
            else:
                next_generation = generation + 1
            successor = successor_token(
                self.refresh_key, refresh_token, next_generation
            )
            try:
                changed = session.refresh(
                    presented,
                    hash_token(successor),
                    client.ip,
                    client.user_agent,
                    self.policy.refresh,
                    self.clock(),
                )
            except UnknownRefreshTokenError:
                if not self._issued(session, generation, presented):
                    raise InvalidRefreshTokenError from None
                session.replayed(client.ip, client.user_agent, self.clock())
                changed = True
            except DomainError:
                raise InvalidRefreshTokenError from None
            if changed:
                self.save(session)
            if session.revoked_reason is not None:
                return session.revoked_reason  # for a replay or expiry: stored
            return self.grant(user, session, successor)

        # Strict: a lost race is refused (it raced, it did not replay). With a
        # reuse interval it is decided again on the new version.
        attempts = RETRY_ATTEMPTS if self.policy.refresh.reuse_interval else 1
        try:
            grant = self.attempt(rotate, attempts)
        except ConflictError:
            raise InvalidRefreshTokenError from None
        if grant is RevocationReason.REUSE_DETECTED:
            self.meter.count(Tally.TOKEN_REUSE)
            raise ReplayedRefreshTokenError
        if isinstance(grant, RevocationReason):
            raise InvalidRefreshTokenError
        return grant

    def _issued(
        self, session: Session, generation: int | None, token_hash: str
    ) -> bool:
        """Whether the session once handed out this token, now retired.

        Its generation says which event holds its hash (the session's first
        event is generation 0, each rotation the next): one event read, so a
        forged token costs no more than a real one.
        """
        if generation is None or generation >= session.generation:
            return False
        issued = list(self.events.get(session.id, gt=generation, lte=generation + 1))
        return (
            len(issued) == 1
            and isinstance(issued[0], Session.Opened | Session.TokenRotated)
            and getattr(issued[0], "generation", 0) == generation
            and hmac.compare_digest(issued[0].refresh_token_hash, token_hash)
        )

    def logout(self, user_id: UUID, session_id: UUID, client: Client) -> None:
        """End one of the user's sessions; one already over stays so (a retry
        of the logout that ended it is told it is done)."""

        def revoke() -> None:
            session = self._get(session_id, Session, SessionNotFoundError)
            if session.user_id != user_id:
                raise SessionNotFoundError
            self.behind(user_id)
            if _over(session, self.get_user(user_id)):
                return
            session.revoke(
                RevocationReason.LOGOUT, client.ip, client.user_agent, self.clock()
            )
            self.save(session)

        self.attempt(revoke)

    def has_logged_out(self, user_id: UUID, session_id: UUID) -> bool:
        """Whether the user's session ended by a logout of its own, or by a
        logout everywhere: a retry of either is told it is done."""
        session = self._own_session(user_id, session_id)
        if session is None:
            return False
        if session.revoked_reason == RevocationReason.LOGOUT:
            return True
        return self._ended_by_logout_everywhere(session) is not None

    def has_logged_out_everywhere(self, user_id: UUID, session_id: UUID) -> bool:
        """Whether a logout everywhere ended the user's session moments ago:
        a retry of it is told it is done, and changes nothing."""
        session = self._own_session(user_id, session_id)
        if session is None:
            return False
        ended_at = self._ended_by_logout_everywhere(session)
        return ended_at is not None and (
            self.clock() - ended_at <= self.policy.retry_window
        )

    def _ended_by_logout_everywhere(self, session: Session) -> datetime | None:
        """When a logout everywhere ended the session, if that is what ended it:
        not the session itself, nor another revocation of its user's first."""
        if session.is_revoked:
            return None
        since_login = self.events.get(
            session.user_id, gt=session.login_version, limit=RECENT_EVENTS
        )
        ending = next(
            (e for e in since_login if isinstance(e, User.SessionsRevoked)), None
        )
        if (
            ending is None
            or ending.reason != RevocationReason.LOGOUT_ALL.value
            or ending.kept_session_id == session.id
        ):
            return None
        return ending.timestamp

    def logout_all(self, user_id: UUID, client: Client) -> None:
        """End every session of the user, however many, with one event."""
        self.revoke_sessions(user_id, client, RevocationReason.LOGOUT_ALL)

    def revoke_sessions(
        self,
        user_id: UUID,
        client: Client,
        reason: RevocationReason,
        *,
        keep: UUID | None = None,
        change: Callable[[User], None] | None = None,
    ) -> None:
        """Apply `change` to the user and end its sessions but `keep`, atomically.

        Saved on the user's version: a login racing it lands before it (and is
        ended) or after it (and lives). Logins may race it from many threads,
        so it holds the user's other writers back meanwhile: it cannot starve.
        """

        def revoke() -> None:
            user = self.get_user(user_id)
            if change is not None:
                change(user)
            kept = self._find_session(keep) if keep else None
            now = self.clock()
            user.revoke_sessions(reason, kept, client.ip, client.user_agent, now)
            self.save(user)

        with self.exclusively(user_id):
            self.attempt(revoke)

    def change_password(
        self,
        user_id: UUID,
        current_password: str,
        new_password: str,
        client: Client,
        keep: UUID | None = None,
    ) -> None:
        """Replace the password and end every other session of the user."""
        now = self.clock()
        self.check_not_blocked(client.ip, now)
        user = self.get_user(user_id)
        # Wrong guesses here count toward the lock, and the lock holds here too.
        self.check_not_locked(user, now)
        if not self.passwords.verify(current_password, user.password_hash):
            if self._just_changed_to(user, new_password, now):
                return  # a retry of the change that took effect: it is done
            # A stolen access token must not become a password-guessing oracle.
            self.record_failure(client, user_id, now)
            raise WrongPasswordError
        checked_hash = user.password_hash
        new_hash = self.hash_new_password(new_password, user.email)

        def change(current: User) -> None:
            if current.password_hash != checked_hash:
                raise WrongPasswordError  # changed meanwhile: the one given is old
            self.check_not_locked(current, now)
            current.change_password(new_hash, now)

        self.revoke_sessions(
            user_id, client, RevocationReason.PASSWORD_CHANGED, keep=keep, change=change
        )
        self.meter.count(Tally.PASSWORD_CHANGE, "change")

    def _just_changed_to(self, user: User, password: str, now: datetime) -> bool:
        """Whether the password was changed to `password` moments ago: only
        then is a second password checked, so a stolen access token gains a
        second guess only within that window after a real change."""
        changed = self.newest(user.id, User.PasswordChanged)
        return (
            changed is not None
            and now - changed.timestamp <= self.policy.retry_window
            and self.passwords.verify(password, user.password_hash)
        )

    def expire_sessions(self, session_ids: Iterable[UUID]) -> int:
        """End each session whose token ran out; how many this call ended.

        A sweep finds them in the table; each is decided on its own events, so
        two processes sweeping at once end each session once.
        """
        ended = 0
        for session_id in session_ids:

            def expire(session_id: UUID = session_id) -> bool:
                session = self._get(session_id, Session, SessionNotFoundError)
                session.expire(self.clock())
                if not session.pending_events:
                    return False  # not due, or over already
                self.save(session)
                return True

            with contextlib.suppress(SessionNotFoundError):
                ended += self.attempt(expire)
        return ended

    def verify_email(self, user_id: UUID) -> None:
        """Mark the user's email as verified."""
        self.update_user(user_id, lambda u: u.verify_email(self.clock()))

    def administer(
        self,
        user_id: UUID,
        changes: AccountChanges,
        actor: UUID | None,
        client: Client,
    ) -> None:
        """Apply an admin's changes to an account in one save: all or none.

        Each names `actor`. A disable ends every session in the same save. The
        roster follows: an account is on it while it is an admin and not
        disabled, so the last admin can be neither demoted nor disabled
        (LastAdminError, and nothing of `changes` is stored).
        """

        def change() -> None:
            now = self.clock()
            user = self.get_user(user_id)
            was_listed = _on_roster(user)
            if changes.role is not None:
                user.change_role(changes.role, actor, now)
            if changes.unlock:
                user.unlock(actor, now)
            if changes.disabled is True:
                user.disable(actor, client.ip, client.user_agent, now)
            elif changes.disabled is False:
                user.enable(actor, now)
            changed: list[BaseAggregate[UUID]] = [user]
            if _on_roster(user) != was_listed:
                roster = self.admin_roster(now)
                if was_listed:
                    roster.dismiss(user.id, now)
                else:
                    roster.appoint(user.id, now)
                changed.append(roster)
            self.save(*changed)

        with self.exclusively(user_id):
            self.attempt(change)

    def change_role(self, user_id: UUID, role: Role, changed_by: UUID | None) -> None:
        """Give the user another role (see administer)."""
        self.administer(user_id, AccountChanges(role=role), changed_by, Client())

    def set_disabled(
        self, user_id: UUID, disabled: bool, actor: UUID | None, client: Client
    ) -> None:
        """Disable the account, or enable it again (see administer)."""
        self.administer(user_id, AccountChanges(disabled=disabled), actor, client)

    def erase(self, user_id: UUID, actor: UUID | None, client: Client) -> None:
        """Forget the account: its sessions end, its address claims are
        released (the address may sign up again, as a new account) and read
        models drop its rows. An admin leaves the roster: the last admin cannot
        be erased (LastAdminError)."""

        def forget() -> None:
            now = self.clock()
            user = self._get(user_id, User, UserNotFoundError)
            if user.is_erased:
                return  # a retry of the erasure that took effect: it is done
            changed: list[BaseAggregate[UUID]] = [user]
            if user.is_admin:
                roster = self.admin_roster(now)
                roster.dismiss(user.id, now)
                changed.append(roster)
            for form in EmailClaim.forms_of(user.email):
                _, claim = self.standing_claim(form)
                if claim is not None and claim.user_id == user.id:
                    claim.release(now)
                    changed.append(claim)
            owners = [
                user.id,
                *address_streams(
                    self.address_key, user.email, self.address_era(user.email)
                ),
            ]
            user.erase(actor, client.ip, client.user_agent, now)
            self.save(*changed)
            # In the erasure's own transaction: whoever reads it finds them gone.
            self.personal_data.destroy_keys(owners)

        with self.exclusively(user_id):
            self.attempt(forget)

    def address_name(self, email: str) -> str:
        """The keyed name of the address's own streams now (see address_name)."""
        return address_name(self.address_key, email, self.address_era(email))

    def erase_own(self, user_id: UUID, password: str, client: Client) -> None:
        """Erase one's own account, proving it with the password: a wrong one
        counts toward the lock, as at login."""
        now = self.clock()
        self.check_not_blocked(client.ip, now)
        user = self.get_user(user_id)
        self.check_not_locked(user, now)
        if not self.passwords.verify(password, user.password_hash):
            self.record_failure(client, user_id, now)
            raise WrongPasswordError
        self.erase(user_id, user_id, client)

    def unlock(self, user_id: UUID, unlocked_by: UUID | None) -> None:
        """Lift a brute-force lock by hand (see administer)."""
        self.administer(user_id, AccountChanges(unlock=True), unlocked_by, Client())

    # Helpers ---------------------------------------------------------------

    @staticmethod
    def check_not_locked(user: User, now: datetime) -> None:
        if user.is_locked(now) and user.locked_until is not None:
            wait = user.locked_until - now
            raise AccountLockedError(math.ceil(wait.total_seconds()))

    def record_failure(
        self,
        client: Client,
        user_id: UUID | None,
        now: datetime,
        unknown_address: str | None = None,
        reason: LoginFailure = LoginFailure.BAD_PASSWORD,
        challenge_hash: str | None = None,
    ) -> None:
        """Count a failed login against the address and, if known, the account;
        an attempt on an address without one is recorded under its keyed hash.

        All of it goes in one save, retried on a concurrent change.
        """

        def record() -> bool:
            throttle = self.throttle(client.ip, now)
            throttle.count_attempt(self.policy.throttle, now)
            changed: list[BaseAggregate[UUID]] = [throttle]
            locks = False
            if user_id is not None:
                with contextlib.suppress(UserNotFoundError):  # erased meanwhile
                    user = self.get_user(user_id)
                    user.release_expired_lock(now)
                    was_locked = user.is_locked(now)
                    user.record_failed_login(
                        client.ip,
                        client.user_agent,
                        self.policy.lockout,
                        now,
                        reason,
                        challenge_hash,
                    )
                    changed.append(user)
                    locks = user.is_locked(now) and not was_locked
            if unknown_address is not None:
                target = self.unknown_logins(unknown_address, now)
                target.record(client.ip, client.user_agent, now)
                changed.append(target)
            self.save(*changed)
            return locks

        if self.attempt(record):
            self.meter.count(Tally.LOCKOUT)

    def _own_session(self, user_id: UUID, session_id: UUID) -> Session | None:
        session = self._find_session(session_id)
        return session if session is not None and session.user_id == user_id else None

    def _find_session(self, session_id: UUID) -> Session | None:
        try:
            return self._get(session_id, Session, SessionNotFoundError)
        except SessionNotFoundError:
            return None

    def open_session(
        self,
        user: User,
        client: Client,
        now: datetime,
        factors: tuple[Factor, ...] = (Factor.PASSWORD,),
    ) -> tuple[Session, str]:
        """Open a session and record it on the user, whose stream lists them all."""
        if client.retry_key:
            session_id, token = keyed_session(
                self.refresh_key, user.id, client.retry_key
            )
        else:
            session_id = uuid4()
            token = new_refresh_token(session_id)
        user.record_login(session_id, client.ip, client.user_agent, now)
        session = Session.open(
            session_id,
            user.id,
            user.version,
            hash_token(token),
            client.ip,
            client.user_agent,
            self.policy.refresh,
            now,
            factors,
        )
        return session, token

    def grant(self, user: User, session: Session, refresh_token: str) -> SessionGrant:
        return SessionGrant(
            user=user_row(user),
            session_id=session.id,
            refresh_token=refresh_token,
            refresh_expires_at=session.expires_at,
            factors=tuple(Factor(factor) for factor in session.factors),
        )


def _on_roster(user: User) -> bool:
    """Whether the account belongs on the roster of admins."""
    return user.is_admin and not user.is_disabled


def _over(session: Session, user: User) -> bool:
    """Whether the session has ended, by itself or by a revocation of the user's."""
    return session.is_revoked or user.has_revoked(session.id, session.login_version)


def user_row(user: User) -> UserRow:
    """The user as the directory shows it, from the aggregate itself."""
    return UserRow(
        id=user.id,
        email=user.email,
        # A snapshot restores the role as a plain str: make it a Role again.
        role=Role(user.role).value,
        is_verified=user.is_verified,
        created_at=user.created_on,
        updated_at=user.modified_on,
        locked_until=user.locked_until,
        failed_logins=user.failed_logins,
        disabled=user.is_disabled,
        mfa_enabled=user.mfa_enabled,
    )
