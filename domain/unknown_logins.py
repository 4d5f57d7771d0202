"""UnknownLogins aggregate: logins and resets aimed at an address without an account.

The address itself is never stored: its stream is named by a keyed hash of
it, so an auditor who types an address sees what was tried on it, and a
credential-stuffing list leaves no list of addresses behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.values import LoginFailure

if TYPE_CHECKING:
    from domain.user import MailPolicy


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

    class ResetRequested(Event):
        """A reset link asked for the address: recorded as an account's request
        would be, so both take the same time."""

        TOPIC = "authledger:UnknownLogins.ResetRequested"
        ip: str
        user_agent: str

        def apply(self, target: UnknownLogins) -> None:
            target.reset_requested_at = self.timestamp

        @property
        def reason(self) -> str:
            return "reset_requested"

    def __init__(self, address_hash: str) -> None:
        self.address_hash = address_hash
        self.attempts = 0
        self.reset_requested_at: datetime | None = None

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

    def request_reset(
        self, ip: str, user_agent: str, policy: MailPolicy, now: datetime
    ) -> None:
        """Record a reset asked for; within the cooldown, as for an account, nothing."""
        policy.check_not_too_soon(self.reset_requested_at, now)
        self.trigger_event(
            self.ResetRequested, timestamp=now, ip=ip, user_agent=user_agent
        )
