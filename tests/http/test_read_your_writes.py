"""When a command returns, the read models requests depend on already show it."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from tests.http.helpers import PASSWORD, bearer, login, new_email, session_of, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]


def session_row(url: str, session_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT user_id, generation FROM read_models.active_sessions"
            " WHERE session_id = %s",
            (session_id,),
        ).fetchone()


def sessions_of(url: str, user_id: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT session_id::text FROM read_models.active_sessions"
            " WHERE user_id = %s",
            (user_id,),
        ).fetchall()
    return {str(s) for (s,) in rows}


def user_updated_at(url: str, user_id: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT updated_at FROM read_models.users WHERE id = %s", (user_id,)
        ).fetchone()
    assert row is not None
    return row[0]


def test_a_signup_is_in_both_read_models_when_it_returns(
    client: httpx.Client, module_database_url: str
) -> None:
    tokens = signup(client)

    assert user_updated_at(module_database_url, tokens["user"]["id"]) is not None
    assert session_row(module_database_url, session_of(tokens)) is not None


def test_a_refresh_is_in_active_sessions_when_it_returns(
    client: httpx.Client, module_database_url: str
) -> None:
    tokens = signup(client)

    response = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )

    assert response.status_code == 200
    row = session_row(module_database_url, session_of(tokens))
    assert row is not None
    assert row[1] == 1  # the rotation's generation, already


def test_a_logout_is_in_active_sessions_when_it_returns(
    client: httpx.Client, module_database_url: str
) -> None:
    email = new_email()
    first = signup(client, email)
    second = login(client, email).json()

    current = client.post("/api/auth/logout?scope=current", headers=bearer(second))
    assert current.status_code == 200
    assert session_row(module_database_url, session_of(second)) is None
    assert session_row(module_database_url, session_of(first)) is not None

    everywhere = client.post("/api/auth/logout", headers=bearer(first))
    assert everywhere.status_code == 200
    assert sessions_of(module_database_url, first["user"]["id"]) == set()


def test_a_password_change_is_in_both_read_models_when_it_returns(
    client: httpx.Client, module_database_url: str
) -> None:
    email = new_email()
    kept = signup(client, email)
    other = login(client, email).json()
    user_id = kept["user"]["id"]
    before = user_updated_at(module_database_url, user_id)

    response = client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a different one"},
        headers=bearer(kept),
    )

    assert response.status_code == 200
    assert sessions_of(module_database_url, user_id) == {session_of(kept)}
    assert user_updated_at(module_database_url, user_id) > before
    # And the next request with the ended session's token is refused at once
    assert client.get("/api/auth/me", headers=bearer(other)).status_code == 401
