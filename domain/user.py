"""User aggregate: registration, credentials, role and the brute-force lock."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from domain.errors import (
    EmailAlreadyVerifiedError,
    InvalidCodeError,
    InvalidMailTokenError,
    InvalidMfaChallengeError,
    MfaStateError,
    RequestedTooSoonError,
)
from domain.values import (
    Factor,
    FailuresClearedBy,
    LoginFailure,
    RevocationReason,
    Role,
)

if TYPE_CHECKING:
    from domain.session import Session


@dataclass(frozen=True)
class MailPolicy:
    """How long mailed links live, and how often one may be asked for."""

    verification_ttl: timedelta = timedelta(hours=24)
    reset_ttl: timedelta = timedelta(minutes=30)
    cooldown: timedelta = timedelta(minutes=1)

    def check_not_too_soon(self, requested_at: datetime | None, now: datetime) -> None:
        """Refuse another link within the cooldown of the last one asked for."""
        if requested_at is not None and now - requested_at < self.cooldown:
            wait = requested_at + self.cooldown - now
            raise RequestedTooSoonError(math.ceil(wait.total_seconds()))


@dataclass(frozen=True)
class LockoutPolicy:
    """Lock an account after `max_failures` within `window`, for a doubling period.

    The period doubles while lockouts follow each other; one that comes
    `decay` or more after the previous lockout is a first one again.
    """

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    first_lock: timedelta = timedelta(minutes=1)
    longest_lock: timedelta = timedelta(hours=1)
    decay: timedelta = timedelta(hours=24)

    def lock_period(self, earlier_lockouts: int) -> timedelta:
        """Double the lock with every lockout, capped so it can never overflow."""
        doublings = min(earlier_lockouts, 20)
        return min(self.first_lock * (1 << doublings), self.longest_lock)


@dataclass(frozen=True)
class MfaPolicy:
    """How long the token of a password step lives, and how many wrong codes
    it takes before it dies."""

    challenge_ttl: timedelta = timedelta(minutes=5)
    challenge_max_failures: int = 5


# Logins waiting for a code that an account keeps (the newest): each right
# password adds one, and an aggregate must not grow without bound.
MAX_OPEN_CHALLENGES = 5


@dataclass(frozen=True)
class CodeProof:
    """What a right code proved: a TOTP code of `step`, or the recovery code
    stored as `recovery_code_hash` (a slot of a replaced set proves nothing)."""

    factor: Factor
    step: int | None = None
    recovery_code_hash: str | None = None


class User(Aggregate):
    TOPIC = "authledger:User"
    # Version 2 knows its latest session revocation (snapshots of version 1
    # do not): upcast_v1_v2 restores them as "never revoked". Version 3 knows
    # when it was last locked out: older snapshots restore as "long ago".
    # Version 4 has a second factor: older snapshots restore without one.
    class_version = 4

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["sessions_revoked_at"] = None
        state["kept_session_id"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        # A lock still recorded counts as recent (its end stands for its start,
        # the safe side); one already released lets the periods start again.
        state["last_locked_at"] = state.get("locked_until")

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        state.update(totp=None, pending_totp=None, recovery_code_hashes=[])
        state["challenges"] = {}

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:User.Created"

    class Registered(Created):
        TOPIC = "authledger:User.Registered"
        email: str
        password_hash: str
        role: str

    class EmailVerified(Event):
        TOPIC = "authledger:User.EmailVerified"

        def apply(self, user: User) -> None:
            user.is_verified = True
            user.pending_verification = None

    class VerificationRequested(Event):
        TOPIC = "authledger:User.VerificationRequested"
        request_id: UUID
        email: str
        token_hash: str
        expires_at: datetime

        def apply(self, user: User) -> None:
            user.pending_verification = _pending(self)

    class PasswordResetRequested(Event):
        TOPIC = "authledger:User.PasswordResetRequested"
        request_id: UUID
        email: str
        token_hash: str
        expires_at: datetime

        def apply(self, user: User) -> None:
            user.pending_reset = _pending(self)

    class PasswordChanged(Event):
        TOPIC = "authledger:User.PasswordChanged"
        password_hash: str

        def apply(self, user: User) -> None:
            user.password_hash = self.password_hash
            # Any new password makes an outstanding reset link worthless, and
            # a login that proved the old one cannot finish with a code.
            user.pending_reset = None
            user.challenges = {}

    class RoleChanged(Event):
        TOPIC = "authledger:User.RoleChanged"
        role: str
        changed_by: UUID | None

        def apply(self, user: User) -> None:
            user.role = Role(self.role)

    class LoggedIn(Event):
        TOPIC = "authledger:User.LoggedIn"
        session_id: UUID
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.last_login_at = self.timestamp

    class SessionsRevoked(Event):
        """Every session opened before this event in the user's stream is over,
        but `kept_session_id` (the caller's, after a password change)."""

        TOPIC = "authledger:User.SessionsRevoked"
        reason: str
        kept_session_id: UUID | None
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.sessions_revoked_at = self.originator_version
            user.kept_session_id = self.kept_session_id
            user.challenges = {}  # nor any login waiting for its code

    class LoginFailed(Event):
        TOPIC = "authledger:User.LoginFailed"
        ip: str
        user_agent: str
        reason: str
        failures_in_window: int

        def apply(self, user: User) -> None:
            if self.failures_in_window == 1:
                user.window_started_at = self.timestamp
            user.failed_logins = self.failures_in_window

    class LockedOut(Event):
        TOPIC = "authledger:User.LockedOut"
        # Version 2 says how many lockouts in a row this one is; those of
        # version 1 (before lockouts decayed) counted every one.
        class_version = 2
        until: datetime
        lockouts: int | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lockouts"] = None

        def apply(self, user: User) -> None:
            user.locked_until = self.until
            user.lockouts = (
                user.lockouts + 1 if self.lockouts is None else self.lockouts
            )
            user.last_locked_at = self.timestamp
            user.failed_logins = 0

    class FailuresCleared(Event):
        """The failure count (and any lock) is void: the owner proved who they are."""

        TOPIC = "authledger:User.FailuresCleared"
        reason: str
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.failed_logins = 0
            user.window_started_at = None
            user.locked_until = None

    class Unlocked(Event):
        TOPIC = "authledger:User.Unlocked"
        unlocked_by: UUID | None

        def apply(self, user: User) -> None:
            user.locked_until = None
            user.failed_logins = 0
            if self.unlocked_by is not None:
                user.lockouts = 0

    class Disabled(Event):
        """The account may not log in until enabled again; every session it
        has ends in the same save (a SessionsRevoked beside it)."""

        TOPIC = "authledger:User.Disabled"
        disabled_by: UUID | None

        def apply(self, user: User) -> None:
            user.is_disabled = True

    class Enabled(Event):
        TOPIC = "authledger:User.Enabled"
        enabled_by: UUID | None

        def apply(self, user: User) -> None:
            user.is_disabled = False

    class Erased(Event):
        """The account is forgotten: it holds no address and logs in no more,
        its sessions ended in the same save. Its events stay, as the audit
        trail's shape; this one carries nothing personal."""

        TOPIC = "authledger:User.Erased"
        erased_by: UUID | None

        def apply(self, user: User) -> None:
            user.is_erased = True

    class TotpEnrolmentStarted(Event):
        """A TOTP secret was handed out; nothing is enforced until confirmed.
        `totp_secret` is sealed with the account's data key, as personal data is."""

        TOPIC = "authledger:User.TotpEnrolmentStarted"
        totp_secret: str
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.pending_totp = {"totp_secret": self.totp_secret}

    class MfaEnabled(Event):
        """The enrolment's first code was right: logins need a second factor."""

        TOPIC = "authledger:User.MfaEnabled"
        recovery_code_hashes: list[str]
        step: int
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            assert user.pending_totp is not None  # noqa: S101  (enable checks it)
            user.totp = {**user.pending_totp, "last_step": self.step}
            user.pending_totp = None
            user.recovery_code_hashes = list(self.recovery_code_hashes)

    class RecoveryCodesRegenerated(Event):
        TOPIC = "authledger:User.RecoveryCodesRegenerated"
        recovery_code_hashes: list[str]
        step: int
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.recovery_code_hashes = list(self.recovery_code_hashes)
            user.used_step(self.step)

    class MfaChallenged(Event):
        """The password was right; a second factor is asked for. Only the
        hash of the challenge's token is kept."""

        TOPIC = "authledger:User.MfaChallenged"
        challenge_hash: str
        expires_at: datetime
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            waiting = [
                (key, challenge)
                for key, challenge in user.challenges.items()
                if challenge["expires_at"] > self.timestamp
            ]
            waiting.append(
                (self.challenge_hash, {"expires_at": self.expires_at, "failures": 0})
            )
            user.challenges = dict(waiting[-MAX_OPEN_CHALLENGES:])

    class MfaChallengePassed(Event):
        """The second factor was right: the challenge is spent, a session opens."""

        TOPIC = "authledger:User.MfaChallengePassed"
        challenge_hash: str
        factor: str
        step: int | None  # a TOTP code's: no code of it or before works again
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.challenges.pop(self.challenge_hash, None)
            if self.step is not None:
                user.used_step(self.step)

    class MfaChallengeFailed(LoginFailed):
        """A wrong code for a challenge: it counts toward the lock as a wrong
        password does, and toward the challenge's own limit."""

        TOPIC = "authledger:User.MfaChallengeFailed"
        challenge_hash: str

        def apply(self, user: User) -> None:
            super().apply(user)
            challenge = user.challenges.get(self.challenge_hash)
            if challenge is not None:
                challenge["failures"] += 1

    class RecoveryCodeUsed(Event):
        TOPIC = "authledger:User.RecoveryCodeUsed"
        slot: int
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.recovery_code_hashes[self.slot] = ""

    class MfaDisabled(Event):
        """A second factor is no longer asked for: by the owner (with password
        and code) or reset by an admin (`disabled_by` names who)."""

        TOPIC = "authledger:User.MfaDisabled"
        disabled_by: UUID | None
        ip: str
        user_agent: str

        def apply(self, user: User) -> None:
            user.totp = None
            user.pending_totp = None
            user.recovery_code_hashes = []
            user.challenges = {}

    # Class defaults: snapshots taken before accounts could be disabled or
    # erased lack them.
    is_disabled = False
    is_erased = False

    def __init__(self, email: str, password_hash: str, role: str) -> None:
        self.email = email
        self.password_hash = password_hash
        self.role = Role(role)
        self.is_verified = False
        self.failed_logins = 0
        self.window_started_at: datetime | None = None
        self.locked_until: datetime | None = None
        self.lockouts = 0
        self.last_locked_at: datetime | None = None
        self.last_login_at: datetime | None = None
        self.pending_verification: dict[str, Any] | None = None
        self.pending_reset: dict[str, Any] | None = None
        self.sessions_revoked_at: int | None = None
        self.kept_session_id: UUID | None = None
        self.totp: dict[str, Any] | None = None  # its secret, its last step used
        self.pending_totp: dict[str, Any] | None = None
        self.recovery_code_hashes: list[str] = []  # "" for one used
        self.challenges: dict[str, dict[str, Any]] = {}  # by their token's hash

    @classmethod
    def register(
        cls, email: str, password_hash: str, role: Role, now: datetime
    ) -> User:
        """Register a user; `email` must already be normalised."""
        return cls._create(
            cls.Registered,
            id=uuid4(),
            timestamp=now,
            email=email,
            password_hash=password_hash,
            role=role.value,
        )

    def verify_email(self, now: datetime) -> None:
        if not self.is_verified:
            self.trigger_event(self.EmailVerified, timestamp=now)

    def request_verification(
        self, request_id: UUID, token_hash: str, policy: MailPolicy, now: datetime
    ) -> None:
        """Record that a verification link is mailed; it replaces any earlier one."""
        if self.is_verified:
            raise EmailAlreadyVerifiedError(self.id)
        policy.check_not_too_soon(_requested_at(self.pending_verification), now)
        self.trigger_event(
            self.VerificationRequested,
            timestamp=now,
            request_id=request_id,
            email=self.email,
            token_hash=token_hash,
            expires_at=now + policy.verification_ttl,
        )

    def verify_email_with(self, token_hash: str, now: datetime) -> None:
        """Verify the email with the mailed token: once, before it expires."""
        _check_token(self.pending_verification, token_hash, now)
        self.trigger_event(self.EmailVerified, timestamp=now)

    def request_password_reset(
        self, request_id: UUID, token_hash: str, policy: MailPolicy, now: datetime
    ) -> None:
        """Record that a reset link is mailed; it replaces any earlier one."""
        policy.check_not_too_soon(_requested_at(self.pending_reset), now)
        self.trigger_event(
            self.PasswordResetRequested,
            timestamp=now,
            request_id=request_id,
            email=self.email,
            token_hash=token_hash,
            expires_at=now + policy.reset_ttl,
        )

    def reset_password(
        self,
        token_hash: str,
        password_hash: str,
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """Set a new password with the mailed token: once, before it expires.

        Following the link proves the mailbox: any lock and failure count end.
        """
        self.check_reset_token(token_hash, now)
        self.change_password(password_hash, now)
        self.clear_failures(FailuresClearedBy.PASSWORD_RESET, ip, user_agent, now)

    def check_reset_token(self, token_hash: str, now: datetime) -> None:
        """Refuse a token that is not the pending reset's, or has expired."""
        _check_token(self.pending_reset, token_hash, now)

    def clear_failures(
        self, reason: FailuresClearedBy, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Void the failure count and any lock, if there is anything to void."""
        if self.failed_logins or self.locked_until is not None:
            self.trigger_event(
                self.FailuresCleared,
                timestamp=now,
                reason=reason.value,
                ip=ip,
                user_agent=user_agent,
            )

    def change_password(self, password_hash: str, now: datetime) -> None:
        self.trigger_event(
            self.PasswordChanged, timestamp=now, password_hash=password_hash
        )

    def change_role(self, role: Role, changed_by: UUID | None, now: datetime) -> None:
        if role != self.role:
            self.trigger_event(
                self.RoleChanged, timestamp=now, role=role.value, changed_by=changed_by
            )

    def record_login(
        self, session_id: UUID, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Note the session a login opened: the user's stream indexes its sessions."""
        self.trigger_event(
            self.LoggedIn,
            timestamp=now,
            session_id=session_id,
            ip=ip,
            user_agent=user_agent,
        )

    def revoke_sessions(
        self,
        reason: RevocationReason,
        keep: Session | None,
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """End every session opened so far, except `keep` if it is still open.

        One event on the user, whatever the number of sessions: it needs no
        session's version, so racing refreshes cannot make it fail, and logins
        racing it are ordered by the user's version (before it, or after it).
        """
        if keep is not None and (
            keep.user_id != self.id
            or keep.is_revoked
            or self.has_revoked(keep.id, keep.login_version)
        ):
            keep = None
        self.trigger_event(
            self.SessionsRevoked,
            timestamp=now,
            reason=reason.value,
            kept_session_id=keep.id if keep else None,
            ip=ip,
            user_agent=user_agent,
        )

    def has_revoked(self, session_id: UUID, login_version: int) -> bool:
        """Whether a revocation after the login at `login_version` ended the session."""
        return (
            self.sessions_revoked_at is not None
            and login_version < self.sessions_revoked_at
            and session_id != self.kept_session_id
        )

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def release_expired_lock(self, now: datetime) -> None:
        """Record that a lock has run out, so the timeline shows when it ended."""
        if self.locked_until is not None and not self.is_locked(now):
            self.trigger_event(self.Unlocked, timestamp=now, unlocked_by=None)

    @property
    def is_admin(self) -> bool:
        # A snapshot restores the role as a plain str: compare it as a Role.
        return Role(self.role) is Role.ADMIN

    def disable(
        self, disabled_by: UUID | None, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Refuse the account's logins and end all its sessions at once."""
        if self.is_disabled:
            return
        self.trigger_event(self.Disabled, timestamp=now, disabled_by=disabled_by)
        self.revoke_sessions(RevocationReason.DISABLED, None, ip, user_agent, now)

    def erase(
        self, erased_by: UUID | None, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Forget the account: every session ends, then the erasure itself."""
        if self.is_erased:
            return
        self.revoke_sessions(RevocationReason.ERASED, None, ip, user_agent, now)
        self.trigger_event(self.Erased, timestamp=now, erased_by=erased_by)

    def enable(self, enabled_by: UUID | None, now: datetime) -> None:
        if self.is_disabled:
            self.trigger_event(self.Enabled, timestamp=now, enabled_by=enabled_by)

    def unlock(self, unlocked_by: UUID | None, now: datetime) -> None:
        if self.locked_until is not None or self.failed_logins:
            self.trigger_event(self.Unlocked, timestamp=now, unlocked_by=unlocked_by)

    # Second factor -------------------------------------------------------

    @property
    def mfa_enabled(self) -> bool:
        return self.totp is not None

    def used_step(self, step: int) -> None:
        if self.totp is not None:
            self.totp = {**self.totp, "last_step": max(step, self.totp["last_step"])}

    def start_totp_enrolment(
        self, sealed_secret: str, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Hand out a secret to confirm; it replaces one not confirmed yet."""
        if self.mfa_enabled:
            raise MfaStateError("MFA is on; turn it off to enrol again")
        self.trigger_event(
            self.TotpEnrolmentStarted,
            timestamp=now,
            totp_secret=sealed_secret,
            ip=ip,
            user_agent=user_agent,
        )

    def pending_totp_secret(self) -> str:
        """The secret an enrolment waits to see a code of."""
        if self.mfa_enabled or self.pending_totp is None:
            raise MfaStateError("no enrolment waits to be confirmed")
        secret: str = self.pending_totp["totp_secret"]
        return secret

    def enable_mfa(
        self,
        step: int,
        recovery_code_hashes: list[str],
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """Turn MFA on with the pending secret; `step` is that of the code
        given for it."""
        self.pending_totp_secret()
        self.trigger_event(
            self.MfaEnabled,
            timestamp=now,
            recovery_code_hashes=recovery_code_hashes,
            step=step,
            ip=ip,
            user_agent=user_agent,
        )

    def check_totp_step(self, step: int | None) -> int:
        """The step of a right code not used before; InvalidCodeError else."""
        if self.totp is None:
            raise MfaStateError("MFA is off")
        if step is None or step <= self.totp["last_step"]:
            raise InvalidCodeError
        return step

    def regenerate_recovery_codes(
        self,
        step: int | None,
        recovery_code_hashes: list[str],
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """A new set for a TOTP code; the old set stops working."""
        self.trigger_event(
            self.RecoveryCodesRegenerated,
            timestamp=now,
            recovery_code_hashes=recovery_code_hashes,
            step=self.check_totp_step(step),
            ip=ip,
            user_agent=user_agent,
        )

    def challenge(
        self,
        challenge_hash: str,
        policy: MfaPolicy,
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """The password was right: ask for the second factor."""
        self.trigger_event(
            self.MfaChallenged,
            timestamp=now,
            challenge_hash=challenge_hash,
            expires_at=now + policy.challenge_ttl,
            ip=ip,
            user_agent=user_agent,
        )

    def check_challenge(
        self, challenge_hash: str, policy: MfaPolicy, now: datetime
    ) -> None:
        """Refuse a challenge token used, expired, spent by wrong codes, or
        of an account that may not log in now."""
        challenge = self.challenges.get(challenge_hash)
        if (
            challenge is None
            or now >= challenge["expires_at"]
            or challenge["failures"] >= policy.challenge_max_failures
            or not self.mfa_enabled
            or self.is_disabled
            or self.is_locked(now)
        ):
            raise InvalidMfaChallengeError

    def spend_code(
        self, proof: CodeProof, ip: str, user_agent: str, now: datetime
    ) -> int | None:
        """Check a right code against this state (a TOTP step not used, a
        recovery code still stored) and spend a recovery code; the TOTP step
        to record, if it was one."""
        if proof.recovery_code_hash is None:
            return self.check_totp_step(proof.step)
        self.use_recovery_code(proof.recovery_code_hash, ip, user_agent, now)
        return None

    def pass_challenge(
        self,
        challenge_hash: str,
        proof: CodeProof,
        ip: str,
        user_agent: str,
        now: datetime,
    ) -> None:
        """Spend the challenge with a right code."""
        self.trigger_event(
            self.MfaChallengePassed,
            timestamp=now,
            challenge_hash=challenge_hash,
            factor=proof.factor.value,
            step=self.spend_code(proof, ip, user_agent, now),
            ip=ip,
            user_agent=user_agent,
        )

    def use_recovery_code(
        self, code_hash: str, ip: str, user_agent: str, now: datetime
    ) -> None:
        """Spend the stored recovery code `code_hash` (its slot is recorded)."""
        if not code_hash or code_hash not in self.recovery_code_hashes:
            raise InvalidCodeError
        slot = self.recovery_code_hashes.index(code_hash)
        self.trigger_event(
            self.RecoveryCodeUsed,
            timestamp=now,
            slot=slot,
            ip=ip,
            user_agent=user_agent,
        )

    def disable_mfa(
        self, disabled_by: UUID | None, ip: str, user_agent: str, now: datetime
    ) -> None:
        if not self.mfa_enabled and self.pending_totp is None:
            raise MfaStateError("MFA is off")
        self.trigger_event(
            self.MfaDisabled,
            timestamp=now,
            disabled_by=disabled_by,
            ip=ip,
            user_agent=user_agent,
        )

    def record_failed_login(
        self,
        ip: str,
        user_agent: str,
        policy: LockoutPolicy,
        now: datetime,
        reason: LoginFailure = LoginFailure.BAD_PASSWORD,
        challenge_hash: str | None = None,
    ) -> None:
        """Count a wrong password (or code: `reason`, and the `challenge_hash`
        it was for); lock the account when the window fills up.

        An attempt on an already locked account is recorded but not counted, so a
        lock cannot be extended indefinitely by someone who is already locked out;
        one on a disabled account is recorded as such, and not counted either.
        """
        if self.is_disabled or self.is_locked(now):
            self.trigger_event(
                self.LoginFailed,
                timestamp=now,
                ip=ip,
                user_agent=user_agent,
                reason=(
                    LoginFailure.DISABLED if self.is_disabled else LoginFailure.LOCKED
                ).value,
                failures_in_window=self.failed_logins,
            )
            return
        in_window = (
            self.window_started_at is not None
            and self.failed_logins > 0
            and now - self.window_started_at < policy.window
        )
        failures = self.failed_logins + 1 if in_window else 1
        failed = {
            "timestamp": now,
            "ip": ip,
            "user_agent": user_agent,
            "reason": reason.value,
            "failures_in_window": failures,
        }
        if challenge_hash is None:
            self.trigger_event(self.LoginFailed, **failed)
        else:
            self.trigger_event(
                self.MfaChallengeFailed, challenge_hash=challenge_hash, **failed
            )
        if failures >= policy.max_failures:
            in_a_row = (
                self.last_locked_at is not None
                and now - self.last_locked_at < policy.decay
            )
            earlier = self.lockouts if in_a_row else 0
            until = now + policy.lock_period(earlier)
            self.trigger_event(
                self.LockedOut, timestamp=now, until=until, lockouts=earlier + 1
            )


def _pending(
    event: User.VerificationRequested | User.PasswordResetRequested,
) -> dict[str, Any]:
    return {
        "token_hash": event.token_hash,
        "requested_at": event.timestamp,
        "expires_at": event.expires_at,
    }


def _check_token(
    pending: dict[str, Any] | None, token_hash: str, now: datetime
) -> None:
    if (
        pending is None
        or not hmac.compare_digest(pending["token_hash"], token_hash)
        or now >= pending["expires_at"]
    ):
        raise InvalidMailTokenError


def _requested_at(pending: dict[str, Any] | None) -> datetime | None:
    return None if pending is None else pending["requested_at"]
