"""A user's timeline: which events belong to it, and how each reads to an auditor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.session import Session
from domain.user import User


@dataclass(frozen=True)
class TimelineEntry:
    """One fact of a user's history, as an auditor reads it."""

    at: datetime
    event: str
    session_id: UUID | None
    ip: str
    user_agent: str
    detail: str


# The entries whose detail is personal data (an address): blanked on erasure.
PERSONAL_DETAILS = frozenset({"registered"})


def describe(event: object) -> tuple[str, str]:  # noqa: PLR0911, PLR0912  (a branch per event)
    """Name an event for auditors and summarise what it says beyond common fields."""
    match event:
        case User.Registered():
            return "registered", f"{event.email} as {event.role}"
        case User.MfaChallengeFailed():
            return "mfa_challenge_failed", event.reason
        case User.LoginFailed():
            return "login_failed", event.reason
        case User.LockedOut():
            return "locked_out", f"until {event.until.isoformat()}"
        case User.Unlocked():
            return (
                "unlocked",
                f"by {event.unlocked_by}" if event.unlocked_by else "expired",
            )
        case User.FailuresCleared():
            return "failures_cleared", event.reason
        case User.PasswordChanged():
            return "password_changed", ""
        case User.RoleChanged():
            return "role_changed", f"to {event.role} by {event.changed_by}"
        case User.Disabled():
            return "disabled", f"by {event.disabled_by}"
        case User.Enabled():
            return "enabled", f"by {event.enabled_by}"
        case User.Erased():
            return "erased", f"by {event.erased_by}"
        case User.EmailVerified():
            return "email_verified", ""
        case User.VerificationRequested():
            return "verification_requested", ""
        case User.PasswordResetRequested():
            return "password_reset_requested", ""
        case User.SessionsRevoked():
            kept = f", kept {event.kept_session_id}" if event.kept_session_id else ""
            return "sessions_revoked", f"{event.reason}{kept}"
        case Session.Opened():
            return "session_opened", f"expires {event.expires_at.isoformat()}"
        case Session.TokenRotated():
            return "token_rotated", f"generation {event.generation}"
        case Session.Revoked():
            return "session_revoked", event.reason
    return _described_mfa(event) or (type(event).__name__, "")


def _described_mfa(event: object) -> tuple[str, str] | None:  # noqa: PLR0911  (a branch per event)
    match event:
        case User.TotpEnrolmentStarted():
            return "mfa_enrolment_started", "totp"
        case User.MfaEnabled():
            return "mfa_enabled", "totp"
        case User.MfaChallenged():
            return "mfa_challenged", f"until {event.expires_at.isoformat()}"
        case User.MfaChallengePassed():
            return "mfa_challenge_passed", event.factor
        case User.RecoveryCodeUsed():
            return "recovery_code_used", f"code {event.slot + 1}"
        case User.RecoveryCodesRegenerated():
            return "recovery_codes_regenerated", ""
        case User.MfaDisabled() if event.disabled_by == event.originator_id:
            return "mfa_disabled", "by its owner"
        case User.MfaDisabled():
            return "mfa_reset", f"by {event.disabled_by}"
    return None


def timeline_entry(event: Any) -> tuple[UUID, TimelineEntry] | None:
    """The user whose timeline shows `event`, and its entry; None if none shows it.

    A login shows as its session's opening, so the user's own LoggedIn
    (the index of its sessions) is left out.
    """
    if isinstance(event, Session.Opened | Session.TokenRotated | Session.Revoked):
        user_id, session_id = event.user_id, event.originator_id
    elif isinstance(event, User.Event) and not isinstance(event, User.LoggedIn):
        user_id, session_id = event.originator_id, None
    else:
        return None
    name, detail = describe(event)
    entry = TimelineEntry(
        at=event.timestamp,
        event=name,
        session_id=session_id,
        ip=getattr(event, "ip", ""),
        user_agent=getattr(event, "user_agent", ""),
        detail=detail,
    )
    return user_id, entry
