"""EmailClaim aggregate: its id derives from the email, so a second claim collides.

The id is named by a keyed hash of the address (the application holds the
key), so a copy of the log cannot be searched with guessed addresses. Claims
made before that were named by the address itself (`legacy_id`); an upgrade
names each of them the keyed way.

An erasure releases the claim for good: a new account of the same address
claims it under the next generation's name, a stream of its own, so that
nothing in the log ties the new account to the erased one (ADR 31).
"""

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

    class Released(Event):
        """The account that held the address was erased: it is free again."""

        TOPIC = "authledger:EmailClaim.Released"

        def apply(self, claim: EmailClaim) -> None:
            claim.user_id = None

    def __init__(self, email: str, user_id: UUID) -> None:
        self.email = email
        self.user_id: UUID | None = user_id

    def release(self, now: datetime) -> None:
        if self.user_id is not None:
            self.trigger_event(self.Released, timestamp=now)

    @staticmethod
    def create_id(name: str) -> UUID:
        """The claim's id for a keyed hash of an address form (see forms_of)."""
        return uuid5(NAMESPACE_URL, f"/authledger/claims/{name}")

    @staticmethod
    def legacy_id(form: str) -> UUID:
        """The id a claim of the address form had before claims were keyed."""
        return uuid5(NAMESPACE_URL, f"/authledger/emails/{form}")

    @staticmethod
    def forms_of(email: str) -> list[str]:
        """The forms under which the account of an address typed at login may
        be claimed, in turn.

        First the address exactly as registered before addresses were folded,
        so accounts that differ only by case keep working; then its folded form,
        which every account has (ADR 20).
        """
        forms = [normalise_email(email)]
        with contextlib.suppress(MixedScriptEmailError):
            forms.append(email_identity(email))
        return list(dict.fromkeys(forms))

    @classmethod
    def claim(
        cls, claim_id: UUID, email: str, user_id: UUID, now: datetime
    ) -> EmailClaim:
        """Claim an address form (named by `claim_id`) for `user_id`, keeping
        the address as typed."""
        return cls._create(
            cls.Claimed,
            id=claim_id,
            timestamp=now,
            email=normalise_email(email),
            user_id=user_id,
        )
