"""The HTTP contract end to end, against a real uvicorn process and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.helpers import PASSWORD, bearer, login, new_email, session_of, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]


def test_signup_me_refresh_logout_flow(client: httpx.Client) -> None:
    email = new_email()
    tokens = signup(client, email)
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["user"]["email"] == email
    assert tokens["user"]["role"] == "USER"
    assert tokens["user"]["is_verified"] is False
    assert "password_hash" not in tokens["user"]

    me = client.get("/api/auth/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json() == tokens["user"]

    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    new_tokens = refreshed.json()
    assert new_tokens["refresh_token"] != tokens["refresh_token"]
    assert client.get("/api/auth/me", headers=bearer(new_tokens)).status_code == 200

    replay = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_refresh_token"

    # The replay revoked the whole session (reuse detection): its newest tokens die too.
    assert client.get("/api/auth/me", headers=bearer(new_tokens)).status_code == 401
    assert (
        client.post(
            "/api/auth/refresh", json={"refresh_token": new_tokens["refresh_token"]}
        ).status_code
        == 401
    )


def test_logout_revokes_every_session_at_once(client: httpx.Client) -> None:
    email = new_email()
    first = signup(client, email)
    second = login(client, email).json()

    response = client.post("/api/auth/logout", headers=bearer(first))

    assert response.status_code == 200
    assert response.json() == {"detail": "Logged out."}
    for tokens in (first, second):
        rejected = client.get("/api/auth/me", headers=bearer(tokens))
        assert rejected.status_code == 401
        assert rejected.headers["www-authenticate"] == "Bearer"
        assert (
            client.post(
                "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ).status_code
            == 401
        )


def test_logout_with_current_scope_keeps_other_sessions(client: httpx.Client) -> None:
    email = new_email()
    first = signup(client, email)
    second = login(client, email).json()

    response = client.post(
        "/api/auth/logout", params={"scope": "current"}, headers=bearer(first)
    )

    assert response.status_code == 200
    assert client.get("/api/auth/me", headers=bearer(first)).status_code == 401
    assert client.get("/api/auth/me", headers=bearer(second)).status_code == 200


def test_login_returns_tokens_for_the_right_password(client: httpx.Client) -> None:
    email = new_email()
    signup(client, email)

    response = login(client, email)

    assert response.status_code == 200
    assert response.json()["user"]["email"] == email
    assert (
        client.get("/api/auth/me", headers=bearer(response.json())).status_code == 200
    )


def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: httpx.Client,
) -> None:
    email = new_email()
    signup(client, email)

    wrong_password = login(client, email, "not the password")
    unknown_email = login(client, new_email(), "not the password")

    assert wrong_password.status_code == unknown_email.status_code == 401
    assert (
        wrong_password.json()
        == unknown_email.json()
        == {
            "detail": "Invalid email or password.",
            "code": "invalid_credentials",
        }
    )


def test_duplicate_signup_is_a_conflict_with_a_stable_body(
    client: httpx.Client,
) -> None:
    email = new_email()
    signup(client, email)

    same_address = "  " + email.replace("example.com", "EXAMPLE.com") + " "
    response = client.post(
        "/api/auth/signup", json={"email": same_address, "password": PASSWORD}
    )

    assert response.status_code == 409
    assert response.json() == {
        "detail": "An account with this email already exists.",
        "code": "email_taken",
    }


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("q7#Vk2!", 422),
        ("q7#Vk2!m", 201),
        (("éßø∂ƒ©˙∆˚¬…ç" * 22)[:256], 201),
        ("q7#Vk2!m" * 33, 422),
    ],
)
def test_password_length_is_counted_in_characters(
    client: httpx.Client, password: str, status: int
) -> None:
    response = client.post(
        "/api/auth/signup", json={"email": new_email(), "password": password}
    )

    assert response.status_code == status, response.text


def test_long_passwords_sharing_their_first_72_bytes_are_different_passwords(
    client: httpx.Client,
) -> None:
    email = new_email()
    common = ("correct horse battery staple " * 3)[:72]
    signup(client, email, common + "first-suffix")

    assert login(client, email, common + "other-suffix").status_code == 401
    assert login(client, email, common + "first-suffix").status_code == 200


def test_health_and_readiness_answer(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


def test_a_signup_and_a_login_sent_again_under_their_key_are_answered_once(
    client: httpx.Client,
) -> None:
    # Given a signup and a login, each sent twice under one Idempotency-Key
    email = new_email()
    body = {"email": email, "password": PASSWORD}
    key = {"Idempotency-Key": f"signup-{email}"}
    signups = [client.post("/api/auth/signup", json=body, headers=key) for _ in "12"]
    key = {"Idempotency-Key": f"login-{email}"}
    logins = [client.post("/api/auth/login", json=body, headers=key) for _ in "12"]

    # Then each retry is the first answer: one account, one session each
    assert [r.status_code for r in signups + logins] == [201, 201, 200, 200]
    for first, again in [signups, logins]:
        assert session_of(again.json()) == session_of(first.json())
        assert again.json()["refresh_token"] == first.json()["refresh_token"]
    sessions = client.get("/api/auth/sessions", headers=bearer(logins[1].json()))
    assert len(sessions.json()) == 2

    # And once its session has rotated, the key is spent
    rotated = client.post(
        "/api/auth/refresh", json={"refresh_token": logins[0].json()["refresh_token"]}
    )
    assert rotated.status_code == 200
    spent = client.post("/api/auth/login", json=body, headers=key)
    assert (spent.status_code, spent.json()["code"]) == (409, "idempotency_key_spent")


@pytest.mark.parametrize("key", ["short", "x" * 256, "has a space", "ünïcode-key"])
def test_a_malformed_idempotency_key_is_a_validation_error(
    client: httpx.Client, key: str
) -> None:
    response = client.post(
        "/api/auth/login",
        json={"email": new_email(), "password": PASSWORD},
        headers={b"Idempotency-Key": key.encode()},
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")


def test_a_logout_sent_again_is_told_it_is_done(client: httpx.Client) -> None:
    # Given three sessions of one user
    email = new_email()
    first, second = signup(client, email), login(client, email).json()
    third = login(client, email).json()

    def logout(tokens: dict[str, Any], scope: str = "") -> httpx.Response:
        path = "/api/auth/logout" + (f"?scope={scope}" if scope else "")
        return client.post(path, headers=bearer(tokens))

    # When a logout of this session, of another, or of all is sent twice,
    # each answer is 200: the retry is told what the first try did
    assert [logout(first, "current").status_code for _ in "12"] == [200, 200]
    path = f"/api/auth/sessions/{session_of(third)}"
    deletes = [client.delete(path, headers=bearer(second)) for _ in "12"]
    assert [r.status_code for r in deletes] == [200, 200]
    assert [logout(second).status_code for _ in "12"] == [200, 200]

    # And so is a DELETE of the caller's own session, sent again with its token
    own = login(client, email).json()
    path = f"/api/auth/sessions/{session_of(own)}"
    deletes = [client.delete(path, headers=bearer(own)) for _ in "12"]
    assert [r.status_code for r in deletes] == [200, 200]

    # But a session ended alone lends its token to no logout everywhere, nor
    # to ending another session, and no ended session's token works otherwise
    other = login(client, email).json()
    logout(other, "current")
    alive = login(client, email).json()
    refused = [
        logout(other),
        client.delete(f"/api/auth/sessions/{session_of(alive)}", headers=bearer(other)),
    ]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [
        (401, "not_authenticated")
    ] * 2
    assert client.get("/api/auth/me", headers=bearer(alive)).status_code == 200
    for tokens in (first, second, third, own, other):
        assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 401
