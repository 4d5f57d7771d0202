"""Value types of the domain: roles, revocation reasons, email addresses."""

from __future__ import annotations

import unicodedata
from enum import StrEnum

import unicodedataplus

from domain.errors import InvalidEmailError, MixedScriptEmailError


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


# What a personal field of an erased account reads as, wherever it is shown.
ERASED = "[erased]"


class RevocationReason(StrEnum):
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REUSE_DETECTED = "reuse_detected"
    EXPIRED = "expired"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105  (a reason, not a secret)
    ADMIN = "admin"
    DISABLED = "disabled"
    ERASED = "erased"
    MFA_DISABLED = "mfa_disabled"


class Factor(StrEnum):
    """What a session's login proved (its `amr`, RFC 8176, says it to others)."""

    PASSWORD = "pwd"  # noqa: S105  (a factor, not a secret)
    TOTP = "otp"
    RECOVERY_CODE = "recovery_code"


class FailuresClearedBy(StrEnum):
    LOGIN = "login"
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a reason, not a secret)


class LoginFailure(StrEnum):
    BAD_PASSWORD = "bad_password"  # noqa: S105  (a reason, not a secret)
    BAD_CODE = "bad_code"
    LOCKED = "locked"
    UNKNOWN_ACCOUNT = "unknown_account"
    DISABLED = "disabled"


def normalise_email(raw: str) -> str:
    """The address as shown: trimmed, NFC, lower-case domain, local part as typed."""
    email = unicodedata.normalize("NFC", raw.strip())
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmailError(raw)
    return f"{local}@{domain.lower()}"


def fold_email(raw: str) -> str:
    """The address as matched: NFKC (full-width forms are the plain ones), case-folded.

    RFC 5321 lets a server tell `Ada` from `ada`; no mail provider in use does,
    and phone keyboards capitalise the first letter: one mailbox, one account.
    """
    return unicodedata.normalize("NFKC", raw.strip()).casefold()


def email_identity(raw: str) -> str:
    """The folded address an account is claimed by; refuses a mixed-script local part.

    A Cyrillic a (U+0430) inside a Latin name looks like another user's address. The
    rule is Unicode's "highly restrictive" one (UTS #39): one script, or Latin
    with the scripts that Chinese, Japanese and Korean names mix.
    """
    email = fold_email(normalise_email(raw))
    local = email.rpartition("@")[0]
    if not _is_single_script(local):
        raise MixedScriptEmailError(raw)
    return email


# Scripts that one writing system mixes (UTS #39 §5.1), each with Latin too.
_WRITING_SYSTEMS = (
    frozenset({"Hani", "Hira", "Kana"}),
    frozenset({"Hani", "Bopo"}),
    frozenset({"Hani", "Hang"}),
)
_ANY_SCRIPT = frozenset({"Zyyy", "Zinh"})  # Common and Inherited: digits, dots


def _is_single_script(text: str) -> bool:
    scripts = [
        frozenset(unicodedataplus.script_extensions(c)) - _ANY_SCRIPT for c in text
    ]
    scripts = [s for s in scripts if s]
    if not scripts or frozenset.intersection(*scripts):
        return True
    others = [s for s in scripts if "Latn" not in s]
    return any(all(s & system for s in others) for system in _WRITING_SYSTEMS)
