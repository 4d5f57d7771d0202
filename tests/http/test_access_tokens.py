"""Every way an access token can be wrong gets 401 with a Bearer challenge."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.http.helpers import bearer, signup
from tests.signing import active_key, hs256_with

pytestmark = [pytest.mark.http, pytest.mark.postgres]


Signing = tuple[str, str, Any]  # kid, algorithm, private key


@pytest.fixture(scope="module")
def signing(server: str, module_database_url: str) -> Signing:
    """The active signing key of the server (started: its ring made), as
    one who stole it would hold it."""
    assert server
    return active_key(module_database_url)


def claims_of(tokens: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        tokens["access_token"], options={"verify_signature": False}
    )
    return claims


def forge(signing: Signing, claims: dict[str, Any], **headers: Any) -> str:
    kid, algorithm, private = signing
    return jwt.encode(
        claims,
        private,
        algorithm=algorithm,
        headers={"typ": "at+jwt", "kid": kid, **headers},
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


def tampered(tokens: dict[str, Any], _: Signing) -> str:
    head, _, signature = tokens["access_token"].split(".")
    claims = claims_of(tokens) | {"role": "ADMIN"}
    forged_payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{head}.{forged_payload}.{signature}"


def with_claims(**changes: Any) -> Callable[[dict[str, Any], Signing], str]:
    def make(tokens: dict[str, Any], signing: Signing) -> str:
        claims = claims_of(tokens) | changes
        return forge(signing, {k: v for k, v in claims.items() if v is not None})

    return make


def with_headers(**headers: Any) -> Callable[[dict[str, Any], Signing], str]:
    return lambda tokens, signing: forge(signing, claims_of(tokens), **headers)


def another_key(tokens: dict[str, Any], signing: Signing) -> str:
    """Signed by a key of the same algorithm under the active key's kid."""
    kid, algorithm, _ = signing
    return forge(
        (kid, algorithm, ec.generate_private_key(ec.SECP256R1())), claims_of(tokens)
    )


def without_kid(tokens: dict[str, Any], signing: Signing) -> str:
    _, algorithm, private = signing
    return jwt.encode(
        claims_of(tokens), private, algorithm=algorithm, headers={"typ": "at+jwt"}
    )


def hs256_with_the_public_key(tokens: dict[str, Any], signing: Signing) -> str:
    """The classic confusion: HS256, keyed with the published public key."""
    kid, _, private = signing
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    return hs256_with(public, header, claims_of(tokens))


def public_jwk(signing: Signing) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(signing[2].public_key(), as_dict=True)
    return jwk


NOW = int(time.time())
BAD_TOKENS: dict[str, Callable[[dict[str, Any], Signing], str]] = {
    "tampered payload": tampered,
    "alg none": lambda tokens, _: unsigned(claims_of(tokens)),
    "another key under the active kid": another_key,
    "expired": with_claims(exp=NOW - 120, iat=NOW - 1000),
    "missing exp": with_claims(exp=None),
    "iat in the future": with_claims(iat=NOW + 3600, exp=NOW + 7200),
    "wrong audience": with_claims(aud="another-service"),
    "missing audience": with_claims(aud=None),
    "wrong issuer": with_claims(iss="https://evil.example"),
    "missing session": with_claims(sid=None),
    "unknown session": with_claims(sid=str(uuid.uuid4())),
    "someone else's session": with_claims(sub=str(uuid.uuid4())),
    "not an access token type": with_headers(typ="JWT"),
    "unknown kid": with_headers(kid="no-such-key"),
    "missing kid": without_kid,
    "jku header": with_headers(jku="https://evil.example/jwks.json"),
    "x5u header": with_headers(x5u="https://evil.example/cert.pem"),
    "jwk header": lambda tokens, signing: forge(
        signing, claims_of(tokens), jwk=public_jwk(signing)
    ),
    "HS256 keyed with the public key": hs256_with_the_public_key,
    "refresh token as bearer": lambda tokens, _: str(tokens["refresh_token"]),
    "garbage": lambda *_: "not-a-jwt",
    "100 KB": lambda *_: "a" * 100_000,
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_access_token_is_refused(
    client: httpx.Client, signing: Signing, kind: str
) -> None:
    tokens = signup(client)
    assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 200
    # (a token forged as the good one, but for what each case changes, passes)
    good = forge(signing, claims_of(tokens))
    assert (
        client.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {good}"}
        ).status_code
        == 200
    )

    token = BAD_TOKENS[kind](tokens, signing)
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "detail": "Missing or invalid access token.",
        "code": "not_authenticated",
    }


def test_an_access_token_presented_as_a_refresh_token_is_refused(
    client: httpx.Client,
) -> None:
    tokens = signup(client)

    response = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["access_token"]}
    )

    assert (response.status_code, response.json()["code"]) == (
        401,
        "invalid_refresh_token",
    )


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

    assert set(header) == {"alg", "typ", "kid"}
    assert (header["alg"], header["typ"]) == ("ES256", "at+jwt")
    assert set(claims) == {
        "sub",
        "sid",
        "role",
        "iat",
        "exp",
        "jti",
        "iss",
        "aud",
        "amr",
        "acr",
    }
    assert (claims["amr"], claims["acr"]) == (["pwd"], "aal1")
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["role"] == "USER"
