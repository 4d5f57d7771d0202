"""Session security over HTTP: reuse detection, races, session management, lockouts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from application.values import hash_token
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import (
    PASSWORD,
    bearer,
    eventually,
    login,
    new_email,
    session_of,
    signup,
)

pytestmark = [pytest.mark.http, pytest.mark.postgres]


def history(database_url: str, user_id: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kind, detail, ip FROM read_models.login_history"
            " WHERE user_id = %s ORDER BY position",
            (user_id,),
        ).fetchall()
    return [(str(kind), str(detail), str(ip)) for kind, detail, ip in rows]


def rotations(database_url: str, session_id: str) -> list[tuple[int, str]]:
    """(generation, refresh token hash) of each stored rotation, in order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT state FROM auth_events WHERE originator_id = %s AND topic ="
            " 'authledger:Session.TokenRotated' ORDER BY originator_version",
            (session_id,),
        ).fetchall()
    events = [json.loads(bytes(state)) for (state,) in rows]
    return [(int(e["generation"]), str(e["refresh_token_hash"])) for e in events]


def refresh_in_parallel(base_url: str, token: str, count: int) -> list[httpx.Response]:
    def refresh(_: int) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            return http.post("/api/auth/refresh", json={"refresh_token": token})

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(refresh, range(count)))


def test_reusing_a_rotated_token_revokes_the_session_and_is_in_the_history(
    client: httpx.Client, module_database_url: str
) -> None:
    tokens = signup(client)
    successor = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    ).json()

    replay = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )

    assert replay.status_code == 401
    assert client.get("/api/auth/me", headers=bearer(successor)).status_code == 401
    kinds = eventually(
        lambda: history(module_database_url, tokens["user"]["id"]),
        lambda entries: len(entries) >= 4,
    )
    assert [(kind, detail) for kind, detail, _ in kinds][2:] == [
        ("token_rotated", "generation 1"),
        ("session_revoked", "reuse_detected"),
    ]


def test_parallel_refreshes_of_one_token_yield_exactly_one_successor_in_strict_mode(
    server: str, client: httpx.Client, module_database_url: str
) -> None:
    tokens = signup(client)

    answers = refresh_in_parallel(server, tokens["refresh_token"], 6)

    assert sorted(a.status_code for a in answers) == [200] + [401] * 5
    assert [g for g, _ in rotations(module_database_url, session_of(tokens))] == [1]


def test_sessions_are_listed_and_one_can_be_revoked(client: httpx.Client) -> None:
    email = new_email()
    first = signup(client, email)
    second = login(client, email).json()

    listed = client.get("/api/auth/sessions", headers=bearer(first))

    assert listed.status_code == 200
    sessions = listed.json()
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [False, True]
    assert {s["ip"] for s in sessions} == {"127.0.0.1"}
    other = sessions[0]["id"]
    revoked = client.delete(f"/api/auth/sessions/{other}", headers=bearer(first))
    assert revoked.status_code == 200
    assert client.get("/api/auth/me", headers=bearer(second)).status_code == 401
    assert len(client.get("/api/auth/sessions", headers=bearer(first)).json()) == 1


def test_another_users_session_cannot_be_revoked_and_looks_missing(
    client: httpx.Client,
) -> None:
    mine = signup(client)
    theirs = signup(client)
    their_session = client.get("/api/auth/sessions", headers=bearer(theirs)).json()[0][
        "id"
    ]

    response = client.delete(
        f"/api/auth/sessions/{their_session}", headers=bearer(mine)
    )

    assert response.status_code == 404
    assert response.json()["code"] == "session_not_found"
    assert client.get("/api/auth/me", headers=bearer(theirs)).status_code == 200


