"""An attacker's pass over the running service: each attack, and that it fails."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli import run_cli
from tests.http.helpers import PASSWORD, bearer, login, new_email, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]

ADMIN_PASSWORD = "an admin's long password"
NEW_PASSWORD = "a brand new passphrase"


def change_password(
    client: httpx.Client, tokens: dict[str, Any], current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    return client.post(
        "/api/auth/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(tokens),
    )


@pytest.fixture(scope="module")
def admin(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> dict[str, Any]:
    email = new_email()
    run_cli(
        module_database_url,
        server_data_dir,
        "users",
        "create-admin",
        email,
        AUTHLEDGER_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    tokens: dict[str, Any] = login(client, email, ADMIN_PASSWORD).json()
    return tokens


def test_a_stolen_access_token_cannot_guess_the_password_past_the_lock(
    client: httpx.Client,
) -> None:
    # Given: an attacker holding the victim's access token guesses the password
    email = new_email()
    stolen = signup(client, email)
    guesses = [change_password(client, stolen, f"guess number {n}") for n in range(5)]
    assert [g.json()["code"] for g in guesses] == ["wrong_password"] * 5

    # When: the next guess is the right one
    right = change_password(client, stolen, PASSWORD)

    # Then: the account is locked: the change is refused, the password unchanged
    assert right.status_code == 423
    assert right.json()["code"] == "account_locked"
    assert 0 < int(right.headers["retry-after"]) <= 60
    assert login(client, email, NEW_PASSWORD).status_code == 401


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_one_mailbox_is_one_account_whatever_its_case_or_width(
    client: httpx.Client,
) -> None:
    # Given an account
    email = new_email()
    owner = signup(client, email)
    local, domain = email.split("@")

    for twin in (email.capitalize(), email.upper(), f"{full_width(local)}@{domain}"):
        # When its twin signs up, it is told the account exists
        answer = client.post(
            "/api/auth/signup", json={"email": twin, "password": PASSWORD}
        )
        assert (answer.status_code, answer.json()["code"]) == (409, "email_taken")
        # And the twin logs in to the one account
        assert login(client, twin).json()["user"]["id"] == owner["user"]["id"]


def test_a_look_alike_address_mixing_scripts_cannot_sign_up(
    client: httpx.Client,
) -> None:
    look_alike = new_email().replace("e", "\u0435", 1)  # a Cyrillic e

    answer = client.post(
        "/api/auth/signup", json={"email": look_alike, "password": PASSWORD}
    )

    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error")
    assert "mixes scripts" in answer.json()["detail"]


@pytest.mark.parametrize(
    "weak", ["password", "12345678", "qwertyui", "11111111", "password1", " " * 8]
)
def test_a_common_password_is_refused_at_signup_with_its_reason(
    client: httpx.Client, weak: str
) -> None:
    answer = client.post(
        "/api/auth/signup", json={"email": new_email(), "password": weak}
    )

    assert (answer.status_code, answer.json()["code"]) == (422, "weak_password")
    reason = answer.json()["detail"].removeprefix("The password is too easy to guess.")
    assert reason.strip()  # and why, in words


def test_the_email_as_its_own_password_is_refused(client: httpx.Client) -> None:
    email = new_email()

    answer = client.post("/api/auth/signup", json={"email": email, "password": email})

    assert (answer.status_code, answer.json()["code"]) == (422, "weak_password")
    assert "made from the email address" in answer.json()["detail"]


def test_a_common_new_password_is_refused_at_a_change(client: httpx.Client) -> None:
    email = new_email()
    tokens = signup(client, email)

    answer = change_password(client, tokens, PASSWORD, "password1")

    assert (answer.status_code, answer.json()["code"]) == (422, "weak_password")
    assert login(client, email, PASSWORD).status_code == 200


def test_create_admin_refuses_a_common_password(
    module_database_url: str, server_data_dir: Path
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_cli(
            module_database_url,
            server_data_dir,
            "users",
            "create-admin",
            new_email(),
            AUTHLEDGER_ADMIN_PASSWORD="password1",
        )

    assert "too easy to guess" in refused.value.stderr


def test_token_responses_are_never_cached_and_no_response_is_sniffed(
    client: httpx.Client,
) -> None:
    tokens = signup(client)
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    answers = [
        refreshed,
        client.get("/api/auth/me", headers=bearer(tokens)),
        client.get("/nowhere"),
        client.get("/healthz"),
    ]

    assert refreshed.status_code == 200
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert refreshed.headers["pragma"] == "no-cache"


def test_too_soon_says_how_long_to_wait(client: httpx.Client) -> None:
    tokens = signup(client)
    first = client.post("/api/auth/verify/request", headers=bearer(tokens))

    again = client.post("/api/auth/verify/request", headers=bearer(tokens))

    assert first.status_code == 202
    assert again.status_code == 429
    assert again.json()["code"] == "too_soon"
    assert 55 <= int(again.headers["retry-after"]) <= 60


@pytest.mark.parametrize("offset", [2**63, 2**31])
def test_offsets_beyond_any_page_are_refused_as_invalid(
    client: httpx.Client, admin: dict[str, Any], offset: int
) -> None:
    user_id = admin["user"]["id"]
    for path in ("/api/admin/users", f"/api/admin/users/{user_id}/history"):
        answer = client.get(path, params={"offset": offset}, headers=bearer(admin))

        assert answer.status_code == 422
        assert answer.json()["code"] == "validation_error"


def test_a_nul_in_the_email_prefix_is_refused_as_invalid(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    answer = client.get(
        "/api/admin/users", params={"email_prefix": "\x00"}, headers=bearer(admin)
    )

    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error")


@pytest.mark.parametrize("unlock", [0, 1, "true", "no"])
def test_only_json_booleans_are_booleans(
    client: httpx.Client, admin: dict[str, Any], unlock: object
) -> None:
    user_id = signup(client)["user"]["id"]

    answer = client.patch(
        f"/api/admin/users/{user_id}", json={"unlock": unlock}, headers=bearer(admin)
    )

    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error")


def test_the_history_of_a_stream_that_is_not_a_user_is_not_found(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
) -> None:
    tokens = signup(client)
    session_id = tokens["refresh_token"].split(".")[0]

    over_http = client.get(
        f"/api/admin/users/{session_id}/history", headers=bearer(admin)
    )
    with pytest.raises(subprocess.CalledProcessError) as on_the_cli:
        run_cli(module_database_url, server_data_dir, "audit", "history", session_id)

    assert over_http.status_code == 404
    assert "no such user" in on_the_cli.value.stderr.lower()


HOSTILE_AGENTS = {
    "markup": b"x[/nope]",
    "hyperlink": b"[link=https://evil.example]click[/link]",
    "next line": b"ok\x85forged row",
}


def test_a_hostile_user_agent_is_stored_printable_and_shown_literally(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> None:
    # Given: one failed login per hostile user agent, unauthenticated
    email = new_email()
    signup(client, email)
    for agent in HOSTILE_AGENTS.values():
        answer = client.post(
            "/api/auth/login",
            json={"email": email, "password": "not the password"},
            headers={b"User-Agent": agent},
        )
        assert answer.status_code == 401

    # When: an auditor prints the user's history from the event store
    shown = run_cli(
        module_database_url, server_data_dir, "audit", "history", email, "--replay"
    ).stdout

    # Then: every agent shows as typed, less its control and format characters
    assert "x[/nope]" in shown
    assert "[link=https://evil.example]click[/link]" in shown
    assert "okforged row" in shown
    assert not {"\x85", "\x1b"} & set(shown)


def server_log(server_data_dir: Path) -> str:
    return "".join(path.read_text() for path in server_data_dir.glob("server-*.log"))


def test_a_token_in_a_query_string_never_reaches_the_access_log(
    client: httpx.Client, server_data_dir: Path
) -> None:
    secret = "live-token-9f8e7d6c5b4a"

    answer = client.get("/api/auth/me", params={"access_token": secret})

    assert answer.status_code == 401
    assert "GET /api/auth/me" in eventually_logged(server_data_dir, "/api/auth/me")
    assert secret not in server_log(server_data_dir)


def eventually_logged(server_data_dir: Path, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in (log := server_log(server_data_dir)):
        assert time.monotonic() < deadline, "the access log never showed the request"
        time.sleep(0.05)
    return log


def test_a_forwarded_header_without_trusted_proxies_is_warned_about(
    client: httpx.Client, server_data_dir: Path
) -> None:
    client.post(
        "/api/auth/login",
        json={"email": new_email(), "password": "whatever it is"},
        headers={"X-Forwarded-For": "198.51.100.23"},
    )

    log = eventually_logged(server_data_dir, "AUTHLEDGER_TRUSTED_PROXIES")
    assert "X-Forwarded-For" in log


def test_an_auditor_sees_the_stuffing_aimed_at_an_address_without_an_account(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> None:
    target = new_email()  # never signed up
    for n in range(2):
        answer = client.post(
            "/api/auth/login",
            json={"email": target, "password": f"leaked {n}"},
            headers={"User-Agent": f"stuffer/{n}"},
        )
        assert answer.status_code == 401

    shown = run_cli(module_database_url, server_data_dir, "audit", "attempts", target)

    assert "stuffer/0" in shown.stdout
    assert "stuffer/1" in shown.stdout
    assert f"2 attempts on {target}" in shown.stderr
