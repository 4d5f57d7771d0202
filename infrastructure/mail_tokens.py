"""Tokens of mailed links: an HMAC of the request, minted again, never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
from uuid import UUID

MAX_TOKEN_LENGTH = 128


class HmacMailTokens:
    """`<user id>.<request id>.<HMAC-SHA256(key, purpose:user:request)>`.

    The user records only the token's hash; the outbox mints the same token
    when it sends the mail. The key is derived from the server secret, so a
    token cannot be forged, and one purpose's token is not another's.
    """

    def __init__(self, server_secret: bytes) -> None:
        self._key = hmac.new(
            server_secret, b"authledger/mail-tokens", hashlib.sha256
        ).digest()

    def mint(self, purpose: str, user_id: UUID, request_id: UUID) -> str:
        """The token of one mailed request."""
        message = f"{purpose}:{user_id}:{request_id}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        encoded = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return f"{user_id.hex}.{request_id.hex}.{encoded}"

    def user_of(self, token: str) -> UUID | None:
        """The account the token names, if it looks like one of ours."""
        head, dot, _ = token.partition(".")
        if len(token) > MAX_TOKEN_LENGTH or not dot:
            return None
        try:
            return UUID(hex=head)
        except ValueError:
            return None
