"""Signing keys: made and sealed here, their private parts stored only sealed
under the key-encryption key, and this process's view of the ring."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from domain.key_ring import KeyRing, NewSigningKey, SigningKey
from infrastructure.secret_box import SecretBox
from infrastructure.tokens import UnloadedKeyError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from application.signing_keys import SigningKeyRing

ASYMMETRIC = ("ES256", "EdDSA", "RS256")
ALGORITHMS = (*ASYMMETRIC, "HS256")
RSA_BITS = 3072
# A kid no key has: the ring is read again at most this often.
UNKNOWN_KID_REFRESH_S = 1.0


class KeyCipher:
    """Seals private keys, each bound to the key's id and algorithm."""

    def __init__(self, key_encryption_key: bytes) -> None:
        self._box = SecretBox(key_encryption_key, "signing-keys", "signing keys")

    def seal(self, kid: str, algorithm: str, private_key: bytes) -> str:
        return self._box.seal(private_key, _bound_to(kid, algorithm))

    def open(self, kid: str, algorithm: str, sealed: str) -> bytes:
        return self._box.open(sealed, _bound_to(kid, algorithm))


class SealedKeyMaker:
    """Makes keys of the four algorithms (the KeyMaker port)."""

    def __init__(self, cipher: KeyCipher) -> None:
        self.cipher = cipher

    def make(self, algorithm: str) -> NewSigningKey:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"no signing algorithm {algorithm!r}")
        kid = secrets.token_hex(8)  # never read as an option by a shell command
        private, public_jwk = _generate(algorithm)
        if public_jwk:
            public_jwk = {**public_jwk, "kid": kid, "alg": algorithm, "use": "sig"}
        return NewSigningKey(
            kid, algorithm, public_jwk, self.cipher.seal(kid, algorithm, private)
        )


@dataclass(frozen=True)
class LoadedKey:
    """A key of the ring, ready to sign and verify."""

    key: SigningKey
    signing: Any  # a private key object, or the secret of an HS256 key
    verifying: Any  # the public key object, or that secret


@dataclass(frozen=True)
class RingView:
    version: int
    keys: dict[str, LoadedKey]
    active: LoadedKey


class LiveKeyRing:
    """The ring as this process sees it: read again when it changes (every
    `refresh_s` by a poll; at once, at most every second, for a kid it does
    not know, as a replica that rotated first may sign with the next key)."""

    def __init__(
        self, ring: SigningKeyRing, cipher: KeyCipher, clock: Callable[[], datetime]
    ) -> None:
        self._ring = ring
        self._cipher = cipher
        self.clock = clock
        self._lock = threading.Lock()
        self._view: RingView | None = None
        self._asked_for_unknown_at = 0.0

    @property
    def view(self) -> RingView:
        if self._view is None:
            self.refresh()
        assert self._view is not None  # noqa: S101  (refresh sets it)
        return self._view

    def refresh(self) -> None:
        """Read the ring again if its stream moved on since last read."""
        with self._lock:
            known = self._view.version if self._view else None
            if known is not None and not self._ring.store.recorder.select_events(
                KeyRing.create_id(), gt=known, limit=1
            ):
                return
            ring = self._ring.current()
            if ring is None:
                raise LookupError("the key ring has not been started")
            old = self._view.keys if self._view else {}
            keys = {
                key.kid: self._loaded(key, old.get(key.kid)) for key in ring.all_keys()
            }
            self._view = RingView(ring.version, keys, keys[ring.active.kid])

    def verifying(self, kid: str, *, look_up: bool = True) -> LoadedKey | None:
        """The key that verifies tokens of `kid` now, if any; without
        `look_up`, UnloadedKeyError when finding out would read the ring."""
        found = self.view.keys.get(kid)
        now = time.monotonic()
        if found is None and now - self._asked_for_unknown_at > UNKNOWN_KID_REFRESH_S:
            if not look_up:
                raise UnloadedKeyError
            # Apart from the poll: a kid another replica signs with is read
            # at once, and a flood of made-up kids costs a query a second.
            self._asked_for_unknown_at = now
            self.refresh()
            found = self.view.keys.get(kid)
        if found is None or not found.key.verifies(self.clock()):
            return None
        return found

    def published(self) -> list[dict[str, str]]:
        """The public keys that verify now (next, active, retired)."""
        now = self.clock()
        return [
            dict(loaded.key.public_jwk)
            for loaded in self.view.keys.values()
            if loaded.key.public_jwk and loaded.key.verifies(now)
        ]

    def _loaded(self, key: SigningKey, before: LoadedKey | None) -> LoadedKey:
        if before is not None:  # opened once; only its state moves
            return LoadedKey(key, before.signing, before.verifying)
        private = self._cipher.open(key.kid, key.algorithm, key.sealed_private_key)
        if key.algorithm == "HS256":
            return LoadedKey(key, private, private)
        loaded = serialization.load_pem_private_key(private, password=None)
        return LoadedKey(key, loaded, loaded.public_key())


def _generate(algorithm: str) -> tuple[bytes, dict[str, str]]:
    """A new private key (PEM, or the raw secret of HS256) and its public JWK."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "HS256":
        return secrets.token_bytes(32), {}
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, {name: str(value) for name, value in jwk.items()}


def _bound_to(kid: str, algorithm: str) -> bytes:
    return f"signing-key:{kid}:{algorithm}".encode()
