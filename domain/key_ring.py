"""KeyRing aggregate: the keys that sign access tokens, and their lifecycle.

A key is published as `next` before it signs, so that verifiers have it
cached when it does; `active` (exactly one) signs; `retired` verifies until
the last token it signed has expired; `revoked` verifies nothing at once.
One stream holds the whole ring, so two rotations at once cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import SigningKeyStateError, UnknownSigningKeyError


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class NewSigningKey:
    """A key made outside the domain: its private part sealed already."""

    kid: str
    algorithm: str
    public_jwk: dict[str, str]  # empty for a symmetric key: nothing to publish
    sealed_private_key: str


@dataclass(frozen=True)
class SigningKey:
    """One key of the ring as it stands."""

    kid: str
    algorithm: str
    public_jwk: dict[str, str]
    sealed_private_key: str
    state: KeyState
    added_at: datetime
    changed_at: datetime
    verify_until: datetime | None  # a retired key's last moment

    def verifies(self, now: datetime) -> bool:
        """Whether tokens with its kid may be accepted (and it is published).

        A `next` key verifies too: a replica that rotated before this one
        knew of it may already sign with it."""
        if self.state is KeyState.RETIRED:
            return self.verify_until is not None and now < self.verify_until
        return self.state is not KeyState.REVOKED


class KeyRing(Aggregate):
    TOPIC = "authledger:KeyRing"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:KeyRing.Created"

    class Started(Created):
        TOPIC = "authledger:KeyRing.Started"

    class KeyAdded(Event):
        """A key published as `next`; `by` names who asked (an operator, a schedule)."""

        TOPIC = "authledger:KeyRing.KeyAdded"
        kid: str
        algorithm: str
        public_jwk: dict[str, str]
        sealed_private_key: str
        by: str

        def apply(self, ring: KeyRing) -> None:
            ring.keys[self.kid] = {
                "kid": self.kid,
                "algorithm": self.algorithm,
                "public_jwk": dict(self.public_jwk),
                "sealed_private_key": self.sealed_private_key,
                "state": KeyState.NEXT.value,
                "added_at": self.timestamp,
                "changed_at": self.timestamp,
                "verify_until": None,
            }

    class KeyActivated(Event):
        TOPIC = "authledger:KeyRing.KeyActivated"
        kid: str
        by: str

        def apply(self, ring: KeyRing) -> None:
            ring.moved(self.kid, KeyState.ACTIVE, self.timestamp)

    class KeyRetired(Event):
        TOPIC = "authledger:KeyRing.KeyRetired"
        kid: str
        verify_until: datetime
        by: str

        def apply(self, ring: KeyRing) -> None:
            ring.moved(self.kid, KeyState.RETIRED, self.timestamp)
            ring.keys[self.kid]["verify_until"] = self.verify_until

    class KeyRevoked(Event):
        TOPIC = "authledger:KeyRing.KeyRevoked"
        kid: str
        by: str

        def apply(self, ring: KeyRing) -> None:
            ring.moved(self.kid, KeyState.REVOKED, self.timestamp)

    def __init__(self) -> None:
        # Plain values by kid, so that snapshots hold them as they are.
        self.keys: dict[str, dict[str, Any]] = {}

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/authledger/key-ring")

    @classmethod
    def start(
        cls, first: NewSigningKey, second: NewSigningKey, by: str, now: datetime
    ) -> KeyRing:
        """A ring whose first key signs at once (nothing was cached before
        it) and whose second waits as `next`."""
        ring = cls._create(cls.Started, id=cls.create_id(), timestamp=now)
        ring.add(first, by, now)
        ring.trigger_event(cls.KeyActivated, timestamp=now, kid=first.kid, by=by)
        ring.add(second, by, now)
        return ring

    def key(self, kid: str) -> SigningKey:
        found = self.keys.get(kid)
        if found is None:
            raise UnknownSigningKeyError(kid)
        return SigningKey(**{**found, "state": KeyState(found["state"])})

    def all_keys(self) -> list[SigningKey]:
        """Every key, oldest first."""
        return [self.key(kid) for kid in self.keys]

    def in_state(self, state: KeyState) -> list[SigningKey]:
        return [key for key in self.all_keys() if key.state is state]

    @property
    def active(self) -> SigningKey:
        (active,) = self.in_state(KeyState.ACTIVE)
        return active

    def add(self, key: NewSigningKey, by: str, now: datetime) -> None:
        if key.kid in self.keys:
            raise SigningKeyStateError(key.kid)
        self.trigger_event(
            self.KeyAdded,
            timestamp=now,
            kid=key.kid,
            algorithm=key.algorithm,
            public_jwk=dict(key.public_jwk),
            sealed_private_key=key.sealed_private_key,
            by=by,
        )

    def rotate(
        self, incoming: NewSigningKey, by: str, now: datetime, verify_for: timedelta
    ) -> SigningKey:
        """The oldest `next` key signs from now; the active one is retired,
        verifying for `verify_for` (the longest life of a token it signed);
        `incoming` waits as the next. Returns the key now active."""
        retiring = self.active
        promoted = self._promote_next(by, now)
        self.trigger_event(
            self.KeyRetired,
            timestamp=now,
            kid=retiring.kid,
            verify_until=now + verify_for,
            by=by,
        )
        self.add(incoming, by, now)
        return promoted

    def retire(
        self, kid: str, replacement: NewSigningKey, by: str, now: datetime
    ) -> None:
        """Withdraw a `next` key, which signed nothing: it stops verifying at
        once, and `replacement` waits as the next if none is left. The active
        key is retired by a rotation only."""
        key = self.key(kid)
        if key.state is not KeyState.NEXT:
            raise SigningKeyStateError(f"{kid} is {key.state}, not next")
        self.trigger_event(
            self.KeyRetired, timestamp=now, kid=kid, verify_until=now, by=by
        )
        self._keep_a_next(replacement, by, now)

    def revoke(
        self, kid: str, replacement: NewSigningKey, by: str, now: datetime
    ) -> None:
        """Refuse every token of `kid` from now. Revoking the active key
        activates the next at once; `replacement` waits as the next if none
        is left."""
        key = self.key(kid)
        if key.state is KeyState.REVOKED:
            return
        if key.state is KeyState.ACTIVE:
            self._promote_next(by, now)
        self.trigger_event(self.KeyRevoked, timestamp=now, kid=kid, by=by)
        self._keep_a_next(replacement, by, now)

    def due(self, now: datetime, every: timedelta, prepublished: timedelta) -> bool:
        """Whether a scheduled rotation is due: the active key is older than
        `every`, and the next has been published for `prepublished`."""
        waiting = self.in_state(KeyState.NEXT)
        return (
            bool(waiting)
            and now - self.active.changed_at >= every
            and now - waiting[0].added_at >= prepublished
        )

    def _keep_a_next(self, replacement: NewSigningKey, by: str, now: datetime) -> None:
        """A rotation always has a published key to activate."""
        if not self.in_state(KeyState.NEXT):
            self.add(replacement, by, now)

    def _promote_next(self, by: str, now: datetime) -> SigningKey:
        waiting = self.in_state(KeyState.NEXT)
        if not waiting:
            raise SigningKeyStateError("no next key to activate")
        self.trigger_event(self.KeyActivated, timestamp=now, kid=waiting[0].kid, by=by)
        return self.key(waiting[0].kid)

    def moved(self, kid: str, state: KeyState, now: datetime) -> None:
        self.keys[kid] = {**self.keys[kid], "state": state.value, "changed_at": now}
