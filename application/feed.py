"""The log as other services read it: events in log order behind a cursor,
each with a public type and a payload under one policy (see the README).

Policy: every field of the stored event but those that would help an
attacker (hashes, sealed or plain secrets); personal data (email, client
address, user agent) as long as its owner's data key lives, ERASED after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.audit import SECRET_FIELDS
from application.errors import UserNotFoundError
from domain.admin_roster import AdminRoster
from domain.email_claim import EmailClaim
from domain.key_ring import KeyRing
from domain.reset_asks import ResetAsks
from domain.session import Session
from domain.throttle import ClientThrottle
from domain.unknown_logins import UnknownLogins
from domain.upgrade import Upgrade
from domain.user import User
from domain.webhooks import WebhookEndpoints

if TYPE_CHECKING:
    from eventsourcing.persistence import Notification

    from application.store import AuthStore

MAX_PAGE = 1000
# A page reads at most this many stored events of the types asked for (a
# user's or not), so a quiet user costs a bounded read; `at_head` says
# whether it reached the head.
SCAN_LIMIT = 20 * MAX_PAGE
AGGREGATES: tuple[type[Aggregate], ...] = (
    User,
    Session,
    EmailClaim,
    KeyRing,
    AdminRoster,
    ClientThrottle,
    UnknownLogins,
    ResetAsks,
    Upgrade,
    WebhookEndpoints,
)
# Shown beside the payload, or the store's own bookkeeping.
OMITTED = {
    "originator_id",
    "originator_version",
    "timestamp",
    "class_version",
    "originator_topic",
}
# Keyed hashes of client addresses (a throttle's key), and webhook URLs
# (they often carry a token).
HIDDEN = {"key", "url"}


def event_type(topic: str) -> str:
    """The public name of a stored topic: `authledger:User.LoggedIn` →
    `user.logged_in`."""
    name = topic.rpartition(":")[2]
    return ".".join(_snake(part) for part in name.split("."))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _topics() -> dict[str, str]:
    """Every event type this version records, by its public name."""
    found: dict[str, str] = {}
    for aggregate in AGGREGATES:
        for value in vars(aggregate).values():
            topic = getattr(value, "TOPIC", None)
            if isinstance(value, type) and issubclass(value, Aggregate.Event) and topic:
                found[event_type(topic)] = topic
    return found


TOPICS = _topics()
EVENT_TYPES = frozenset(TOPICS)


def is_secret(field: str) -> bool:
    """Fields no reader of the feed gets, now or when later events add more."""
    return (
        field in SECRET_FIELDS
        or field in HIDDEN
        or field.endswith(("_hash", "_hashes"))
        or "secret" in field
        or field.startswith("sealed_")
    )


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in OMITTED and not is_secret(k)}


class UnknownEventTypeError(ValueError):
    """Types no event of this version has."""


@dataclass(frozen=True)
class FeedEvent:
    position: int
    type: str
    aggregate_id: UUID
    version: int
    time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class FeedPage:
    events: list[FeedEvent]
    next: int  # the position to read after next time
    at_head: bool  # nothing more to read now


def topics_of(types: Sequence[str]) -> list[str]:
    unknown = sorted(set(types) - EVENT_TYPES)
    if unknown:
        raise UnknownEventTypeError(", ".join(unknown))
    return [TOPICS[t] for t in types]


class EventFeed:
    """Reads of the log up to its horizon: a position once passed is never
    filled later (ADR 15), so following `next` yields every event once."""

    def __init__(self, store: AuthStore) -> None:
        self.store = store

    def head(self) -> int:
        """The last position a reader may pass now."""
        return self.store.recorder.max_notification_id() or 0

    def page(
        self,
        after: int,
        limit: int,
        types: Sequence[str] = (),
        user_id: UUID | None = None,
    ) -> FeedPage:
        """Up to `limit` events after position `after`, of `types` (all if
        none) and of the user's own streams (their account's and sessions')."""
        topics = topics_of(types)
        recorder = self.store.recorder
        # Read no further than the head seen before the user's streams are
        # listed: a session opened after that is listed by the next page.
        head = self.head()
        streams = self._streams_of(user_id) if user_id else None
        found: list[Notification] = []
        position, scanned = after, 0
        while len(found) < limit and position < head and scanned < SCAN_LIMIT:
            batch = recorder.select_notifications(
                position, MAX_PAGE, stop=head, topics=topics, inclusive_of_start=False
            )
            if not batch:
                position = head
                break
            for notification in batch:
                position = notification.id
                if streams is None or notification.originator_id in streams:
                    found.append(notification)
                    if len(found) == limit:
                        break
            scanned += len(batch)
        payloads = self.store.personal_data.payloads(found)
        events = [
            FeedEvent(
                position=n.id,
                type=event_type(n.topic),
                aggregate_id=UUID(str(n.originator_id)),
                version=n.originator_version,
                time=payload["timestamp"],
                payload=public_payload(payload),
            )
            for n, payload in zip(found, payloads, strict=True)
        ]
        return FeedPage(events, position, position >= head)

    def _streams_of(self, user_id: UUID) -> set[UUID]:
        with self.store.personal_data.afresh():
            events = list(self.store.events.get(user_id))
        if not events or not isinstance(events[0], User.Created):
            raise UserNotFoundError(user_id)
        return {user_id} | {
            e.session_id for e in events if isinstance(e, User.LoggedIn)
        }
