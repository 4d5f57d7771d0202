"""The second factor: TOTP enrolment, challenges after the password, recovery
codes, and turning it off, each an event on the account's own stream."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from application.errors import (
    UserNotFoundError,
    WrongChallengeCodeError,
    WrongPasswordError,
)
from application.values import Client, SessionGrant, hash_token, user_of_mfa_token
from domain.errors import InvalidCodeError, InvalidMfaChallengeError, MfaStateError
from domain.values import Factor, FailuresClearedBy, LoginFailure, RevocationReason

if TYPE_CHECKING:
    from application.auth import AuthApplication
    from application.ports import OneTimeCodes
    from domain.user import User

RECOVERY_CODES = 10
# Of the codes' characters: no 0/o, 1/l/i to misread. Ten of them, 49 bits.
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_CODE = re.compile(r"[0-9][23456789a-hjkmnp-z]{10}")
TOTP_CODE = re.compile(r"[0-9]{6}")


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str


def new_recovery_code(slot: int) -> str:
    """A code that begins with its slot: checking one costs one slow hash."""
    body = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))
    return f"{slot}{body[:5]}-{body[5:]}"


def normal_code(code: str) -> str:
    """A code as typed, without spaces, dashes or capitals."""
    return re.sub(r"[\s-]", "", code).lower()


class SecondFactor:
    """MFA use cases, on the auth application's store and rules."""

    def __init__(self, app: AuthApplication, codes: OneTimeCodes) -> None:
        self.app = app
        self.codes = codes

    def enrol(self, user_id: UUID, password: str, client: Client) -> TotpEnrolment:
        """A new TOTP secret for the account, pending until a code confirms it."""
        user = self._with_password(user_id, password, client)
        secret = self.codes.new_secret()
        self.app.update_user(
            user.id,
            lambda current: current.start_totp_enrolment(
                secret, client.ip, client.user_agent, self.app.clock()
            ),
        )
        return TotpEnrolment(secret, self.codes.uri(secret, user.email))

    def confirm(self, user_id: UUID, code: str, client: Client) -> list[str]:
        """Turn MFA on with a code of the pending secret; the recovery codes,
        shown this once."""
        user = self.app.get_user(user_id)
        if user.pending_totp is None or user.mfa_enabled:
            raise MfaStateError("no enrolment waits to be confirmed")
        secret = user.pending_totp["totp_secret"]
        step = self._step(secret, code)
        if step is None:
            raise InvalidCodeError
        recovery, hashes = self._recovery_codes()

        def enable(current: User) -> None:
            if current.pending_totp != user.pending_totp:
                raise MfaStateError("another enrolment replaced this one")
            current.enable_mfa(
                step, hashes, client.ip, client.user_agent, self.app.clock()
            )

        self.app.update_user(user_id, enable)
        return recovery

    def verify(self, mfa_token: str, code: str, client: Client) -> SessionGrant:
        """Open the session a login's password step asked a second factor for."""
        user_id = user_of_mfa_token(mfa_token)
        if user_id is None:
            raise InvalidMfaChallengeError
        challenge = hash_token(mfa_token)
        now = self.app.clock()
        self.app.check_not_blocked(client.ip, now)
        try:
            user = self.app.get_user(user_id)
        except UserNotFoundError:
            raise InvalidMfaChallengeError from None
        policy = self.app.policy.mfa
        user.check_challenge(challenge, policy, now)
        proved = self._second_factor(user, code)
        if proved is None:
            self.app.record_failure(
                client,
                user_id,
                now,
                reason=LoginFailure.BAD_CODE,
                challenge_hash=challenge,
            )
            raise WrongChallengeCodeError
        factor, used = proved

        def open_session() -> SessionGrant:
            current = self.app.get_user(user_id)
            current.check_challenge(challenge, policy, now)
            current.pass_challenge(
                challenge, factor, used, client.ip, client.user_agent, now
            )
            current.clear_failures(
                FailuresClearedBy.LOGIN, client.ip, client.user_agent, now
            )
            session, token = self.app.open_session(
                current, client, now, (Factor.PASSWORD, factor)
            )
            self.app.save(current, session)
            return self.app.grant(current, session, token)

        try:
            return self.app.attempt(open_session)
        except InvalidCodeError:  # spent by a request racing this one
            raise WrongChallengeCodeError from None

    def regenerate_recovery_codes(
        self, user_id: UUID, code: str, client: Client
    ) -> list[str]:
        """A new set of recovery codes for a TOTP code; the old set dies."""
        user = self.app.get_user(user_id)
        step = self._checked_step(user, code, client)
        recovery, hashes = self._recovery_codes()
        self.app.update_user(
            user_id,
            lambda current: current.regenerate_recovery_codes(
                step, hashes, client.ip, client.user_agent, self.app.clock()
            ),
        )
        return recovery

    def disable(
        self, user_id: UUID, password: str, code: str, client: Client, keep: UUID
    ) -> None:
        """Turn MFA off with the password and a code (TOTP or recovery);
        every other session of the account ends."""
        user = self._with_password(user_id, password, client)
        if not user.mfa_enabled:
            raise MfaStateError("MFA is off")
        proved = self._second_factor(user, code)
        if proved is None:
            self._count_wrong_code(user_id, client)
            raise InvalidCodeError
        factor, used = proved

        def turn_off(current: User) -> None:
            now = self.app.clock()
            if factor is Factor.TOTP:
                current.check_totp_step(used)
            else:
                current.use_recovery_code(used, client.ip, client.user_agent, now)
            current.disable_mfa(user_id, client.ip, client.user_agent, now)

        self.app.revoke_sessions(
            user_id, client, RevocationReason.MFA_DISABLED, keep=keep, change=turn_off
        )

    def reset(self, user_id: UUID, admin: UUID | None, client: Client) -> None:
        """An admin turns the account's MFA off (its owner lost the device)."""
        self.app.update_user(
            user_id,
            lambda current: current.disable_mfa(
                admin, client.ip, client.user_agent, self.app.clock()
            ),
        )

    # Helpers ---------------------------------------------------------------

    def _with_password(self, user_id: UUID, password: str, client: Client) -> User:
        """The account, if `password` is its own; a wrong one counts toward
        the lock, as at login."""
        now = self.app.clock()
        self.app.check_not_blocked(client.ip, now)
        user = self.app.get_user(user_id)
        self.app.check_not_locked(user, now)
        if not self.app.passwords.verify(password, user.password_hash):
            self.app.record_failure(client, user_id, now)
            raise WrongPasswordError
        return user

    def _checked_step(self, user: User, code: str, client: Client) -> int:
        """The step of a right TOTP code not used before; a wrong one counts."""
        if not user.mfa_enabled:
            raise MfaStateError("MFA is off")
        self.app.check_not_locked(user, self.app.clock())
        assert user.totp is not None  # noqa: S101  (mfa_enabled says so)
        step = self._step(user.totp["totp_secret"], code)
        try:
            return user.check_totp_step(step)
        except InvalidCodeError:
            self._count_wrong_code(user.id, client)
            raise

    def _count_wrong_code(self, user_id: UUID, client: Client) -> None:
        now = self.app.clock()
        self.app.record_failure(client, user_id, now, reason=LoginFailure.BAD_CODE)

    def _second_factor(self, user: User, code: str) -> tuple[Factor, int] | None:
        """What `code` proves: a TOTP code of a step not used before, or an
        unused recovery code (its slot); None if neither."""
        typed = normal_code(code)
        if user.totp is not None and TOTP_CODE.fullmatch(typed):
            step = self._step(user.totp["totp_secret"], typed)
            if step is not None and step > user.totp["last_step"]:
                return Factor.TOTP, step
            return None
        if RECOVERY_CODE.fullmatch(typed):
            slot = int(typed[0])
            hashes = user.recovery_code_hashes
            if slot < len(hashes) and hashes[slot]:
                if self.app.passwords.verify(typed, hashes[slot]):
                    return Factor.RECOVERY_CODE, slot
                return None
        self.app.passwords.verify_dummy(typed)  # as long as a real check
        return None

    def _step(self, secret: str, code: str) -> int | None:
        typed = normal_code(code)
        if not TOTP_CODE.fullmatch(typed):
            return None
        return self.codes.step_of(secret, typed, self.app.clock())

    def _recovery_codes(self) -> tuple[list[str], list[str]]:
        """New codes, and their slow hashes (only those are stored)."""
        codes = [new_recovery_code(slot) for slot in range(RECOVERY_CODES)]
        return codes, [self.app.passwords.hash(normal_code(c)) for c in codes]
