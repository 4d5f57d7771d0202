"""EmailClaim aggregate: its id derives from the email, so a second claim collides."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate


class EmailClaim(Aggregate):
    TOPIC = "authledger:EmailClaim"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:EmailClaim.Created"

    class Claimed(Created):
        TOPIC = "authledger:EmailClaim.Claimed"
        email: str
        user_id: UUID

    def __init__(self, email: str, user_id: UUID) -> None:
        self.email = email
        self.user_id = user_id

    @staticmethod
    def create_id(email: str) -> UUID:
        """Derive the claim's id from the normalised email: one id per address."""
        return uuid5(NAMESPACE_URL, f"/authledger/emails/{email}")

    @classmethod
    def claim(cls, email: str, user_id: UUID, now: datetime) -> EmailClaim:
        """Claim `email` (already normalised) for `user_id`."""
        return cls._create(
            cls.Claimed,
            id=cls.create_id(email),
            timestamp=now,
            email=email,
            user_id=user_id,
        )
