"""Application errors: what a use case reports to the interfaces."""


class ApplicationError(Exception):
    """A use case could not be carried out."""


class EmailAlreadyRegisteredError(ApplicationError):
    """Another account already holds this email."""


class WeakPasswordError(ApplicationError):
    """The new password is common, or made of the address: `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCredentialsError(ApplicationError):
    """Unknown email, wrong password or locked account: deliberately one error."""


class WrongPasswordError(ApplicationError):
    """The current password given to confirm a change is wrong."""


class RetryLaterError(ApplicationError):
    """Refused for now: the caller may try again in `retry_after_s` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


class TooManyAttemptsError(RetryLaterError):
    """This client address failed too often; it must wait before trying again."""


class HashingBusyError(RetryLaterError):
    """Every password check slot is taken and the queue is full: shed, not queue."""

    def __init__(self) -> None:
        super().__init__(1)


class AccountLockedError(RetryLaterError):
    """The account is locked: even the right password changes nothing until then."""


class InvalidRefreshTokenError(ApplicationError):
    """The refresh token is malformed, unknown, expired, reused or revoked."""


class UserNotFoundError(ApplicationError):
    """No user has this id."""


class SessionNotFoundError(ApplicationError):
    """No active session of this user has this id."""


class ReadModelFailedError(ApplicationError):
    """A consistent read model could not apply a command's events: none is stored."""


class ConflictError(ApplicationError):
    """Concurrent changes to the same aggregate won every retry."""


class RetryKeySpentError(ApplicationError):
    """The retry key's session has moved on (rotated or ended): use a new key."""


class InvalidMailTokenError(ApplicationError):
    """The mailed link's token is unknown, used, superseded or expired."""


class MfaRequiredError(ApplicationError):
    """The password was right; the account asks for its second factor with
    `mfa_token` (for `expires_in` seconds)."""

    def __init__(self, mfa_token: str, expires_in: int) -> None:
        super().__init__("mfa_required")
        self.mfa_token = mfa_token
        self.expires_in = expires_in


class WrongChallengeCodeError(ApplicationError):
    """The code given for an MFA challenge is wrong: it counted as a failure."""


class UnsafeWebhookUrlError(ValueError):
    """The service does not send to this URL, for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CursorBeyondLogError(ValueError):
    """No event of the log is at or after this cursor yet."""
