"""The auth event store, with read-your-writes and the lookups use cases share."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from application.errors import (
    ReadModelsLaggingError,
    TooManyAttemptsError,
    UserNotFoundError,
)
from domain.email_claim import EmailClaim
from domain.errors import DomainError
from domain.session import Session
from domain.throttle import ClientThrottle
from domain.user import User
from domain.values import normalise_email

if TYPE_CHECKING:
    from eventsourcing.domain import BaseAggregate
    from eventsourcing.persistence import Recording
    from eventsourcing.utils import EnvType

    from application.ports import ReadModelPositions

TAggregate = TypeVar("TAggregate", bound="BaseAggregate[UUID]")
SAVE_ATTEMPTS = 3
SAVE_CHUNK = 100


class AuthEventLog(Application[UUID]):
    """The auth event store, as the projection runners subscribe to it."""

    name = "Auth"
    snapshotting_intervals: ClassVar = {User: 50, Session: 50, ClientThrottle: 50}


class AuthStore(AuthEventLog):
    """The event store as use cases use it: every commit is read-your-writes."""

    name = "Auth"

    def __init__(
        self,
        env: EnvType | None,
        positions: ReadModelPositions,
        read_model_timeout_s: float,
    ) -> None:
        super().__init__(env)
        self.positions = positions
        self.read_model_timeout_s = read_model_timeout_s

    def throttle(self, key: str, now: datetime) -> ClientThrottle:
        """The attempt counter of `key`: a client address, perhaps with a purpose."""
        try:
            throttle: ClientThrottle = self.repository.get(
                ClientThrottle.create_id(key)
            )
        except AggregateNotFoundError:
            return ClientThrottle.start(key, now)
        return throttle

    def check_not_blocked(self, key: str, now: datetime) -> None:
        """Refuse with TooManyAttemptsError while `key` is blocked."""
        wait = self.throttle(key, now).retry_after(now)
        if wait is not None:
            raise TooManyAttemptsError(math.ceil(wait.total_seconds()))

    def get_user(self, user_id: UUID) -> User:
        """The user, replayed from the event store."""
        return self._get(user_id, User, UserNotFoundError)

    def find_user_by_email(self, email: str) -> User | None:
        """The user holding this email's claim, read from the event store."""
        try:
            claim_id = EmailClaim.create_id(normalise_email(email))
            claim: EmailClaim = self.repository.get(claim_id)
        except (DomainError, AggregateNotFoundError):
            return None
        user: User = self.repository.get(claim.user_id)
        return user

    def _get(
        self,
        aggregate_id: UUID,
        kind: type[TAggregate],
        missing: type[Exception],
    ) -> TAggregate:
        try:
            aggregate: BaseAggregate[UUID] = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing from None
        if not isinstance(aggregate, kind):
            raise missing
        return aggregate

    def update_user(self, user_id: UUID, command: Callable[[User], None]) -> None:
        """Apply `command` to a fresh copy of the user, retrying on a stale version."""
        for _ in range(SAVE_ATTEMPTS):
            user = self._get(user_id, User, UserNotFoundError)
            command(user)
            try:
                recordings = self.save(user)
            except IntegrityError:
                continue
            self._catch_up(recordings)
            return
        raise IntegrityError(f"user {user_id} kept changing under the command")

    def commit(self, *aggregates: BaseAggregate[UUID]) -> None:
        """Save the aggregates' new events, then wait for the read models.

        Up to SAVE_CHUNK aggregates go in one transaction; more (a user with
        very many sessions logging out everywhere) go in several, the first
        ones first, since one huge insert stalls in the driver's pipeline while
        holding the events table's lock.
        """
        recordings: list[Recording[UUID]] = []
        for start in range(0, len(aggregates), SAVE_CHUNK):
            recordings += self.save(*aggregates[start : start + SAVE_CHUNK])
        self._catch_up(recordings)

    def _catch_up(self, recordings: Sequence[Recording[UUID]]) -> None:
        """Return once every live read model has applied these events.

        That is read-your-writes for the caller. Poll from 1 ms: the library's
        own wait() starts at 100 ms, far above what a projection needs.
        """
        if not recordings:
            return
        position = max(r.notification.id for r in recordings)
        deadline = time.monotonic() + self.read_model_timeout_s
        pause = 0.001
        while not self.positions.reached(self.name, position):
            if time.monotonic() > deadline:
                raise ReadModelsLaggingError(position)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
