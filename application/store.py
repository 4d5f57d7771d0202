"""The auth event store, its retries on lost races, and the lookups use cases share."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from application.errors import ConflictError, TooManyAttemptsError, UserNotFoundError
from application.ports import MapperFactory, PersonalData, StoreTransactions
from application.values import lookup_name
from domain.admin_roster import AdminRoster
from domain.email_claim import EmailClaim
from domain.errors import DomainError
from domain.reset_asks import ResetAsks
from domain.session import Session
from domain.throttle import ClientThrottle
from domain.unknown_logins import UnknownLogins
from domain.user import User
from domain.values import email_identity

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.domain import BaseAggregate
    from eventsourcing.persistence import Mapper
    from eventsourcing.utils import EnvType

    from domain.throttle import ThrottlePolicy

TAggregate = TypeVar("TAggregate", bound="BaseAggregate[UUID]")
Result = TypeVar("Result")
Event = TypeVar("Event")
# How far back in an aggregate's stream a retry looks for what it repeats.
RECENT_EVENTS = 100

# Some writes race by nature: failed logins from one address (credential
# stuffing), logins and revocations of one user, refreshes from several tabs.
RETRY_ATTEMPTS = 12
FIRST_BACKOFF_S = 0.001
LONGEST_BACKOFF_S = 0.05


def retry_on_conflict(
    command: Callable[[], Result], attempts: int = RETRY_ATTEMPTS
) -> Result:
    """Run `command` (read, decide, save) again each time its save loses a race.

    Each retry reads afresh, so it decides on the state that won. Random,
    growing pauses keep racing writers from colliding in step. When every
    attempt lost, ConflictError: the caller may try again later.
    """
    for attempt in range(1, attempts + 1):
        try:
            return command()
        except IntegrityError:
            if attempt == attempts:
                break
            ceiling = min(FIRST_BACKOFF_S * 2**attempt, LONGEST_BACKOFF_S)
            time.sleep(random.uniform(0, ceiling))  # noqa: S311  (jitter, not secrecy)
    raise ConflictError


class AuthEventLog(Application[UUID]):
    """The auth event store, as use cases and projection runners open it.

    Its mapper (from `mapper_of`) seals personal fields (ADR 31).
    """

    name = "Auth"
    snapshotting_intervals: ClassVar = {
        User: 50,
        Session: 50,
        ClientThrottle: 50,
        UnknownLogins: 50,
        ResetAsks: 50,
        AdminRoster: 50,
    }

    def __init__(self, env: EnvType | None = None, *, mapper_of: MapperFactory) -> None:
        self._mapper_of = mapper_of
        super().__init__(env)

    def construct_mapper(self) -> Mapper[UUID]:
        return self._mapper_of(self, self.construct_transcoder())

    @property
    def personal_data(self) -> PersonalData:
        """The mapper, as what it does with personal fields."""
        if not isinstance(self.mapper, PersonalData):
            raise TypeError("the event store's mapper must seal personal data")
        return self.mapper


class AuthStore(AuthEventLog):
    """The event store as use cases use it: typed lookups and retried updates."""

    name = "Auth"
    # Names the streams found by a personal value (see lookup_name).
    lookup_key: bytes

    def throttle(self, key: str, now: datetime) -> ClientThrottle:
        """The attempt counter of `key`: a client address, perhaps with a
        purpose, named by its keyed hash only."""
        name = lookup_name(self.lookup_key, "client", key)
        return self._stored_or(
            ClientThrottle.create_id(name), lambda: ClientThrottle.start(name, now)
        )

    def claim_id(self, form: str, generation: int = 0) -> UUID:
        """The id of a claim of an address form (see EmailClaim.forms_of): the
        first, or the one after `generation` erased accounts released theirs."""
        purpose = f"email/{generation}" if generation else "email"
        return EmailClaim.create_id(lookup_name(self.lookup_key, purpose, form))

    def standing_claim(self, form: str) -> tuple[UUID, EmailClaim | None]:
        """The claim of a form that stands: the held one, or none yet, and
        its id (past every generation an erasure released)."""
        generation, claim = self._standing(form)
        return self.claim_id(form, generation), claim

    def address_era(self, email: str) -> int:
        """How many erased accounts have released the address (its folded
        form): the era of its own streams (see address_name)."""
        try:
            return self._standing(email_identity(email))[0]
        except DomainError:
            return 0

    def _standing(self, form: str) -> tuple[int, EmailClaim | None]:
        generation = 0
        while True:
            claim = self.stored_claim(self.claim_id(form, generation))
            if claim is None or claim.user_id is not None:
                return generation, claim
            generation += 1

    def stored_claim(self, claim_id: UUID) -> EmailClaim | None:
        """The claim of that id (held, or released by an erasure), if any."""
        with contextlib.suppress(AggregateNotFoundError):
            claim: EmailClaim = self.repository.get(claim_id)
            return claim
        return None

    def find_claim(self, email: str) -> EmailClaim | None:
        """The held claim a login with `email` reaches, if any (see forms_of)."""
        try:
            forms = EmailClaim.forms_of(email)
        except DomainError:
            return None
        for form in forms:
            _, claim = self.standing_claim(form)
            if claim is not None:
                return claim
        return None

    def _stored_or(
        self, aggregate_id: UUID, start: Callable[[], TAggregate]
    ) -> TAggregate:
        """The stored aggregate, or a new one from `start` if it has no events yet."""
        try:
            stored: TAggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return start()
        return stored

    def check_not_blocked(self, key: str, now: datetime) -> None:
        """Refuse with TooManyAttemptsError while `key` is blocked."""
        wait = self.throttle(key, now).retry_after(now)
        if wait is not None:
            raise TooManyAttemptsError(math.ceil(wait.total_seconds()))

    def admin_roster(self, now: datetime) -> AdminRoster:
        """Who holds the ADMIN role (started at boot from the log; see upgrades)."""
        return self._stored_or(
            AdminRoster.create_id(), lambda: AdminRoster.start([], now)
        )

    def reset_asks(self, address_hash: str, now: datetime) -> ResetAsks:
        """The reset links asked for an address, by its keyed hash."""
        return self._stored_or(
            ResetAsks.create_id(address_hash),
            lambda: ResetAsks.start(address_hash, now),
        )

    def unknown_logins(self, address_hash: str, now: datetime) -> UnknownLogins:
        """The attempts on an address without an account, by its keyed hash."""
        return self._stored_or(
            UnknownLogins.create_id(address_hash),
            lambda: UnknownLogins.start(address_hash, now),
        )

    def count_attempt(
        self,
        key: str,
        policy: ThrottlePolicy,
        now: datetime,
        along: Callable[[], Sequence[BaseAggregate[UUID]]] = tuple,
    ) -> None:
        """Refuse while `key` is blocked; else count one attempt against it, in
        one save with what `along` changes (decided afresh on each retry)."""
        self.check_not_blocked(key, now)

        def count() -> None:
            throttle = self.throttle(key, now)
            throttle.count_attempt(policy, now)
            self.save(throttle, *along())

        self.attempt(count)

    def get_user(self, user_id: UUID) -> User:
        """The user, replayed from the event store; an erased one is no more."""
        user = self._get(user_id, User, UserNotFoundError)
        if user.is_erased:
            raise UserNotFoundError(user_id)
        return user

    def find_user_by_email(self, email: str) -> User | None:
        """The user holding this email's claim, read from the event store."""
        claim = self.find_claim(email)
        if claim is None or claim.user_id is None:
            return None
        user: User = self.repository.get(claim.user_id)
        return None if user.is_erased else user  # erased, not yet released

    def recent(self, aggregate_id: UUID) -> list[object]:
        """The aggregate's newest events, newest first."""
        return list(self.events.get(aggregate_id, desc=True, limit=RECENT_EVENTS))

    def newest(self, aggregate_id: UUID, kind: type[Event]) -> Event | None:
        """The aggregate's newest event of `kind`, among its recent ones."""
        return next((e for e in self.recent(aggregate_id) if isinstance(e, kind)), None)

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

    def exclusively(self, aggregate_id: UUID) -> AbstractContextManager[None]:
        """Keep other writers of the aggregate waiting while the block runs.

        For a command that must not starve (a revocation racing logins): its
        read and save then cannot lose. In memory there is nothing to hold.
        """
        if isinstance(self.recorder, StoreTransactions):
            return self.recorder.exclusively(aggregate_id)
        return nullcontext()

    def behind(self, aggregate_id: UUID) -> None:
        """Decide after any command holding the aggregate exclusively (a
        revocation, a disable, an erasure) and before the next one: for a
        command that decides on the aggregate but saves another."""
        if isinstance(self.recorder, StoreTransactions):
            self.recorder.behind(aggregate_id)

    def one_transaction(self) -> AbstractContextManager[None]:
        """Read and save in one database transaction: one commit per command.

        Only for commands that do no slow work (no password hashing) between
        their reads and their save: the transaction holds a connection.
        """
        if isinstance(self.recorder, StoreTransactions):
            return self.recorder.one_transaction()
        return nullcontext()

    def attempt(
        self, command: Callable[[], Result], attempts: int = RETRY_ATTEMPTS
    ) -> Result:
        """Run `command` (read, decide, save) as one transaction, retrying lost races.

        `command` must save last: an error raised after its save undoes it.
        """

        def in_one_transaction() -> Result:
            with self.one_transaction():
                return command()

        return retry_on_conflict(in_one_transaction, attempts)

    def update_user(self, user_id: UUID, command: Callable[[User], None]) -> None:
        """Apply `command` to a fresh copy of the user and save it, retrying races."""

        def update() -> None:
            user = self.get_user(user_id)
            command(user)
            self.save(user)

        self.attempt(update)
