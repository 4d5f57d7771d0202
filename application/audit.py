"""Auditing from the event store itself: timelines, the whole log, past states."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from application.errors import UserNotFoundError
from application.timeline import TimelineEntry, timeline_entry
from application.values import address_streams
from domain.reset_asks import ResetAsks
from domain.unknown_logins import UnknownLogins
from domain.user import User

if TYPE_CHECKING:
    from application.store import AuthStore

EXPORT_PAGE = 1000
UnknownAttempt = UnknownLogins.Attempted | ResetAsks.Asked
# Event fields that would help an attacker (even hashed) never leave the store.
SECRET_FIELDS = frozenset(
    {
        "password_hash",
        "refresh_token_hash",
        "token_hash",
        "retired_at",  # keyed by refresh-token hashes
        "pending_verification",  # hold mailed tokens' hashes
        "pending_reset",
        "sealed_private_key",  # a signing key, however well wrapped
        "sealed_secret",  # a webhook's signing secret, likewise
        # The second factor: its secret (opened for the audit, so left out
        # here) and what only hashes of one-time secrets are kept as.
        "totp_secret",
        "totp",
        "pending_totp",
        "recovery_code_hashes",
        "challenge_hash",
        "challenges",
    }
)


class Auditor:
    """Read-only questions answered by replaying stored events, never projections."""

    def __init__(self, app: AuthStore) -> None:
        self.app = app

    def find_user(self, email_or_id: str) -> UUID:
        """Resolve an email (through its claim) or a user id to a user id."""
        user_id: UUID | None
        try:
            user_id = UUID(email_or_id)
        except ValueError:
            claim = self.app.find_claim(email_or_id)
            user_id = claim.user_id if claim else None
        if user_id is None or not self._is_user(user_id):
            raise UserNotFoundError(email_or_id)
        return user_id

    def _is_user(self, stream_id: UUID) -> bool:
        """Whether the stream is a user's (a session's or a throttle's is not)."""
        first = next(iter(self.app.events.get(stream_id, limit=1)), None)
        return isinstance(first, User.Created)

    def unknown_logins(self, email: str, key: bytes) -> list[UnknownAttempt]:
        """Logins and reset links tried on an address (one without an account,
        as a rule), oldest first (`key`: the one its hash was made with)."""
        streams = [
            stream
            for era in range(self.app.address_era(email) + 1)
            for stream in address_streams(key, email, era)
        ]
        with self.app.personal_data.afresh():
            tried = [
                e
                for stream in streams
                for e in self.app.events.get(stream)
                if isinstance(e, UnknownAttempt)
            ]
        return sorted(tried, key=lambda e: e.timestamp)

    def timeline(
        self,
        user_id: UUID,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[TimelineEntry]:
        """Replay the user's stream and the stream of every session it opened."""
        with self.app.personal_data.afresh():
            user_events = list(self.app.events.get(user_id))
            if not user_events or not isinstance(user_events[0], User.Created):
                raise UserNotFoundError(user_id)
            session_ids = [
                e.session_id for e in user_events if isinstance(e, User.LoggedIn)
            ]
            events: list[Any] = [*user_events]
            for session_id in session_ids:
                events.extend(self.app.events.get(session_id))
        entries = [found[1] for e in events if (found := timeline_entry(e))]
        entries.sort(key=lambda entry: entry.at)
        return [
            entry
            for entry in entries
            if (since is None or entry.at >= since)
            and (until is None or entry.at <= until)
        ]

    def user_at(self, user_id: UUID, at: datetime) -> dict[str, Any]:
        """The user as it was at `at`: replayed up to the last event not after it."""
        version = None
        events: Iterator[Any] = self.app.events.get(user_id)
        for event in events:
            if version is None and not isinstance(event, User.Created):
                raise UserNotFoundError(user_id)  # another kind of stream
            if event.timestamp > at:
                break
            version = event.originator_version
        if version is None:
            raise UserNotFoundError(user_id)
        with self.app.personal_data.afresh():
            user: User = self.app.repository.get(user_id, version=version)
        state = {k.lstrip("_"): v for k, v in vars(user).items()}
        return {k: v for k, v in state.items() if k not in SECRET_FIELDS} | {
            "id": user_id
        }

    def export(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every stored event in notification order, secrets left out, page by page."""
        recorder = self.app.recorder
        position = 1
        while True:
            page = recorder.select_notifications(start=position, limit=EXPORT_PAGE)
            payloads = self.app.personal_data.payloads(page)
            for notification, payload in zip(page, payloads, strict=True):
                timestamp = payload.pop("timestamp", None)
                if since is not None and timestamp is not None and timestamp < since:
                    continue
                yield {
                    "position": notification.id,
                    "topic": notification.topic,
                    "aggregate_id": str(notification.originator_id),
                    "version": notification.originator_version,
                    "timestamp": timestamp,
                    "payload": {
                        k: v for k, v in payload.items() if k not in SECRET_FIELDS
                    },
                }
            if len(page) < EXPORT_PAGE:
                return
            position = page[-1].id + 1
