"""Values passed into and out of the use cases, and the refresh-token format."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from application.errors import InvalidRefreshTokenError
from domain.session import RefreshPolicy
from domain.throttle import ThrottlePolicy
from domain.user import LockoutPolicy
from domain.values import Role

if TYPE_CHECKING:
    from application.read_models import UserRow

# A refresh token is "<session id hex>.<256 random bits>"; anything longer is junk.
REFRESH_TOKEN_MAX_LENGTH = 128


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


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the audit trail."""

    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class SessionGrant:
    """What a successful login or refresh hands to the client."""

    user: UserRow
    session_id: UUID
    refresh_token: str
    refresh_expires_at: datetime

    @property
    def user_id(self) -> UUID:
        return self.user.id

    @property
    def role(self) -> Role:
        return Role(self.user.role)


def hash_token(token: str) -> str:
    """Hash a token for storage: it has 256 random bits, so SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token(session_id: UUID) -> str:
    return f"{session_id.hex}.{secrets.token_urlsafe(32)}"


def session_id_of(token: str) -> UUID:
    head, dot, secret = token.partition(".")
    if len(token) > REFRESH_TOKEN_MAX_LENGTH or not dot or not secret:
        raise InvalidRefreshTokenError
    try:
        return UUID(hex=head)
    except ValueError:
        raise InvalidRefreshTokenError from None
