"""Upgrade aggregate: a one-off change to stored data, done once for all processes."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate


class Upgrade(Aggregate):
    TOPIC = "authledger:Upgrade"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:Upgrade.Created"

    class Applied(Created):
        TOPIC = "authledger:Upgrade.Applied"
        name: str
        changed: int

    def __init__(self, name: str, changed: int) -> None:
        self.name = name
        self.changed = changed

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/authledger/upgrades/{name}")

    @classmethod
    def applied(cls, name: str, changed: int, now: datetime) -> Upgrade:
        """Record that `name` ran to its end, having changed `changed` streams."""
        return cls._create(
            cls.Applied,
            id=cls.create_id(name),
            timestamp=now,
            name=name,
            changed=changed,
        )
