"""Values passed into and out of the use cases, and the refresh-token format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from application.errors import InvalidRefreshTokenError
from domain.reset_asks import ResetAsks
from domain.session import RefreshPolicy
from domain.throttle import ThrottlePolicy
from domain.unknown_logins import UnknownLogins
from domain.user import LockoutPolicy, MfaPolicy
from domain.values import Factor, Role, fold_email

if TYPE_CHECKING:
    from application.read_models import UserRow

# A refresh token is "<session id hex>.<256 random bits>"; anything longer is junk.
REFRESH_TOKEN_MAX_LENGTH = 128
# `<session id>.<generation>.<secret>`; tokens of before generations have two.
TOKEN_PARTS = 3


@dataclass(frozen=True)
class AccountChanges:
    """What an admin changes on an account at once (None: left as it is)."""

    role: Role | None = None
    unlock: bool = False
    disabled: bool | None = None


@dataclass(frozen=True)
class AuthPolicy:
    """The rules of the use cases that come from configuration."""

    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    # Every signup counts against its address, a refused one too (it tells
    # whether an address has an account).
    signup: ThrottlePolicy = field(
        default_factory=lambda: ThrottlePolicy(
            max_attempts=20, window=timedelta(hours=1)
        )
    )
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    mfa: MfaPolicy = field(default_factory=MfaPolicy)
    # How long after a password change a retry of it is told it is done.
    retry_window: timedelta = timedelta(minutes=2)


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the audit trail, and the key it retries
    under: a login or signup sent again with the same one is answered with
    the session the first opened, never a second."""

    ip: str = ""
    user_agent: str = ""
    retry_key: str = ""


@dataclass(frozen=True)
class SessionGrant:
    """What a successful login or refresh hands to the client."""

    user: UserRow
    session_id: UUID
    refresh_token: str
    refresh_expires_at: datetime
    factors: tuple[Factor, ...] = (Factor.PASSWORD,)
    # The answer to a retry (same Idempotency-Key) of the request that opened it.
    replayed: bool = False

    @property
    def user_id(self) -> UUID:
        return self.user.id

    @property
    def role(self) -> Role:
        return Role(self.user.role)


def new_mfa_token(user_id: UUID) -> str:
    """The token of a password step that awaits its second factor: it names
    the account (whose stream holds the challenge) and 256 random bits."""
    return f"{user_id.hex}.{secrets.token_urlsafe(32)}"


def user_of_mfa_token(token: str) -> UUID | None:
    """The account an MFA token names; None if it is not one."""
    user_hex, dot, rest = token.partition(".")
    if not dot or len(rest) != 43:
        return None
    try:
        return UUID(hex=user_hex) if len(user_hex) == 32 else None
    except ValueError:
        return None


def hash_token(token: str) -> str:
    """Hash a token for storage: it has 256 random bits, so SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token(session_id: UUID) -> str:
    """A session's first refresh token: `<session id>.0.<256 random bits>`."""
    return f"{session_id.hex}.0.{secrets.token_urlsafe(32)}"


def keyed_session(key: bytes, user_id: UUID, retry_key: str) -> tuple[UUID, str]:
    """The session id and first refresh token a login under `retry_key` opens.

    Both are HMACs under the server's key, so a retry derives the same pair
    and nobody without that key can.
    """
    seed = hmac.new(key, f"{user_id}:{retry_key}".encode(), hashlib.sha256).digest()
    session_id = UUID(bytes=seed[:16], version=4)
    secret = hmac.new(key, seed, hashlib.sha256).digest()
    return session_id, f"{session_id.hex}.0.{_text(secret)}"


def _text(mac: bytes) -> str:
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def successor_token(key: bytes, token: str, generation: int) -> str:
    """The token that replaces `token` at `generation`: an HMAC of it.

    The same token always has the same successor, so tabs racing on one
    token within the reuse interval are all handed the one that won.
    """
    mac = hmac.new(key, token.encode(), hashlib.sha256).digest()
    return f"{session_id_of(token).hex}.{generation}.{_text(mac)}"


def lookup_name(key: bytes, purpose: str, value: str) -> str:
    """A keyed hash naming the stream found by a personal value (an address
    form, a client address): it finds the stream and never reveals the value,
    and without the key no guess can be tried against a copy of the log."""
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def address_hash(key: bytes, email: str) -> str:
    """A keyed hash of the address as typed, folded: it names, never reveals."""
    return hmac.new(key, fold_email(email).encode(), hashlib.sha256).hexdigest()


def address_name(key: bytes, email: str, era: int) -> str:
    """The keyed name of an address's own streams (unknown logins, reset
    asks) in an era: the next begins when an erasure releases the address,
    so that nothing links its next account to the erased one."""
    hashed = address_hash(key, email)
    return f"{hashed}/{era}" if era else hashed


def address_streams(key: bytes, email: str, era: int) -> tuple[UUID, UUID]:
    """The streams of an address in an era: its unknown logins, its reset asks."""
    name = address_name(key, email, era)
    return UnknownLogins.create_id(name), ResetAsks.create_id(name)


def generation_of(token: str) -> int | None:
    """The generation a token names (None for those of before generations)."""
    parts = token.split(".")
    if len(parts) == TOKEN_PARTS and parts[1].isdecimal() and len(parts[1]) < 10:
        return int(parts[1])
    return None


def session_id_of(token: str) -> UUID:
    head, dot, secret = token.partition(".")
    if len(token) > REFRESH_TOKEN_MAX_LENGTH or not dot or not secret:
        raise InvalidRefreshTokenError
    try:
        return UUID(hex=head)
    except ValueError:
        raise InvalidRefreshTokenError from None


# The fields that hold personal data, in any event or snapshot that has them:
# the mapper seals each with its owner's data key (ADR 31).
# The TOTP secret is sealed with them: it is not personal but secret, and
# the same key keeps it, and destroys it with the account.
PERSONAL_FIELDS = frozenset({"email", "ip", "user_agent", "totp_secret"})


def data_owner(stream_id: UUID, state: dict[str, object]) -> UUID:
    """Whose key seals the personal fields of an event (or a snapshot's
    state): the account it is about (`user_id`), else its stream's own (an
    account's stream, or one no account owns: an unknown address's)."""
    snapshot = state.get("state")
    for holder in (state, snapshot if isinstance(snapshot, dict) else {}):
        owner = holder.get("user_id")
        if isinstance(owner, UUID):
            return owner
    return stream_id
