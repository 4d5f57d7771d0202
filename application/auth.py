"""AuthApplication: every command of the auth service, each one atomic save."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.errors import (
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    SessionNotFoundError,
    UserNotFoundError,
    WrongPasswordError,
)
from application.ports import Clock, PasswordHasher, ReadModelPositions, utc_now
from application.store import SAVE_ATTEMPTS, AuthStore
from application.values import (
    AuthPolicy,
    Client,
    SessionGrant,
    hash_token,
    new_refresh_token,
    session_id_of,
)
from domain.email_claim import EmailClaim
from domain.errors import DomainError
from domain.session import Session
from domain.user import User
from domain.values import RevocationReason, Role, normalise_email

if TYPE_CHECKING:
    from eventsourcing.domain import BaseAggregate
    from eventsourcing.utils import EnvType

    from application.read_models import ActiveSessionsView

# Some writes race by nature: failed logins from one address (credential
# stuffing), refreshes of one token from several tabs. Each lost race is one
# attempt, so these get more.
RACE_ATTEMPTS = 10


class AuthApplication(AuthStore):
    """Register, log in, refresh, log out and manage accounts, all as events."""

    name = "Auth"

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        passwords: PasswordHasher,
        positions: ReadModelPositions,
        sessions: ActiveSessionsView,
        policy: AuthPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.policy = policy or AuthPolicy()
        super().__init__(env, positions, self.policy.read_model_timeout_s)
        self.passwords = passwords
        self.sessions = sessions
        self.clock = clock

    # Commands --------------------------------------------------------------

    def register(
        self, email: str, password: str, client: Client, role: Role = Role.USER
    ) -> SessionGrant:
        """Create an account, claim its email and open its first session."""
        email = normalise_email(email)
        password_hash = self.passwords.hash(password)
        now = self.clock()
        user = User.register(email, password_hash, role, now)
        claim = EmailClaim.claim(email, user.id, now)
        session, refresh_token = self._open_session(user, client, now)
        try:
            recordings = self.save(user, claim, session)
        except IntegrityError:
            if EmailClaim.create_id(email) in self.repository:
                raise EmailAlreadyRegisteredError from None
            raise
        self._catch_up(recordings)
        return self._grant(user, session, refresh_token)

    def login(self, email: str, password: str, client: Client) -> SessionGrant:
        """Check the password and open a session; every refusal is the same error.

        A blocked client address is refused before any hashing. Otherwise an
        unknown email, a wrong password and a locked account all cost one
        bcrypt check and one save, and end in the same InvalidCredentialsError.
        """
        now = self.clock()
        self.check_not_blocked(client.ip, now)
        user = self.find_user_by_email(email)
        if user is None:
            self.passwords.verify_dummy(password)
            self._record_failure(client, None, now)
            raise InvalidCredentialsError
        password_matches = self.passwords.verify(password, user.password_hash)
        user.release_expired_lock(now)
        if not password_matches or user.is_locked(now):
            self._record_failure(client, user.id, now)
            raise InvalidCredentialsError
        checked_hash = user.password_hash
        for _ in range(SAVE_ATTEMPTS):
            session, refresh_token = self._open_session(user, client, now)
            try:
                recordings = self.save(user, session)
            except IntegrityError:
                # The user changed since the check: another login is harmless,
                # but a new password or a lock must refuse this one.
                user = self._get(user.id, User, InvalidCredentialsError)
                user.release_expired_lock(now)
                if user.password_hash != checked_hash or user.is_locked(now):
                    raise InvalidCredentialsError from None
                continue
            self._catch_up(recordings)
            return self._grant(user, session, refresh_token)
        raise IntegrityError(f"user {user.id} kept changing during login")

    def refresh(self, refresh_token: str, client: Client) -> SessionGrant:
        """Rotate a refresh token; a stale one revokes its whole session.

        Two requests racing on one token are both decided on the same version of
        the session: one commits, and the loser's save fails on the version. In
        strict mode (no reuse interval) the loser is refused without revoking,
        since it raced rather than replayed; with an interval it is decided again
        on the new version and gets a newer token.
        """
        session_id = session_id_of(refresh_token)
        presented = hash_token(refresh_token)
        attempts = RACE_ATTEMPTS if self.policy.refresh.reuse_interval else 1
        for _ in range(attempts):
            session = self._get(session_id, Session, InvalidRefreshTokenError)
            successor = new_refresh_token(session_id)
            try:
                session.refresh(
                    presented,
                    hash_token(successor),
                    client.ip,
                    client.user_agent,
                    self.policy.refresh,
                    self.clock(),
                )
                recordings = self.save(session)
            except DomainError:
                raise InvalidRefreshTokenError from None
            except IntegrityError:
                continue
            self._catch_up(recordings)
            if session.is_revoked:
                raise InvalidRefreshTokenError
            user = self._get(session.user_id, User, InvalidRefreshTokenError)
            return self._grant(user, session, successor)
        raise InvalidRefreshTokenError

    def logout(self, user_id: UUID, session_id: UUID, client: Client) -> None:
        """End one of the user's sessions."""
        session = self._get(session_id, Session, SessionNotFoundError)
        if session.user_id != user_id or session.is_revoked:
            raise SessionNotFoundError
        session.revoke(
            RevocationReason.LOGOUT, client.ip, client.user_agent, self.clock()
        )
        self.commit(session)

    def logout_all(
        self,
        user_id: UUID,
        client: Client,
        reason: RevocationReason = RevocationReason.LOGOUT_ALL,
        keep: UUID | None = None,
    ) -> None:
        """End every session of the user, except `keep`, in one atomic save."""
        self.commit(*self.revoke_all_sessions(user_id, client, reason, keep))

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
        user = self._get(user_id, User, UserNotFoundError)
        if not self.passwords.verify(current_password, user.password_hash):
            # A stolen access token must not become a password-guessing oracle.
            self._record_failure(client, user_id, now)
            raise WrongPasswordError
        user.change_password(self.passwords.hash(new_password), now)
        revoked = self.revoke_all_sessions(
            user_id, client, RevocationReason.PASSWORD_CHANGED, keep
        )
        self.commit(user, *revoked)

    def verify_email(self, user_id: UUID) -> None:
        """Mark the user's email as verified."""
        self.update_user(user_id, lambda u: u.verify_email(self.clock()))

    def change_role(self, user_id: UUID, role: Role, changed_by: UUID | None) -> None:
        """Give the user another role, recording who did it."""
        self.update_user(
            user_id, lambda u: u.change_role(role, changed_by, self.clock())
        )

    def unlock(self, user_id: UUID, unlocked_by: UUID) -> None:
        """Lift a brute-force lock by hand."""
        self.update_user(user_id, lambda u: u.unlock(unlocked_by, self.clock()))

    # Helpers ---------------------------------------------------------------

    def _record_failure(
        self, client: Client, user_id: UUID | None, now: datetime
    ) -> None:
        """Count a failed login against the address and, if known, the account.

        Both counts go in one save, retried on a concurrent change. No
        read-your-writes: the answer does not show the failure.
        """
        for _ in range(RACE_ATTEMPTS):
            throttle = self.throttle(client.ip, now)
            throttle.count_attempt(self.policy.throttle, now)
            changed: list[BaseAggregate[UUID]] = [throttle]
            if user_id is not None:
                user = self._get(user_id, User, UserNotFoundError)
                user.release_expired_lock(now)
                user.record_failed_login(
                    client.ip, client.user_agent, self.policy.lockout, now
                )
                changed.append(user)
            try:
                self.save(*changed)
            except IntegrityError:
                continue
            return
        raise IntegrityError("failed-login counters kept changing")

    def _open_session(
        self, user: User, client: Client, now: datetime
    ) -> tuple[Session, str]:
        """Open a session and record it on the user, whose stream lists them all."""
        session_id = uuid4()
        token = new_refresh_token(session_id)
        session = Session.open(
            session_id,
            user.id,
            hash_token(token),
            client.ip,
            client.user_agent,
            self.policy.refresh,
            now,
        )
        user.record_login(session_id, client.ip, client.user_agent, now)
        return session, token

    def revoke_all_sessions(
        self,
        user_id: UUID,
        client: Client,
        reason: RevocationReason,
        keep: UUID | None,
    ) -> list[Session]:
        """Revoke the user's active sessions (but `keep`); the caller saves them."""
        now = self.clock()
        revoked = []
        for row in self.sessions.list_sessions(user_id, now):
            if row.session_id == keep:
                continue
            session = self._get(row.session_id, Session, SessionNotFoundError)
            if not session.is_revoked:
                session.revoke(reason, client.ip, client.user_agent, now)
                revoked.append(session)
        return revoked

    def _grant(self, user: User, session: Session, refresh_token: str) -> SessionGrant:
        return SessionGrant(
            user_id=user.id,
            session_id=session.id,
            # A snapshot restores the role as a plain str: make it a Role again.
            role=Role(user.role),
            refresh_token=refresh_token,
            refresh_expires_at=session.expires_at,
        )
