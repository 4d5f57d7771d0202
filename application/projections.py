"""Projections: turn stored events into the rows of the read models."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, TypeVar

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection

from application.account_mail import RESET, VERIFY
from application.read_models import (
    ActiveSessionsView,
    LoginHistoryRow,
    LoginHistoryView,
    MailOutboxView,
    MailRow,
    SessionRow,
    UserDirectoryView,
    UserRow,
)
from application.timeline import PERSONAL_DETAILS, timeline_entry
from domain.session import Session
from domain.user import User
from domain.values import ERASED

TView = TypeVar("TView", bound=TrackingRecorder)


class ProjectionFailedError(Exception):
    """A projection could not apply an event; it stops there until fixed."""


class ReadModelProjection(Projection[TView]):
    """A projection whose failures name the event they stopped at.

    `consistent` says which kind of read model it keeps. A consistent one is
    written in the transaction that appends the events, so a command's
    effects are visible when it returns. A lagging one is written after the
    commit, by one runner per process group, in batches.
    """

    version: ClassVar[int] = 1
    consistent: ClassVar[bool]

    @singledispatchmethod
    @abstractmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        """Apply one event to the view (dispatched on the event's class)."""

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply the event; on failure, say which projection and which position."""
        try:
            self.apply(domain_event, tracking)
        except Exception as error:
            raise ProjectionFailedError(
                f"{self.name} stopped at position {tracking.notification_id}"
                f" ({type(domain_event).__qualname__}): {error!r}"
            ) from error


class UserDirectoryProjection(ReadModelProjection[UserDirectoryView]):
    name = "user_directory"
    # Version 2 shows whether an account is disabled; version 3 whether it
    # has MFA on.
    version = 3
    # Consistent: every response carrying a user and every admin check reads it.
    consistent = True

    @singledispatchmethod
    def apply(self, _: Any, tracking: Tracking) -> None:
        self.view.skip(tracking)

    @apply.register
    def _(self, event: User.Registered, tracking: Tracking) -> None:
        row = UserRow(
            id=event.originator_id,
            email=event.email,
            role=event.role,
            is_verified=False,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            locked_until=None,
            failed_logins=0,
        )
        self.view.add_user(row, tracking)

    @apply.register
    def _(self, event: User.EmailVerified, tracking: Tracking) -> None:
        self._update(event, tracking, is_verified=True)

    @apply.register
    def _(self, event: User.PasswordChanged, tracking: Tracking) -> None:
        self._update(event, tracking)

    @apply.register
    def _(self, event: User.RoleChanged, tracking: Tracking) -> None:
        self._update(event, tracking, role=event.role)

    @apply.register
    def _(self, event: User.LoginFailed, tracking: Tracking) -> None:
        self._update(event, tracking, failed_logins=event.failures_in_window)

    @apply.register
    def _(self, event: User.LockedOut, tracking: Tracking) -> None:
        self._update(event, tracking, locked_until=event.until, failed_logins=0)

    @apply.register
    def _(self, event: User.Unlocked, tracking: Tracking) -> None:
        self._update(event, tracking, locked_until=None, failed_logins=0)

    @apply.register
    def _(self, event: User.FailuresCleared, tracking: Tracking) -> None:
        self._update(event, tracking, locked_until=None, failed_logins=0)

    @apply.register
    def _(self, event: User.Disabled, tracking: Tracking) -> None:
        self._update(event, tracking, disabled=True)

    @apply.register
    def _(self, event: User.Enabled, tracking: Tracking) -> None:
        self._update(event, tracking, disabled=False)

    @apply.register
    def _(self, event: User.Erased, tracking: Tracking) -> None:
        # The row stays (the admins' view of its history), its address goes.
        self._update(event, tracking, email=ERASED)

    @apply.register
    def _(self, event: User.MfaEnabled, tracking: Tracking) -> None:
        self._update(event, tracking, mfa_enabled=True)

    @apply.register
    def _(self, event: User.MfaDisabled, tracking: Tracking) -> None:
        self._update(event, tracking, mfa_enabled=False)

    def _update(self, event: User.Event, tracking: Tracking, **changes: Any) -> None:
        self.view.update_user(event.originator_id, event.timestamp, tracking, **changes)


class UserDirectoryProjectionV2(UserDirectoryProjection):
    """The directory before MFA, kept for one release: written inline while
    version 3 is built beside it (its view keeps no `mfa_enabled`)."""

    name = "user_directory"  # the library names a subclass after itself
    version = 2


class UserDirectoryProjectionV1(UserDirectoryProjection):
    """The directory before accounts could be disabled, kept for one release
    (its view keeps no `disabled` either)."""

    name = "user_directory"
    version = 1


class ActiveSessionsProjection(ReadModelProjection[ActiveSessionsView]):
    name = "active_sessions"
    # Version 2 shows the factors each session's login proved.
    version = 2
    # Consistent: every authenticated request checks its session here, so a
    # logout must be visible to the very next request.
    consistent = True

    @singledispatchmethod
    def apply(self, _: Any, tracking: Tracking) -> None:
        self.view.skip(tracking)

    @apply.register
    def _(self, event: Session.Opened, tracking: Tracking) -> None:
        row = SessionRow(
            session_id=event.originator_id,
            user_id=event.user_id,
            generation=0,
            created_at=event.timestamp,
            last_rotated_at=event.timestamp,
            expires_at=event.expires_at,
            ip=event.ip,
            user_agent=event.user_agent,
            factors=list(event.factors),
        )
        self.view.add_session(row, tracking)

    @apply.register
    def _(self, event: Session.TokenRotated, tracking: Tracking) -> None:
        self.view.rotate_session(
            event.originator_id,
            event.generation,
            event.timestamp,
            event.expires_at,
            tracking,
        )

    @apply.register
    def _(self, event: Session.Revoked, tracking: Tracking) -> None:
        self.view.remove_session(event.originator_id, tracking)

    @apply.register
    def _(self, event: User.SessionsRevoked, tracking: Tracking) -> None:
        # Every session of the user in the table opened before this event (the
        # user's version orders them): all go, but the one kept.
        self.view.remove_sessions_of(
            event.originator_id, event.kept_session_id, tracking
        )


class ActiveSessionsProjectionV1(ActiveSessionsProjection):
    """The sessions before their factors were shown, kept for one release."""

    name = "active_sessions"
    version = 1


class LoginHistoryProjection(ReadModelProjection[LoginHistoryView]):
    """Every user's timeline, as the auditors' replay of the store tells it."""

    name = "login_history"
    version = 2
    # Lagging: the admin history pages and `audit history` may trail by
    # milliseconds; no command decides from it.
    consistent = False

    @singledispatchmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        self._append(event, tracking)

    @apply.register
    def _(self, event: User.Erased, tracking: Tracking) -> None:
        # Blanked alike whatever the rows said, so a rebuild reads the same.
        self.view.anonymise_user(event.originator_id, PERSONAL_DETAILS, tracking)
        self._append(event, tracking)

    def _append(self, event: Any, tracking: Tracking) -> None:
        found = timeline_entry(event)
        if found is None:
            self.view.skip(tracking)
            return
        user_id, entry = found
        row = LoginHistoryRow.of(tracking.notification_id, user_id, entry)
        self.view.append(row, tracking)


class MailOutboxProjection(ReadModelProjection[MailOutboxView]):
    """Mails to send, from the events that ask for them: the transactional outbox."""

    name = "mail_outbox"
    version = 1
    # Lagging: the mailer sends from it in its own time.
    consistent = False

    @singledispatchmethod
    def apply(self, _: Any, tracking: Tracking) -> None:
        self.view.skip(tracking)

    @apply.register
    def _(self, event: User.VerificationRequested, tracking: Tracking) -> None:
        self._add(event, VERIFY, tracking)

    @apply.register
    def _(self, event: User.PasswordResetRequested, tracking: Tracking) -> None:
        self._add(event, RESET, tracking)

    @apply.register
    def _(self, event: User.Erased, tracking: Tracking) -> None:
        self.view.forget_user(event.originator_id, tracking)  # unsent ones too

    def _add(
        self,
        event: User.VerificationRequested | User.PasswordResetRequested,
        purpose: str,
        tracking: Tracking,
    ) -> None:
        row = MailRow(
            position=tracking.notification_id,
            purpose=purpose,
            user_id=event.originator_id,
            request_id=event.request_id,
            email=event.email,
            requested_at=event.timestamp,
            expires_at=event.expires_at,
        )
        self.view.add_mail(row, tracking)
