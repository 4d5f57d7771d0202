"""JWT access tokens (RFC 9068) signed by the key ring: each token names its
key (`kid`), and is checked with that key's algorithm only; typ, iss, aud,
exp and iat enforced."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import jwt

from domain.values import Factor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from infrastructure.signing_keys import LiveKeyRing

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105  (a media type, not a secret)
# Tolerated clock skew between this service and its clients, in seconds.
LEEWAY_S = 10
# No honest access token comes near this; refuse before parsing anything bigger.
MAX_TOKEN_LENGTH = 4096
# Headers that would have a verifier fetch or take a key from the token itself
# (RFC 8725 §3.10), or demand extensions it does not know: refused.
FOREIGN_KEY_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})


class InvalidAccessTokenError(Exception):
    """The bearer token is not a valid, unexpired access token of this service."""


class UnloadedKeyError(InvalidAccessTokenError):
    """The token names a key this process has not loaded: look it up first."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    role: str


@dataclass(frozen=True)
class Verified:
    """A token whose signature and claims were checked: what it said, the
    key that signed it, and when it expires."""

    claims: AccessClaims
    kid: str
    expires_at: float


# Tokens whose signature was checked, kept so that a client's next requests
# skip the check (most of an authenticated request's CPU); only the expiry
# and the key's standing are looked at again. A few MB at most.
VERIFIED_KEPT = 4096


AMR = {Factor.PASSWORD: "pwd", Factor.TOTP: "otp", Factor.RECOVERY_CODE: "otp"}
AMR_ORDER = ["pwd", "otp"]


class JwtTokens:
    """Issue and check access tokens; no other token kind validates as one."""

    def __init__(
        self, keys: LiveKeyRing, issuer: str, audience: str, ttl_s: int
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s
        self._verified: dict[str, Verified] = {}

    def issue(
        self,
        user_id: UUID,
        session_id: UUID,
        role: str,
        factors: Sequence[Factor] = (Factor.PASSWORD,),
    ) -> str:
        """Sign an access token for this session with the active key; `amr`
        and `acr` say what its login proved."""
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            # RFC 8176: a recovery code is a one-time password too.
            "amr": sorted({AMR[factor] for factor in factors}, key=AMR_ORDER.index),
            # NIST SP 800-63B: a password and a one-time code are two factors.
            "acr": "aal2" if len(factors) > 1 else "aal1",
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_urlsafe(16),
            "iss": self._issuer,
            "aud": self._audience,
        }
        active = self.keys.view.active
        return jwt.encode(
            claims,
            active.signing,
            algorithm=active.key.algorithm,
            headers={"typ": ACCESS_TOKEN_TYPE, "kid": active.key.kid},
        )

    def verify(self, token: str, *, look_up: bool = True) -> AccessClaims:
        """Check key, algorithm, signature, typ, iss, aud, exp and iat.

        Without `look_up` nothing waits on the database (a caller on the event
        loop): a key not loaded yet raises UnloadedKeyError instead.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAccessTokenError
        known = self._verified.get(token)
        if known is not None:
            return self._still_valid(token, known, look_up=look_up)
        claims = self._verify(token, look_up=look_up)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.pop(next(iter(self._verified), ""), None)  # the oldest
        self._verified[token] = claims
        return claims.claims

    def _still_valid(
        self, token: str, known: Verified, *, look_up: bool
    ) -> AccessClaims:
        """A token verified before: valid while unexpired and its key verifies."""
        if (
            time.time() < known.expires_at + LEEWAY_S
            and self.keys.verifying(known.kid, look_up=look_up) is not None
        ):
            return known.claims
        self._verified.pop(token, None)
        raise InvalidAccessTokenError

    def _verify(self, token: str, *, look_up: bool) -> Verified:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if (
                header.get("typ") != ACCESS_TOKEN_TYPE
                or FOREIGN_KEY_HEADERS & header.keys()
                or not isinstance(kid, str)
            ):
                raise InvalidAccessTokenError
            key = self.keys.verifying(kid, look_up=look_up)
            if key is None or header.get("alg") != key.key.algorithm:
                raise InvalidAccessTokenError
            claims = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "iss", "aud"]},
            )
            access = AccessClaims(
                user_id=UUID(claims["sub"]),
                session_id=UUID(claims["sid"]),
                role=str(claims["role"]),
            )
            return Verified(access, kid, float(claims["exp"]))
        except UnloadedKeyError:
            raise
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            raise InvalidAccessTokenError from None
