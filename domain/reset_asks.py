"""ResetAsks aggregate: the reset links asked for an address, account or not.

Named by a keyed hash of the address, like UnknownLogins, and the same for
every address: a request records only the ask, and the claims that could
hold the address are looked up later, off the request, so neither the work
nor the time of the answer depends on whether an account exists.
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
        claim_ids: list[UUID]  # where the address's account would be claimed

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

    def __init__(self, address_hash: str) -> None:
        self.address_hash = address_hash
        self.last_asked_at: datetime | None = None

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
        claim_ids: list[UUID],
        policy: MailPolicy,
        now: datetime,
    ) -> None:
        """Record a link asked for; within the cooldown of the last, nothing."""
        policy.check_not_too_soon(self.last_asked_at, now)
        self.trigger_event(
            self.Asked, timestamp=now, ip=ip, user_agent=user_agent, claim_ids=claim_ids
        )
