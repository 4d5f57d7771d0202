"""EmailClaim aggregate: its id derives from the email, so a second claim collides."""

from __future__ import annotations

import contextlib
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import MixedScriptEmailError
from domain.values import email_identity, normalise_email


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
    def create_id(key: str) -> UUID:
        """The claim's id for an address in the form it is matched by."""
        return uuid5(NAMESPACE_URL, f"/authledger/emails/{key}")

    @classmethod
    def ids_for(cls, email: str) -> list[UUID]:
        """Where the account of an address typed at login may be claimed, in turn.

        First the address exactly as registered before addresses were folded,
        so accounts that differ only by case keep working; then its folded form,
        which every account has (ADR 20).
        """
        ids = [cls.create_id(normalise_email(email))]
        with contextlib.suppress(MixedScriptEmailError):
            ids.append(cls.create_id(email_identity(email)))
        return list(dict.fromkeys(ids))

    @classmethod
    def claim(cls, email: str, user_id: UUID, now: datetime) -> EmailClaim:
        """Claim the folded form of `email` for `user_id`, keeping it as typed."""
        return cls._create(
            cls.Claimed,
            id=cls.create_id(email_identity(email)),
            timestamp=now,
            email=normalise_email(email),
            user_id=user_id,
        )
