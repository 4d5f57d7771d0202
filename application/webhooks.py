"""Admins' use cases for webhook endpoints: add, list, remove, replay."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError

from application.errors import CursorBeyondLogError
from application.feed import topics_of
from domain.webhooks import WebhookEndpoint, WebhookEndpoints

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from application.ports import Clock, WebhookDestinations, WebhookSecrets
    from application.store import AuthStore


class Webhooks:
    """Each change is one save of the endpoints' one stream, retried on a race."""

    def __init__(
        self,
        store: AuthStore,
        secrets: WebhookSecrets,
        destinations: WebhookDestinations,
        clock: Clock,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.destinations = destinations
        self.clock = clock

    def endpoints(self) -> list[WebhookEndpoint]:
        return self._stored().all()

    def add(
        self, url: str, event_types: list[str], by: str
    ) -> tuple[WebhookEndpoint, str]:
        """A new endpoint, sent the events recorded from now on; its signing
        secret, shown this once."""
        topics_of(event_types)
        self.destinations.check(url)
        endpoint_id = uuid4()
        secret, sealed = self.secrets.make(endpoint_id)
        start_after = self.store.recorder.max_notification_id() or 0
        self._changed(
            lambda endpoints: endpoints.add(
                endpoint_id, url, event_types, sealed, start_after, by, self.clock()
            )
        )
        return self.endpoint(endpoint_id), secret

    def endpoint(self, endpoint_id: UUID) -> WebhookEndpoint:
        return self._stored().endpoint(endpoint_id)

    def remove(self, endpoint_id: UUID, by: str) -> None:
        self._changed(lambda endpoints: endpoints.remove(endpoint_id, by, self.clock()))

    def replay(self, endpoint_id: UUID, from_position: int, by: str) -> WebhookEndpoint:
        """Send the events from `from_position` on again, in order (a
        position past the log's head would skip what comes until then)."""
        if from_position > (self.store.recorder.max_notification_id() or 0) + 1:
            raise CursorBeyondLogError(from_position)
        self._changed(
            lambda endpoints: endpoints.replay(
                endpoint_id, from_position, by, self.clock()
            )
        )
        return self.endpoint(endpoint_id)

    def _stored(self) -> WebhookEndpoints:
        try:
            found: WebhookEndpoints = self.store.repository.get(
                WebhookEndpoints.create_id()
            )
        except AggregateNotFoundError:
            found = WebhookEndpoints.start(self.clock())
        return found

    def _changed(self, change: Callable[[WebhookEndpoints], None]) -> None:
        def command() -> None:
            endpoints = self._stored()
            change(endpoints)
            self.store.save(endpoints)

        self.store.attempt(command)  # two first endpoints: one start wins
