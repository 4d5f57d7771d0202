"""Domain errors: the rules an aggregate refuses to break."""


class DomainError(Exception):
    """A command that the aggregate's current state does not allow."""


class InvalidEmailError(DomainError):
    """The text is not an email address."""


class MixedScriptEmailError(InvalidEmailError):
    """The local part mixes scripts, as addresses made to look like others do."""


class SessionRevokedError(DomainError):
    """The session has ended; no token of it is valid any more."""


class UnknownRefreshTokenError(DomainError):
    """The presented refresh token was never issued for this session."""


class EmailAlreadyVerifiedError(DomainError):
    """The email is verified already; there is nothing to confirm."""


class InvalidMailTokenError(DomainError):
    """The mailed token is unknown, used, superseded or expired."""


class RequestedTooSoonError(DomainError):
    """A mail of this kind went out moments ago; wait before asking again."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


class LastAdminError(DomainError):
    """The change would leave no admin: someone must keep the role."""


class EmailTakenError(DomainError):
    """The address is claimed by an account."""


class UnknownSigningKeyError(DomainError):
    """No key of the ring has that id."""


class SigningKeyStateError(DomainError):
    """The key is not in a state that allows this transition."""


class MfaStateError(DomainError):
    """Not now: MFA is on (enrol again after turning it off), or it is off,
    or no enrolment waits to be confirmed; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCodeError(DomainError):
    """The one-time code is wrong, spent, or of a time step already used."""


class InvalidMfaChallengeError(DomainError):
    """The MFA token is unknown, used, expired or spent by wrong codes."""


class UnknownWebhookError(DomainError):
    """No webhook endpoint has that id."""
