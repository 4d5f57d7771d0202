"""AdminRoster aggregate: who holds the ADMIN role, so that one always does."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import LastAdminError


class AdminRoster(Aggregate):
    """The admins, in one stream that every change of an admin's role writes.

    Two admins demoting each other at once both read two admins; the save of
    the second loses on the roster's version, is decided again, and refused.
    """

    TOPIC = "authledger:AdminRoster"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:AdminRoster.Created"

    class Started(Created):
        """Started with the admins the log held then (none on a new store)."""

        TOPIC = "authledger:AdminRoster.Started"
        admins: list[UUID]

    class Appointed(Event):
        TOPIC = "authledger:AdminRoster.Appointed"
        user_id: UUID

        def apply(self, roster: AdminRoster) -> None:
            roster.admins = [*roster.admins, self.user_id]

    class Dismissed(Event):
        TOPIC = "authledger:AdminRoster.Dismissed"
        user_id: UUID

        def apply(self, roster: AdminRoster) -> None:
            roster.admins = [a for a in roster.admins if a != self.user_id]

    def __init__(self, admins: list[UUID]) -> None:
        self.admins = list(admins)

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/authledger/admin-roster")

    @classmethod
    def start(cls, admins: list[UUID], now: datetime) -> AdminRoster:
        return cls._create(
            cls.Started, id=cls.create_id(), timestamp=now, admins=list(admins)
        )

    def appoint(self, user_id: UUID, now: datetime) -> None:
        if user_id not in self.admins:
            self.trigger_event(self.Appointed, timestamp=now, user_id=user_id)

    def dismiss(self, user_id: UUID, now: datetime) -> None:
        """Take `user_id` off the roster; refused if no admin would be left."""
        if user_id not in self.admins:
            return
        if len(self.admins) == 1:
            raise LastAdminError
        self.trigger_event(self.Dismissed, timestamp=now, user_id=user_id)
