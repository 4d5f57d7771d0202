"""The second factor: TOTP enrolment, challenges after the password, recovery
codes, and turning it off, each an event on the account's own stream."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from application.errors import (
    TooManyAttemptsError,
    UserNotFoundError,
    WrongChallengeCodeError,
    WrongPasswordError,
)
from application.ports import Tally
from application.values import Client, SessionGrant, hash_token, user_of_mfa_token
from domain.errors import InvalidCodeError, InvalidMfaChallengeError, MfaStateError
from domain.user import CodeProof
from domain.values import Factor, FailuresClearedBy, LoginFailure, RevocationReason

if TYPE_CHECKING:
    from application.auth import AuthApplication
    from application.ports import OneTimeCodes
    from domain.user import User

RECOVERY_CODES = 10
MFA_OUTCOMES: dict[type[Exception], str] = {
    WrongChallengeCodeError: "invalid_code",
    InvalidMfaChallengeError: "invalid_mfa_token",
    TooManyAttemptsError: "throttled",
}
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
        shown this once. A wrong code counts toward the lock."""
        user = self._unlocked(user_id, client)
        step = self._step(user.pending_totp_secret(), normal_code(code))
        if step is None:
            self._count_wrong_code(user_id, client)
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
        return self.app.tallied(
            Tally.MFA_CHECK, MFA_OUTCOMES, lambda: self._verify(mfa_token, code, client)
        )

    def _verify(self, mfa_token: str, code: str, client: Client) -> SessionGrant:
        """Codes for one account are checked one at a time (the account held
        exclusively): each check reads the failures the one before recorded,
        so racing requests get no more guesses than the token's limit. A
        refusal is raised after the block so that the failure it recorded stays.
        """
        user_id = user_of_mfa_token(mfa_token)
        if user_id is None:
            raise InvalidMfaChallengeError
        self.app.check_not_blocked(client.ip, self.app.clock())
        with self.app.exclusively(user_id):
            outcome = self._verified(user_id, hash_token(mfa_token), code, client)
        if isinstance(outcome, WrongChallengeCodeError):
            raise outcome
        return outcome

    def _verified(
        self, user_id: UUID, challenge: str, code: str, client: Client
    ) -> SessionGrant | WrongChallengeCodeError:
        now = self.app.clock()
        policy = self.app.policy.mfa
        try:
            user = self.app.get_user(user_id)
        except UserNotFoundError:
            raise InvalidMfaChallengeError from None
        user.check_challenge(challenge, policy, now)
        proof = self._second_factor(user, code)
        if proof is None:
            self.app.record_failure(
                client,
                user_id,
                now,
                reason=LoginFailure.BAD_CODE,
                challenge_hash=challenge,
            )
            return WrongChallengeCodeError()

        def open_session() -> SessionGrant:
            current = self.app.get_user(user_id)
            current.check_challenge(challenge, policy, now)
            current.pass_challenge(challenge, proof, client.ip, client.user_agent, now)
            current.clear_failures(
                FailuresClearedBy.LOGIN, client.ip, client.user_agent, now
            )
            session, token = self.app.open_session(
                current, client, now, (Factor.PASSWORD, proof.factor)
            )
            self.app.save(current, session)
            return self.app.grant(current, session, token)

        return self.app.attempt(open_session)

    def regenerate_recovery_codes(
        self, user_id: UUID, code: str, client: Client
    ) -> list[str]:
        """A new set of recovery codes for a TOTP code; the old set dies."""
        user = self._unlocked(user_id, client)
        proof = self._second_factor(user, code, recovery_codes=False)
        if proof is None:
            self._count_wrong_code(user_id, client)
            raise InvalidCodeError
        recovery, hashes = self._recovery_codes()
        self.app.update_user(
            user_id,
            lambda current: current.regenerate_recovery_codes(
                proof.step, hashes, client.ip, client.user_agent, self.app.clock()
            ),
        )
        return recovery

    def disable(
        self, user_id: UUID, password: str, code: str, client: Client, keep: UUID
    ) -> None:
        """Turn MFA off with the password and a code (TOTP or recovery);
        every other session of the account ends."""
        user = self._with_password(user_id, password, client)
        proof = self._second_factor(user, code)
        if proof is None:
            self._count_wrong_code(user_id, client)
            raise InvalidCodeError

        def turn_off(current: User) -> None:
            now = self.app.clock()
            current.spend_code(proof, client.ip, client.user_agent, now)
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

    def _unlocked(self, user_id: UUID, client: Client) -> User:
        """The account, unless its lock or the client's throttle holds."""
        now = self.app.clock()
        self.app.check_not_blocked(client.ip, now)
        user = self.app.get_user(user_id)
        self.app.check_not_locked(user, now)
        return user

    def _with_password(self, user_id: UUID, password: str, client: Client) -> User:
        """The account, if `password` is its own; a wrong one counts toward
        the lock, as at login."""
        user = self._unlocked(user_id, client)
        if not self.app.passwords.verify(password, user.password_hash):
            self.app.record_failure(client, user_id, self.app.clock())
            raise WrongPasswordError
        return user

    def _count_wrong_code(self, user_id: UUID, client: Client) -> None:
        now = self.app.clock()
        self.app.record_failure(client, user_id, now, reason=LoginFailure.BAD_CODE)

    def _second_factor(
        self, user: User, code: str, *, recovery_codes: bool = True
    ) -> CodeProof | None:
        """What `code` proves: a TOTP code of a step not used before, or
        (if `recovery_codes`) an unused recovery code; None if neither."""
        if not user.mfa_enabled:
            raise MfaStateError("MFA is off")
        assert user.totp is not None  # noqa: S101  (mfa_enabled says so)
        typed = normal_code(code)
        if TOTP_CODE.fullmatch(typed):
            step = self._step(user.totp["totp_secret"], typed)
            if step is None or step <= user.totp["last_step"]:
                return None
            return CodeProof(Factor.TOTP, step=step)
        if recovery_codes and RECOVERY_CODE.fullmatch(typed):
            slot = int(typed[0])
            hashes = user.recovery_code_hashes
            if slot < len(hashes) and hashes[slot]:
                if self.app.passwords.verify(typed, hashes[slot]):
                    return CodeProof(
                        Factor.RECOVERY_CODE, recovery_code_hash=hashes[slot]
                    )
                return None
        self.app.passwords.verify_dummy(typed)  # as long as a real check
        return None

    def _step(self, secret: str, typed: str) -> int | None:
        """The time step `typed` is a code of (±1 of now), None if none."""
        if not TOTP_CODE.fullmatch(typed):
            return None
        return self.codes.step_of(secret, typed, self.app.clock())

    def _recovery_codes(self) -> tuple[list[str], list[str]]:
        """New codes, and their slow hashes (only those are stored)."""
        codes = [new_recovery_code(slot) for slot in range(RECOVERY_CODES)]
        return codes, [self.app.passwords.hash(normal_code(c)) for c in codes]
