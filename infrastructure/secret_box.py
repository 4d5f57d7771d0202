"""Small secrets the service must read back (a private key, a webhook's
signing secret), stored only sealed under the key-encryption key."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infrastructure.data_keys import WrongKeyEncryptionKeyError
from infrastructure.settings import derive_key

NONCE_BYTES = 12


class SecretBox:
    """AES-256-GCM under a key derived for one purpose; each secret is bound
    to what it belongs to, so a sealed value moved elsewhere does not open."""

    def __init__(self, key_encryption_key: bytes, purpose: str, what: str) -> None:
        self._aead = AESGCM(derive_key(key_encryption_key, purpose))
        self._what = what

    def seal(self, plain: bytes, bound_to: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(
            nonce + self._aead.encrypt(nonce, plain, bound_to)
        ).decode()

    def open(self, sealed: str, bound_to: bytes) -> bytes:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to)
        except InvalidTag:
            raise WrongKeyEncryptionKeyError(
                f"AUTHLEDGER_KEY_ENCRYPTION_KEY does not open the stored"
                f" {self._what}: set the key they were made with"
            ) from None
