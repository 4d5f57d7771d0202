"""The ring's signing keys as an attacker who stole one would hold them:
opened from the log with the tests' key-encryption key, to forge tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import psycopg
from cryptography.hazmat.primitives import serialization

from domain.key_ring import KeyRing
from infrastructure.signing_keys import KeyCipher
from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY


def ring_events(database_url: str) -> list[tuple[str, dict[str, Any]]]:
    """The key ring's events, topic and state, in order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, state FROM auth_events WHERE originator_id = %s"
            " ORDER BY originator_version",
            (KeyRing.create_id(),),
        ).fetchall()
    return [(topic, json.loads(bytes(state))) for topic, state in rows]


def active_key(database_url: str) -> tuple[str, str, Any]:
    """The active key's kid, algorithm and private key (or HS256 secret)."""
    added: dict[str, dict[str, Any]] = {}
    active = ""
    for topic, state in ring_events(database_url):
        if topic == "authledger:KeyRing.KeyAdded":
            added[state["kid"]] = state
        elif topic == "authledger:KeyRing.KeyActivated":
            active = state["kid"]
    key = added[active]
    private = KeyCipher(TEST_KEY_ENCRYPTION_KEY.encode()).open(
        key["kid"], key["algorithm"], key["sealed_private_key"]
    )
    if key["algorithm"] == "HS256":
        return active, key["algorithm"], private
    return active, key["algorithm"], serialization.load_pem_private_key(private, None)


def hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An HS256 token signed with any bytes (PyJWT refuses a public key)."""
    encode = base64.urlsafe_b64encode
    parts = [
        encode(json.dumps(part).encode()).rstrip(b"=") for part in (header, claims)
    ]
    signing_input = b".".join(parts)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + encode(signature).rstrip(b"=")).decode()
