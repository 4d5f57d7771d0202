"""ResetAsks aggregate: the reset links asked for an address, account or not.

Named by a keyed hash of the address, like UnknownLogins, and the same for
every address: a request records only the ask (with the account's id, if
there is one), and the account's own stream is changed later, off the
request, so neither the work nor the time of the answer tells whether an
account exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

if TYPE_CHECKING:
    from domain.user import MailPolicy


class ResetAsks(Aggregate):
    TOPIC = "authledger:ResetAsks"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:ResetAsks.Created"

    class Started(Created):
        TOPIC = "authledger:ResetAsks.Started"
        address_hash: str

    class Asked(Event):
        TOPIC = "authledger:ResetAsks.Asked"
        ip: str
        user_agent: str
        user_id: UUID | None  # the account of the address, if it has one

        def apply(self, target: ResetAsks) -> None:
            target.last_asked_at = self.timestamp

        @property
        def reason(self) -> str:
            return "reset_requested"

        @property
        def request_id(self) -> UUID:
            """The reset request this ask becomes, the same however often tried."""
            return uuid5(
                NAMESPACE_URL,
                f"/authledger/resets/{self.originator_id}/{self.originator_version}",
            )

    class Dispatched(Event):
        """The asks up to this stream version became reset requests: never again."""

        TOPIC = "authledger:ResetAsks.Dispatched"
        through: int

        def apply(self, target: ResetAsks) -> None:
            target.dispatched_through = self.through

    def __init__(self, address_hash: str) -> None:
        self.address_hash = address_hash
        self.last_asked_at: datetime | None = None
        self.dispatched_through = 0

    @staticmethod
    def create_id(address_hash: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/authledger/reset-asks/{address_hash}")

    @classmethod
    def start(cls, address_hash: str, now: datetime) -> ResetAsks:
        return cls._create(
            cls.Started,
            id=cls.create_id(address_hash),
            timestamp=now,
            address_hash=address_hash,
        )

    def ask(
        self,
        ip: str,
        user_agent: str,
        user_id: UUID | None,
        policy: MailPolicy,
        now: datetime,
    ) -> None:
        """Record a link asked for; within the cooldown of the last, nothing."""
        policy.check_not_too_soon(self.last_asked_at, now)
        self.trigger_event(
            self.Asked, timestamp=now, ip=ip, user_agent=user_agent, user_id=user_id
        )

    def dispatched(self, ask: Asked, now: datetime) -> None:
        """Record that `ask` (and every ask before it) was dispatched."""
        if ask.originator_version > self.dispatched_through:
            self.trigger_event(
                self.Dispatched, timestamp=now, through=ask.originator_version
            )
