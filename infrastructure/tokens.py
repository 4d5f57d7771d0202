"""JWT access tokens (RFC 9068): HS256 pinned; typ, iss, aud and exp enforced."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from uuid import UUID

import jwt

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105  (a media type, not a secret)
# Tolerated clock skew between this service and its clients, in seconds.
LEEWAY_S = 10
# No honest access token comes near this; refuse before parsing anything bigger.
MAX_TOKEN_LENGTH = 4096


class InvalidAccessTokenError(Exception):
    """The bearer token is not a valid, unexpired access token of this service."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    role: str


class JwtTokens:
    """Issue and check access tokens; no other token kind validates as one."""

    def __init__(self, secret: bytes, issuer: str, audience: str, ttl_s: int) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s

    def issue(self, user_id: UUID, session_id: UUID, role: str) -> str:
        """Sign an access token for this session."""
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_urlsafe(16),
            "iss": self._issuer,
            "aud": self._audience,
        }
        return jwt.encode(
            claims,
            self._secret,
            algorithm=ALGORITHM,
            headers={"typ": ACCESS_TOKEN_TYPE},
        )

    def verify(self, token: str) -> AccessClaims:
        """Check signature, algorithm, typ, iss, aud and exp; return the claims."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAccessTokenError
        try:
            if jwt.get_unverified_header(token).get("typ") != ACCESS_TOKEN_TYPE:
                raise InvalidAccessTokenError
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "iss", "aud"]},
            )
            return AccessClaims(
                user_id=UUID(claims["sub"]),
                session_id=UUID(claims["sid"]),
                role=str(claims["role"]),
            )
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            raise InvalidAccessTokenError from None