def test_changing_the_password_ends_every_other_session(client: httpx.Client) -> None:
    email = new_email()
    here = signup(client, email)
    elsewhere = login(client, email).json()

    wrong = client.post(
        "/api/auth/password",
        json={"current_password": "not it at all", "new_password": "a brand new one"},
        headers=bearer(here),
    )
    changed = client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new one"},
        headers=bearer(here),
    )

    assert wrong.status_code == 400
    assert wrong.json()["code"] == "wrong_password"
    assert changed.status_code == 200
    assert client.get("/api/auth/me", headers=bearer(here)).status_code == 200
    assert client.get("/api/auth/me", headers=bearer(elsewhere)).status_code == 401
    refresh = client.post(
        "/api/auth/refresh", json={"refresh_token": elsewhere["refresh_token"]}
    )
    assert refresh.status_code == 401
    assert login(client, email).status_code == 401
    assert login(client, email, "a brand new one").status_code == 200


def test_a_locked_account_refuses_even_the_right_password_with_the_same_answer(
    client: httpx.Client, module_database_url: str
) -> None:
    email = new_email()
    user_id = signup(client, email)["user"]["id"]
    failures = [login(client, email, f"wrong guess {n}") for n in range(5)]

    right_password = login(client, email)

    assert right_password.status_code == 401
    assert right_password.json() == failures[0].json()
    expected = (
        ["registered", "session_opened"]
        + ["login_failed"] * 5
        + ["locked_out", "login_failed"]
    )
    entries = eventually(
        lambda: history(module_database_url, user_id), lambda e: len(e) >= len(expected)
    )
    assert [kind for kind, _, _ in entries] == expected


@pytest.fixture(scope="module")
def lenient_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second server on this database, two processes: a reuse interval and
    strict address limits."""
    process, base_url = start_server(
        module_database_url,
        tmp_path_factory.mktemp("lenient"),
        workers=2,  # racing requests land in different processes
        AUTHLEDGER_REFRESH_REUSE_INTERVAL_S="30",
        AUTHLEDGER_CLIENT_MAX_FAILURES="4",
        AUTHLEDGER_CLIENT_WINDOW_S="60",
        AUTHLEDGER_TRUSTED_PROXIES='["10.0.0.0/8"]',
        AUTHLEDGER_RUN_PROJECTIONS="false",
    )
    yield base_url
    stop_server(process)


@pytest.mark.usefixtures("server")  # it runs the projections for both servers
def test_within_the_reuse_interval_every_racer_gets_the_same_newer_token(
    lenient_server: str, module_database_url: str
) -> None:
    with httpx.Client(base_url=lenient_server) as http:
        tokens = signup(http)

    answers = refresh_in_parallel(lenient_server, tokens["refresh_token"], 4)

    assert [a.status_code for a in answers] == [200] * 4
    stored = rotations(module_database_url, session_of(tokens))
    assert [generation for generation, _ in stored] == [1]
    handed_out = {hash_token(a.json()["refresh_token"]) for a in answers}
    assert handed_out == {token_hash for _, token_hash in stored}


@pytest.mark.usefixtures("server")
def test_too_many_failures_from_one_address_get_429_whatever_header_is_forged(
    lenient_server: str, module_database_url: str
) -> None:
    with httpx.Client(base_url=lenient_server) as http:
        email = new_email()
        user_id = signup(http, email)["user"]["id"]
        for n in range(4):
            forged = {"X-Forwarded-For": f"203.0.113.{n}"}
            assert login_with(http, email, f"guess {n}", forged).status_code in (
                401,
                429,
            )

        blocked = login_with(http, email, PASSWORD, {"X-Forwarded-For": "198.51.100.7"})

    assert blocked.status_code == 429
    assert blocked.json()["code"] == "too_many_attempts"
    assert 0 < int(blocked.headers["retry-after"]) <= 60
    entries = eventually(
        lambda: history(module_database_url, user_id),
        lambda e: sum(kind == "login_failed" for kind, _, _ in e) >= 4,
    )
    assert {ip for kind, _, ip in entries if kind == "login_failed"} == {"127.0.0.1"}


def login_with(
    http: httpx.Client, email: str, password: str, headers: dict[str, str]
) -> httpx.Response:
    return http.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )
