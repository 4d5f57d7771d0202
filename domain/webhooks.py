"""WebhookEndpoints aggregate: where the log is pushed, and who said so.

One stream holds every endpoint (they are few): adding, removing and asking
for a replay are each an event naming who asked, so the audit trail shows
them. How far delivery has got is not a fact of the domain; it lives beside
the log (see the delivery table), as the mail outbox's sends do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import UnknownWebhookError


@dataclass(frozen=True)
class WebhookEndpoint:
    """One endpoint as it stands."""

    id: UUID
    url: str
    event_types: tuple[str, ...]  # empty: every type
    sealed_secret: str
    added_at: datetime
    added_by: str
    start_after: int  # the position delivery begins after (its adding)
    replays: int  # how many replays were asked for
    replay_from: int | None  # the first position the latest replay sends


class WebhookEndpoints(Aggregate):
    TOPIC = "authledger:WebhookEndpoints"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:WebhookEndpoints.Created"

    class Started(Created):
        TOPIC = "authledger:WebhookEndpoints.Started"

    class EndpointAdded(Event):
        """`start_after`: the log's head when it was added; it is sent what
        comes after."""

        TOPIC = "authledger:WebhookEndpoints.EndpointAdded"
        endpoint_id: UUID
        url: str
        event_types: list[str]
        sealed_secret: str
        start_after: int
        by: str

        def apply(self, endpoints: WebhookEndpoints) -> None:
            endpoints.endpoints[str(self.endpoint_id)] = {
                "id": self.endpoint_id,
                "url": self.url,
                "event_types": tuple(self.event_types),
                "sealed_secret": self.sealed_secret,
                "added_at": self.timestamp,
                "added_by": self.by,
                "start_after": self.start_after,
                "replays": 0,
                "replay_from": None,
            }

    class EndpointRemoved(Event):
        TOPIC = "authledger:WebhookEndpoints.EndpointRemoved"
        endpoint_id: UUID
        by: str

        def apply(self, endpoints: WebhookEndpoints) -> None:
            endpoints.endpoints.pop(str(self.endpoint_id), None)

    class ReplayRequested(Event):
        """Send the events from position `from_position` on again."""

        TOPIC = "authledger:WebhookEndpoints.ReplayRequested"
        endpoint_id: UUID
        from_position: int
        by: str

        def apply(self, endpoints: WebhookEndpoints) -> None:
            endpoint = endpoints.endpoints[str(self.endpoint_id)]
            endpoint["replays"] += 1
            endpoint["replay_from"] = self.from_position

    def __init__(self) -> None:
        # Plain values by id, so that snapshots hold them as they are.
        self.endpoints: dict[str, dict[str, Any]] = {}

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/authledger/webhook-endpoints")

    @classmethod
    def start(cls, now: datetime) -> WebhookEndpoints:
        return cls._create(cls.Started, id=cls.create_id(), timestamp=now)

    def all(self) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first."""
        return [self.endpoint(UUID(key)) for key in self.endpoints]

    def endpoint(self, endpoint_id: UUID) -> WebhookEndpoint:
        found = self.endpoints.get(str(endpoint_id))
        if found is None:
            raise UnknownWebhookError(endpoint_id)
        # A snapshot gives lists back for tuples.
        return WebhookEndpoint(**{**found, "event_types": tuple(found["event_types"])})

    def add(
        self,
        endpoint_id: UUID,
        url: str,
        event_types: list[str],
        sealed_secret: str,
        start_after: int,
        by: str,
        now: datetime,
    ) -> None:
        self.trigger_event(
            self.EndpointAdded,
            timestamp=now,
            endpoint_id=endpoint_id,
            url=url,
            event_types=sorted(set(event_types)),
            sealed_secret=sealed_secret,
            start_after=start_after,
            by=by,
        )

    def remove(self, endpoint_id: UUID, by: str, now: datetime) -> None:
        self.endpoint(endpoint_id)
        self.trigger_event(
            self.EndpointRemoved, timestamp=now, endpoint_id=endpoint_id, by=by
        )

    def replay(
        self, endpoint_id: UUID, from_position: int, by: str, now: datetime
    ) -> None:
        self.endpoint(endpoint_id)
        self.trigger_event(
            self.ReplayRequested,
            timestamp=now,
            endpoint_id=endpoint_id,
            from_position=from_position,
            by=by,
        )
