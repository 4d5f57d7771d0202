"""Value types of the domain: roles, revocation reasons, email normalisation."""

from __future__ import annotations

import unicodedata
from enum import StrEnum

from domain.errors import InvalidEmailError


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


class RevocationReason(StrEnum):
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REUSE_DETECTED = "reuse_detected"
    EXPIRED = "expired"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105  (a reason, not a secret)
    ADMIN = "admin"


class FailuresClearedBy(StrEnum):
    LOGIN = "login"
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a reason, not a secret)


class LoginFailure(StrEnum):
    BAD_PASSWORD = "bad_password"  # noqa: S105  (a reason, not a secret)
    LOCKED = "locked"
    UNKNOWN_ACCOUNT = "unknown_account"


def normalise_email(raw: str) -> str:
    """Trim, NFC-normalise and lower-case the domain; the local part keeps its case.

    RFC 5321 lets the local part be case-sensitive, so only the domain is folded.
    """
    email = unicodedata.normalize("NFC", raw.strip())
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmailError(raw)
    return f"{local}@{domain.lower()}"
