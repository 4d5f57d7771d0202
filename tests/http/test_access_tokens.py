"""Every way an access token can be wrong gets 401 with a Bearer challenge."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.http.helpers import bearer, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]


@pytest.fixture(scope="module")
def jwt_secret(server_data_dir: Path) -> bytes:
    """The development secret the server generated in its data directory."""
    secrets: dict[str, str] = json.loads((server_data_dir / "secrets.json").read_text())
    return secrets["jwt_secret"].encode()


def claims_of(tokens: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        tokens["access_token"], options={"verify_signature": False}
    )
    return claims


def forge(secret: bytes, claims: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(
        claims, secret, algorithm="HS256", headers={"typ": "at+jwt", **headers}
    )


def unsigned(claims: dict[str, Any]) -> str:
    header = {"alg": "none", "typ": "at+jwt"}
    encode = jwt.utils.base64url_encode
    return (
        b".".join(
            encode(json.dumps(part).encode()) for part in (header, claims)
        ).decode()
        + "."
    )


def tampered(tokens: dict[str, Any], _: bytes) -> str:
    head, _, signature = tokens["access_token"].split(".")
    claims = claims_of(tokens) | {"role": "ADMIN"}
    forged_payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{head}.{forged_payload}.{signature}"


def with_claims(**changes: Any) -> Callable[[dict[str, Any], bytes], str]:
    def make(tokens: dict[str, Any], secret: bytes) -> str:
        claims = claims_of(tokens) | changes
        return forge(secret, {k: v for k, v in claims.items() if v is not None})

    return make


BAD_TOKENS: dict[str, Callable[[dict[str, Any], bytes], str]] = {
    "tampered payload": tampered,
    "alg none": lambda tokens, _: unsigned(claims_of(tokens)),
    "wrong key": lambda tokens, _: forge(b"k" * 64, claims_of(tokens)),
    "expired": with_claims(exp=int(time.time()) - 120, iat=int(time.time()) - 1000),
    "wrong audience": with_claims(aud="another-service"),
    "missing audience": with_claims(aud=None),
    "wrong issuer": with_claims(iss="https://evil.example"),
    "missing session": with_claims(sid=None),
    "unknown session": with_claims(sid=str(uuid.uuid4())),
    "someone else's session": with_claims(sub=str(uuid.uuid4())),
    "not an access token type": lambda tokens, secret: jwt.encode(
        claims_of(tokens), secret, algorithm="HS256", headers={"typ": "JWT"}
    ),
    "refresh token as bearer": lambda tokens, _: str(tokens["refresh_token"]),
    "garbage": lambda *_: "not-a-jwt",
    "100 KB": lambda *_: "a" * 100_000,
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_access_token_is_refused(
    client: httpx.Client, jwt_secret: bytes, kind: str
) -> None:
    tokens = signup(client)
    assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 200

    token = BAD_TOKENS[kind](tokens, jwt_secret)
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "detail": "Missing or invalid access token.",
        "code": "not_authenticated",
    }


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
def test_a_missing_or_malformed_authorization_header_is_refused(
    client: httpx.Client, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}

    response = client.get("/api/auth/me", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_access_token_carries_the_rfc_9068_header_and_claims(
    client: httpx.Client,
) -> None:
    tokens = signup(client)

    header = jwt.get_unverified_header(tokens["access_token"])
    claims = claims_of(tokens)

    assert header == {"alg": "HS256", "typ": "at+jwt"}
    assert set(claims) == {"sub", "sid", "role", "iat", "exp", "jti", "iss", "aud"}
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["role"] == "USER"
