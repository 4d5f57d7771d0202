"""Ports the use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from uuid import UUID

if TYPE_CHECKING:
    from eventsourcing.persistence import Mapper, Notification, Transcoder

    from domain.key_ring import NewSigningKey

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Tell the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Tally(StrEnum):
    """What an operator counts of the commands' outcomes (the metric's name)."""

    LOGIN = "logins"
    SIGNUP = "signups"
    REFRESH = "refreshes"
    TOKEN_REUSE = "token_reuse_detections"  # noqa: S105 (a metric's name)
    LOCKOUT = "lockouts"
    PASSWORD_CHANGE = "password_changes"  # noqa: S105
    MFA_CHECK = "mfa_checks"


class Meter(Protocol):
    """Count what the commands decided, once it is stored (label: a fixed word)."""

    def count(self, tally: Tally, label: str = "") -> None: ...


class NoMeter:
    """Count nothing (use-case tests, the CLI)."""

    def count(self, tally: Tally, label: str = "") -> None:
        pass


class PasswordHasher(Protocol):
    """Hash and check passwords; implementations must be slow on purpose."""

    def hash(self, password: str) -> str:
        """Return a salted, slow hash of `password`."""
        ...

    def verify(self, password: str, password_hash: str) -> bool:
        """Tell whether `password` matches `password_hash`."""
        ...

    def verify_dummy(self, password: str) -> None:
        """Spend the time of a real check, for an email that has no account."""
        ...


class PasswordScreen(Protocol):
    """Tell a password an attacker would try early, offline."""

    def weakness(self, password: str, email: str) -> str | None:
        """Why `password` is too easy to guess for the account of `email`, or None."""
        ...


class MailTokens(Protocol):
    """Mint the tokens of mailed links, and say whose account one names."""

    def mint(self, purpose: str, user_id: UUID, request_id: UUID) -> str:
        """The same token every time for the same request: nothing stores it."""
        ...

    def user_of(self, token: str) -> UUID | None:
        """The account a token claims to be for (its hash proves the claim)."""
        ...


@runtime_checkable
class StoreTransactions(Protocol):
    """What a database recorder offers beyond one transaction per save."""

    def exclusively(self, aggregate_id: UUID) -> AbstractContextManager[None]:
        """Hold every other append to `aggregate_id` back while the block runs."""
        ...

    def one_transaction(self) -> AbstractContextManager[None]:
        """Run the block's reads and its save in one database transaction."""
        ...

    def behind(self, aggregate_id: UUID) -> None:
        """Within one_transaction(): wait for a block holding `aggregate_id`
        exclusively to end, and keep new ones waiting until this one ends."""
        ...


@runtime_checkable
class PersonalData(Protocol):
    """What the event store's mapper does with personal fields (ADR 31): it
    seals them with their owner's data key, kept outside the log, and opens
    them while the key lives; a destroyed key leaves them ERASED."""

    def afresh(self) -> AbstractContextManager[None]:
        """Within the block, events open with keys read now, not with keys a
        cache kept from before an erasure: for read models and audits."""
        ...

    def decode_all(self, notifications: Sequence[Notification]) -> list[Any]:
        """The domain events of `notifications`, opened afresh."""
        ...

    def payloads(self, notifications: Sequence[Notification]) -> list[dict[str, Any]]:
        """The stored states of `notifications` as decoded, opened afresh."""
        ...

    def destroy_keys(self, owners: Iterable[UUID]) -> None:
        """Destroy the owners' data keys, for good (in the caller's transaction
        if it has one); no key is ever made for them again."""
        ...


# Builds the event store's mapper for an application, given its transcoder.
MapperFactory = Callable[[Any, "Transcoder"], "Mapper[UUID]"]


class KeyMaker(Protocol):
    """Makes signing keys, their private part sealed for the event store."""

    def make(self, algorithm: str) -> NewSigningKey:
        """A fresh key of `algorithm` (ES256, EdDSA, RS256 or HS256)."""
        ...


class OneTimeCodes(Protocol):
    """TOTP (RFC 6238) as authenticator apps compute it."""

    def new_secret(self) -> str:
        """A new random secret, base32 as apps take it."""
        ...

    def uri(self, secret: str, account: str) -> str:
        """The otpauth:// URI an app scans to add the account."""
        ...

    def step_of(self, secret: str, code: str, now: datetime) -> int | None:
        """The time step (±1 for drift) whose code `code` is, if any."""
        ...


class WebhookSecrets(Protocol):
    """Makes an endpoint's signing secret: shown once, stored only sealed."""

    def make(self, endpoint_id: UUID) -> tuple[str, str]:
        """A new secret (`whsec_…`, to show) and its sealed form (to store)."""
        ...


class WebhookDestinations(Protocol):
    """Says whether the service may send to a URL (no SSRF)."""

    def check(self, url: str) -> None:
        """Raise UnsafeWebhookUrlError if not."""
        ...
