"""UnknownLogins aggregate: failed logins aimed at an address that has no account.

The address itself is never stored: its stream is named by a keyed hash of
it, so an auditor who types an address sees what was tried on it, and a
credential-stuffing list leaves no list of addresses behind.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.values import LoginFailure


class UnknownLogins(Aggregate):
    TOPIC = "authledger:UnknownLogins"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:UnknownLogins.Created"

    class Started(Created):
        TOPIC = "authledger:UnknownLogins.Started"
        address_hash: str

    class Attempted(Event):
        TOPIC = "authledger:UnknownLogins.Attempted"
        ip: str
        user_agent: str
        reason: str

        def apply(self, target: UnknownLogins) -> None:
            target.attempts += 1

    def __init__(self, address_hash: str) -> None:
        self.address_hash = address_hash
        self.attempts = 0

    @staticmethod
    def create_id(address_hash: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/authledger/unknown-logins/{address_hash}")

    @classmethod
    def start(cls, address_hash: str, now: datetime) -> UnknownLogins:
        return cls._create(
            cls.Started,
            id=cls.create_id(address_hash),
            timestamp=now,
            address_hash=address_hash,
        )

    def record(self, ip: str, user_agent: str, now: datetime) -> None:
        self.trigger_event(
            self.Attempted,
            timestamp=now,
            ip=ip,
            user_agent=user_agent,
            reason=LoginFailure.UNKNOWN_ACCOUNT.value,
        )
