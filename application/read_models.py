"""Read-model interfaces: the rows the projections keep and the queries on them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import TrackingRecorder

from application.timeline import TimelineEntry

if TYPE_CHECKING:
    from eventsourcing.persistence import Tracking


@dataclass(frozen=True)
class UserRow:
    id: UUID
    email: str
    role: str
    is_verified: bool
    created_at: datetime
    updated_at: datetime
    locked_until: datetime | None
    failed_logins: int
    disabled: bool = False
    mfa_enabled: bool = False


@dataclass(frozen=True)
class SessionRow:
    session_id: UUID
    user_id: UUID
    generation: int
    created_at: datetime
    last_rotated_at: datetime
    expires_at: datetime
    ip: str
    user_agent: str
    factors: list[str] = field(default_factory=lambda: ["pwd"])


@dataclass(frozen=True)
class LoginHistoryRow:
    position: int
    user_id: UUID
    session_id: UUID | None
    occurred_at: datetime
    kind: str
    detail: str
    ip: str
    user_agent: str

    @classmethod
    def of(cls, position: int, user_id: UUID, entry: TimelineEntry) -> LoginHistoryRow:
        """The row that stores a timeline entry, at its event's position."""
        return cls(
            position=position,
            user_id=user_id,
            session_id=entry.session_id,
            occurred_at=entry.at,
            kind=entry.event,
            detail=entry.detail,
            ip=entry.ip,
            user_agent=entry.user_agent,
        )

    def entry(self) -> TimelineEntry:
        """The timeline entry this row stores."""
        return TimelineEntry(
            at=self.occurred_at,
            event=self.kind,
            session_id=self.session_id,
            ip=self.ip,
            user_agent=self.user_agent,
            detail=self.detail,
        )


class ReadModel(TrackingRecorder, ABC):
    """A table kept by one projection, with its tracking position."""

    @abstractmethod
    def skip(self, tracking: Tracking) -> None:
        """Advance the position past an event this read model ignores."""


class UserDirectoryView(ReadModel):
    """The `users` table."""

    @abstractmethod
    def add_user(self, row: UserRow, tracking: Tracking) -> None:
        """Insert a newly registered user."""

    @abstractmethod
    def update_user(
        self, user_id: UUID, at: datetime, tracking: Tracking, **changes: Any
    ) -> None:
        """Set some columns of a user and its `updated_at`."""

    @abstractmethod
    def get_user(self, user_id: UUID) -> UserRow | None:
        """Find a user by id."""

    @abstractmethod
    def list_users(self, email_prefix: str, limit: int, offset: int) -> list[UserRow]:
        """Page through users in email order."""


class ActiveSessionsView(ReadModel):
    """The `active_sessions` table."""

    @abstractmethod
    def add_session(self, row: SessionRow, tracking: Tracking) -> None:
        """Insert an opened session."""

    @abstractmethod
    def rotate_session(
        self,
        session_id: UUID,
        generation: int,
        at: datetime,
        expires_at: datetime,
        tracking: Tracking,
    ) -> None:
        """Record a rotation of the session's refresh token."""

    @abstractmethod
    def remove_session(self, session_id: UUID, tracking: Tracking) -> None:
        """Delete a revoked session."""

    @abstractmethod
    def remove_sessions_of(
        self, user_id: UUID, kept: UUID | None, tracking: Tracking
    ) -> None:
        """Delete every session of the user but `kept`."""

    @abstractmethod
    def get_session(self, session_id: UUID, now: datetime) -> SessionRow | None:
        """Find an unexpired session."""

    @abstractmethod
    def list_sessions(self, user_id: UUID, now: datetime) -> list[SessionRow]:
        """List a user's unexpired sessions, newest first."""

    @abstractmethod
    def expired(self, now: datetime, limit: int) -> list[UUID]:
        """Sessions still listed whose token ran out by `now`, oldest first."""


class LoginHistoryView(ReadModel):
    """The `login_history` table."""

    @abstractmethod
    def anonymise_user(
        self, user_id: UUID, personal_kinds: frozenset[str], tracking: Tracking
    ) -> None:
        """Blank the user's addresses and agents, and the details of entries
        of `personal_kinds` (an erasure): the timeline keeps its shape."""

    @abstractmethod
    def append(self, row: LoginHistoryRow, tracking: Tracking) -> None:
        """Add one entry."""

    @abstractmethod
    def history(
        self,
        user_id: UUID,
        limit: int,
        offset: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LoginHistoryRow]:
        """Page through a user's entries in time order, between `since` and `until`."""


@dataclass(frozen=True)
class MailRow:
    position: int
    purpose: str
    user_id: UUID
    request_id: UUID
    email: str
    requested_at: datetime
    expires_at: datetime


class MailOutboxView(ReadModel):
    """The `outbox` table: every mail the events ask for, sent or not."""

    @abstractmethod
    def add_mail(self, row: MailRow, tracking: Tracking) -> None:
        """Record a mail to send."""

    @abstractmethod
    def forget_user(self, user_id: UUID, tracking: Tracking) -> None:
        """Delete the user's mails, sent or not (an erasure)."""
