"""The use cases of the key ring: start it, rotate, withdraw and revoke keys."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.key_ring import KeyRing, SigningKey

if TYPE_CHECKING:
    from collections.abc import Callable

    from application.ports import Clock, KeyMaker
    from application.store import AuthStore

# Who a scheduled rotation is recorded as.
SCHEDULE = "schedule"


class SigningKeyRing:
    """Changes to the ring, each one save of its one stream (retried on a
    lost race, so two rotations at once make two, never a split ring)."""

    def __init__(
        self,
        store: AuthStore,
        maker: KeyMaker,
        algorithm: str,
        verify_for: timedelta,
        clock: Clock,
    ) -> None:
        self.store = store
        self.maker = maker
        self.algorithm = algorithm  # of the keys made when none is named
        self.verify_for = verify_for  # a retired key's life: a token's longest
        self.clock = clock

    def current(self) -> KeyRing | None:
        with contextlib.suppress(AggregateNotFoundError):
            ring: KeyRing = self.store.repository.get(KeyRing.create_id())
            return ring
        return None

    def start(self, by: str) -> KeyRing:
        """The ring, made with its first two keys if there is none yet."""
        ring = self.current()
        if ring is not None:
            return ring
        made = KeyRing.start(
            self.maker.make(self.algorithm),
            self.maker.make(self.algorithm),
            by,
            self.clock(),
        )
        with contextlib.suppress(IntegrityError):  # another process made it
            self.store.save(made)
        started = self.current()
        assert started is not None  # noqa: S101  (saved by us or the other)
        return started

    def rotate(self, by: str, algorithm: str | None = None) -> SigningKey:
        """The next key signs from now; the active one is retired; a fresh
        next (of `algorithm`, else the default) is published."""
        incoming = self.maker.make(algorithm or self.algorithm)
        return self._changed(
            lambda ring: ring.rotate(incoming, by, self.clock(), self.verify_for)
        )

    def retire(self, kid: str, by: str) -> SigningKey:
        """Withdraw a next key (see KeyRing.retire)."""
        replacement = self.maker.make(self.algorithm)
        return self._changed(
            lambda ring: ring.retire(kid, replacement, by, self.clock()), kid
        )

    def revoke(self, kid: str, by: str) -> SigningKey:
        """Refuse the key's tokens at once (see KeyRing.revoke)."""
        replacement = self.maker.make(self.algorithm)
        return self._changed(
            lambda ring: ring.revoke(kid, replacement, by, self.clock()), kid
        )

    def rotate_if_due(self, every: timedelta, prepublished: timedelta) -> bool:
        """Rotate on schedule (any replica may ask; one rotation happens).
        Whether this call rotated."""
        ring = self.current()
        if ring is None or not ring.due(self.clock(), every, prepublished):
            return False
        incoming, before = self.maker.make(self.algorithm), ring.active.kid

        def rotate_once(ring: KeyRing) -> None:
            if ring.due(self.clock(), every, prepublished):
                ring.rotate(incoming, SCHEDULE, self.clock(), self.verify_for)

        return self._changed(rotate_once).kid != before

    def _changed(
        self, change: Callable[[KeyRing], object], kid: str | None = None
    ) -> SigningKey:
        """Apply `change` to the stored ring and save it; the key `kid` (or
        the active one) as it then stands."""

        def command() -> SigningKey:
            ring = self.start("setup")
            change(ring)
            self.store.save(ring)
            return ring.key(kid) if kid else ring.active

        return self.store.attempt(command)
