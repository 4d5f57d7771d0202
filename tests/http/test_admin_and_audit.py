"""Auditors replay exactly what happened; admins manage users over HTTP."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli import run_cli
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, bearer, eventually, login, new_email, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]

ADMIN_PASSWORD = "an admin's long password"


def cli(
    database_url: str, data_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        database_url, data_dir, *args, AUTHLEDGER_ADMIN_PASSWORD=ADMIN_PASSWORD
    )


@pytest.fixture(scope="module")
def admin(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> dict[str, Any]:
    email = new_email()
    created = cli(module_database_url, server_data_dir, "users", "create-admin", email)
    assert f"created administrator {email}" in created.stdout
    tokens: dict[str, Any] = login(client, email, ADMIN_PASSWORD).json()
    assert tokens["user"]["role"] == "ADMIN"
    return tokens


@pytest.fixture(scope="module")
def scripted_user(client: httpx.Client) -> dict[str, Any]:
    """A user who signs up, fails twice, logs in, refreshes, replays, logs out."""
    email = new_email()
    first = signup(client, email)
    login(client, email, "wrong one")
    login(client, email, "wrong two")
    second = login(client, email).json()
    rotated = client.post(
        "/api/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    client.post("/api/auth/logout", headers=bearer(first))
    assert rotated.status_code == 200
    return {"email": email, "id": first["user"]["id"], "first": first, "second": second}


EXPECTED_TIMELINE = [
    ("registered", None, ""),
    ("session_opened", "first", ""),
    ("login_failed", None, "bad_password"),
    ("login_failed", None, "bad_password"),
    ("failures_cleared", None, "login"),
    ("session_opened", "second", ""),
    ("token_rotated", "second", "generation 1"),
    ("session_revoked", "second", "reuse_detected"),
    ("sessions_revoked", None, "logout_all"),
]


def history_of(
    client: httpx.Client, admin: dict[str, Any], user_id: str, length: int
) -> list[dict[str, Any]]:
    """The user's history once it shows `length` entries (the read model lags)."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(
            f"/api/admin/users/{user_id}/history", headers=bearer(admin)
        )
        assert response.status_code == 200
        entries: list[dict[str, Any]] = response.json()
        if len(entries) >= length or time.monotonic() > deadline:
            return entries
        time.sleep(0.01)


def as_steps(
    entries: list[dict[str, Any]], user: dict[str, Any]
) -> list[tuple[str, Any, str]]:
    sessions = {
        user["first"]["refresh_token"].split(".")[0]: "first",
        user["second"]["refresh_token"].split(".")[0]: "second",
    }
    steps = []
    for entry in entries:
        session = entry["session_id"].replace("-", "") if entry["session_id"] else None
        detail = (
            ""
            if entry["event"] in {"registered", "session_opened"}
            else entry["detail"]
        )
        steps.append(
            (entry["event"], sessions.get(session) if session else None, detail)
        )
    return steps


def test_the_admin_history_replays_the_scripted_calls_event_by_event(
    client: httpx.Client, admin: dict[str, Any], scripted_user: dict[str, Any]
) -> None:
    entries = history_of(client, admin, scripted_user["id"], len(EXPECTED_TIMELINE))

    assert as_steps(entries, scripted_user) == EXPECTED_TIMELINE
    assert {e["ip"] for e in entries if e["event"] != "registered"} == {"127.0.0.1"}
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)


def test_the_paged_history_equals_a_replay_of_the_event_store(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
    scripted_user: dict[str, Any],
) -> None:
    paged = history_of(client, admin, scripted_user["id"], len(EXPECTED_TIMELINE))

    replayed = cli(
        module_database_url,
        server_data_dir,
        "audit",
        "history",
        scripted_user["email"],
        "--json",
        "--replay",
    )

    entries = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert [_comparable(e) for e in entries] == [_comparable(e) for e in paged]
    assert len(entries) == len(EXPECTED_TIMELINE)


def _comparable(entry: dict[str, Any]) -> tuple[Any, ...]:
    at = datetime.fromisoformat(entry["at"])
    session = entry["session_id"].replace("-", "") if entry["session_id"] else None
    return (
        at,
        entry["event"],
        session,
        entry["ip"],
        entry["user_agent"],
        entry["detail"],
    )


def test_the_cli_history_is_the_same_timeline(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
    scripted_user: dict[str, Any],
) -> None:
    history_of(client, admin, scripted_user["id"], len(EXPECTED_TIMELINE))
    result = cli(
        module_database_url,
        server_data_dir,
        "audit",
        "history",
        scripted_user["email"],
        "--json",
    )

    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert as_steps(entries, scripted_user) == EXPECTED_TIMELINE


def test_the_history_can_be_paged(
    client: httpx.Client, admin: dict[str, Any], scripted_user: dict[str, Any]
) -> None:
    url = f"/api/admin/users/{scripted_user['id']}/history"

    page = client.get(
        url, params={"limit": 3, "offset": 2}, headers=bearer(admin)
    ).json()

    assert [e["event"] for e in page] == [
        "login_failed",
        "login_failed",
        "failures_cleared",
    ]


def test_the_export_streams_every_event_without_secrets(
    module_database_url: str, server_data_dir: Path, scripted_user: dict[str, Any]
) -> None:
    result = cli(module_database_url, server_data_dir, "audit", "export")

    records = [json.loads(line) for line in result.stdout.splitlines()]
    positions = [r["position"] for r in records]
    assert positions == sorted(positions)
    assert f"{len(records)} events exported" in result.stderr
    assert "hash" not in result.stdout
    assert scripted_user["second"]["refresh_token"].split(".")[-1] not in result.stdout
    assert {r["topic"] for r in records} >= {
        "authledger:User.Registered",
        "authledger:Session.Revoked",
    }


def test_the_export_since_a_moment_streams_only_what_came_after_in_order(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> None:
    everything = cli(module_database_url, server_data_dir, "audit", "export")
    records = [json.loads(line) for line in everything.stdout.splitlines()]
    moment = records[len(records) // 2]["timestamp"]
    signup(client)  # and one more event while it streams the rest

    since = cli(
        module_database_url, server_data_dir, "audit", "export", "--since", moment
    )

    later = [json.loads(line) for line in since.stdout.splitlines()]
    assert later
    assert all(r["timestamp"] >= moment for r in later)
    expected = [r["position"] for r in records if r["timestamp"] >= moment]
    positions = [r["position"] for r in later]
    assert positions[: len(expected)] == expected
    assert positions == sorted(positions)
    assert len(positions) > len(expected)  # the new signup's events too


def test_the_state_at_a_moment_is_replayed_from_the_events(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
    scripted_user: dict[str, Any],
) -> None:
    entries = client.get(
        f"/api/admin/users/{scripted_user['id']}/history", headers=bearer(admin)
    ).json()
    after_failures = entries[3]["at"]

    result = cli(
        module_database_url,
        server_data_dir,
        "audit",
        "state",
        scripted_user["id"],
        "--at",
        after_failures,
    )

    state = json.loads(result.stdout)
    assert state["email"] == scripted_user["email"]
    assert state["failed_logins"] == 2
    assert "password_hash" not in state


def test_non_admins_are_forbidden(
    client: httpx.Client, scripted_user: dict[str, Any]
) -> None:
    someone = signup(client)

    for response in (
        client.get("/api/admin/users", headers=bearer(someone)),
        client.get(
            f"/api/admin/users/{scripted_user['id']}/history", headers=bearer(someone)
        ),
        client.patch(
            f"/api/admin/users/{scripted_user['id']}",
            json={"role": "ADMIN"},
            headers=bearer(someone),
        ),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"


def test_admins_list_users_by_email_prefix(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    prefix = f"listing-{new_email()[5:13]}"
    for n in range(3):
        signup(client, f"{prefix}-{n}@example.com")

    page = client.get(
        "/api/admin/users",
        params={"email_prefix": prefix, "limit": 2},
        headers=bearer(admin),
    ).json()
    rest = client.get(
        "/api/admin/users",
        params={"email_prefix": prefix, "offset": 2},
        headers=bearer(admin),
    ).json()

    assert [u["email"] for u in page + rest] == [
        f"{prefix}-{n}@example.com" for n in range(3)
    ]
    assert page[0]["failed_logins"] == 0


def test_an_admin_changes_a_role_and_unlocks_an_account(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    email = new_email()
    user = signup(client, email)
    for n in range(5):
        login(client, email, f"bad {n}")
    assert login(client, email).status_code == 401

    unlocked = client.patch(
        f"/api/admin/users/{user['user']['id']}",
        json={"unlock": True},
        headers=bearer(admin),
    )
    promoted = client.patch(
        f"/api/admin/users/{user['user']['id']}",
        json={"role": "ADMIN"},
        headers=bearer(admin),
    )

    assert unlocked.status_code == 200
    assert unlocked.json()["locked_until"] is None
    assert promoted.json()["role"] == "ADMIN"
    assert login(client, email, PASSWORD).status_code == 200
    # The history is a lagging read model: it shows the change moments later.
    history = eventually(
        lambda: client.get(
            f"/api/admin/users/{user['user']['id']}/history", headers=bearer(admin)
        ).json(),
        lambda entries: {"unlocked", "role_changed"} <= {e["event"] for e in entries},
    )
    details = {e["event"]: e["detail"] for e in history}
    assert details["unlocked"] == f"by {admin['user']['id']}"
    assert details["role_changed"] == f"to ADMIN by {admin['user']['id']}"


def test_an_admin_disables_an_account_and_its_tokens_and_logins_are_refused(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    # Given a user with two sessions
    email = new_email()
    first = signup(client, email)
    second = login(client, email).json()
    user_id = first["user"]["id"]

    # When an admin disables the account
    disabled = client.patch(
        f"/api/admin/users/{user_id}", json={"disabled": True}, headers=bearer(admin)
    )

    # Then every session is over at once, and the right password is refused
    # exactly as a wrong one is
    assert disabled.status_code == 200
    assert disabled.json()["disabled"] is True
    assert client.get("/api/auth/me", headers=bearer(first)).status_code == 401
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert refreshed.status_code == 401
    right, wrong = login(client, email), login(client, email, "not the password")
    assert (right.status_code, right.json()) == (401, wrong.json())
    # And the admin views and the history say so, naming the admin
    listed = client.get(
        "/api/admin/users", params={"email_prefix": email}, headers=bearer(admin)
    ).json()
    assert [u["disabled"] for u in listed] == [True]
    history = client.get(
        f"/api/admin/users/{user_id}/history", headers=bearer(admin)
    ).json()
    details = {e["event"]: e["detail"] for e in history}
    assert details["disabled"] == f"by {admin['user']['id']}"
    assert details["sessions_revoked"] == "disabled"

    # When enabled again, the password logs in; the ended sessions stay ended
    enabled = client.patch(
        f"/api/admin/users/{user_id}", json={"disabled": False}, headers=bearer(admin)
    )
    assert enabled.json()["disabled"] is False
    assert login(client, email).status_code == 200
    assert client.get("/api/auth/me", headers=bearer(first)).status_code == 401


def test_create_admin_on_a_disabled_account_makes_a_working_admin(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
) -> None:
    email = new_email()
    user = signup(client, email)
    client.patch(
        f"/api/admin/users/{user['user']['id']}",
        json={"disabled": True},
        headers=bearer(admin),
    )

    printed = cli(module_database_url, server_data_dir, "users", "create-admin", email)

    assert f"promoted {email} to administrator" in printed.stdout
    tokens = login(client, email)
    assert tokens.status_code == 200
    assert tokens.json()["user"]["role"] == "ADMIN"


@pytest.mark.parametrize("flag", [1, 0, "true", None])
def test_only_a_json_boolean_disables(
    client: httpx.Client, admin: dict[str, Any], flag: object
) -> None:
    user = signup(client, new_email())
    answer = client.patch(
        f"/api/admin/users/{user['user']['id']}",
        json={"disabled": flag},
        headers=bearer(admin),
    )
    if flag is None:  # the field left as it is
        assert (answer.status_code, answer.json()["disabled"]) == (200, False)
    else:
        assert answer.status_code == 422
        assert client.get("/api/auth/me", headers=bearer(user)).status_code == 200


def test_a_user_erases_their_account_and_the_address_signs_up_anew(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    # Given a user with a session
    email = new_email()
    tokens = signup(client, email)

    def erase(password: str) -> httpx.Response:
        return client.request(
            "DELETE",
            "/api/auth/me",
            headers=bearer(tokens),
            json={"password": password},
        )

    # When they erase their account, first with a wrong password
    wrong = erase("not my password")
    erased = erase(PASSWORD)

    # Then only the right password erases it; its tokens and its address are
    # then no account's: a login is refused as for an unknown address
    assert (wrong.status_code, wrong.json()["code"]) == (400, "wrong_password")
    assert erased.status_code == 200
    assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 401
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401
    unknown = login(client, new_email())
    assert (login(client, email).json(), unknown.status_code) == (unknown.json(), 401)
    # And the admins no longer find it by its address
    listed = client.get(
        "/api/admin/users", params={"email_prefix": email}, headers=bearer(admin)
    )
    assert listed.json() == []
    shown = client.get(
        f"/api/admin/users/{tokens['user']['id']}/history", headers=bearer(admin)
    )
    assert shown.status_code == 200
    # And the address signs up again, as a new account
    again = signup(client, email)
    assert again["user"]["id"] != tokens["user"]["id"]
    assert login(client, email).status_code == 200


def test_an_admin_erases_an_account_by_api_and_by_cli(
    client: httpx.Client,
    admin: dict[str, Any],
    module_database_url: str,
    server_data_dir: Path,
) -> None:
    by_api, by_cli = signup(client, new_email()), new_email()
    by_cli_id = signup(client, new_email())
    signup(client, by_cli)
    path = f"/api/admin/users/{by_api['user']['id']}"

    erased = client.delete(path, headers=bearer(admin))
    again = client.delete(path, headers=bearer(admin))
    forbidden = client.delete(path, headers=bearer(signup(client, new_email())))
    printed = cli(module_database_url, server_data_dir, "users", "erase", by_cli)
    by_id = by_cli_id["user"]["id"]
    cli(module_database_url, server_data_dir, "users", "erase", by_id)
    assert client.get("/api/auth/me", headers=bearer(by_cli_id)).status_code == 401
    assert login(client, by_cli_id["user"]["email"]).status_code == 401

    assert erased.status_code == 200
    assert again.status_code == 200  # a retry is told it is done
    assert forbidden.status_code == 403
    # The admins still see the account's history, its address erased
    shown = client.get(
        f"/api/admin/users/{by_api['user']['id']}/history", headers=bearer(admin)
    ).json()
    assert [e["event"] for e in shown][-2:] == ["sessions_revoked", "erased"]
    assert {e["ip"] for e in shown[:-1]} == {"[erased]"}  # the erasure has none
    assert shown[0]["detail"] == "[erased]"  # the registration named the address
    patched = client.patch(path, json={"disabled": True}, headers=bearer(admin))
    assert patched.status_code == 404
    assert client.get("/api/auth/me", headers=bearer(by_api)).status_code == 401
    assert printed.stdout.startswith("erased ")
    assert login(client, by_cli).status_code == 401
    history = cli(
        module_database_url, server_data_dir, "audit", "history", by_api["user"]["id"]
    )
    assert "erased" in history.stdout


def test_erasing_accounts_under_traffic_of_others_fails_no_request(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    # Given accounts to erase, and other users signing up, refreshing, reading,
    # logging in and out, all the while
    doomed = [signup(client, new_email()) for _ in range(8)]
    failures: list[str] = []
    rounds = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal rounds
        with httpx.Client(base_url=client.base_url, timeout=30) as http:
            while not stop.is_set():
                email = new_email()
                tokens = signup(http, email)
                steps = [
                    (http.post("/api/auth/refresh", json=refresh_of(tokens)), 200),
                    (http.get("/api/auth/me", headers=bearer(tokens)), 200),
                    (login(http, email), 200),
                    (http.post("/api/auth/logout", headers=bearer(tokens)), 200),
                ]
                failures.extend(
                    f"{r.request.method} {r.request.url.path}: {r.status_code}"
                    for r, expected in steps
                    if r.status_code != expected
                )
                rounds += 1

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        # When the accounts are erased meanwhile, by their owners and by an admin
        for n, tokens in enumerate(doomed):
            if n % 2:
                answer = client.request(
                    "DELETE",
                    "/api/auth/me",
                    headers=bearer(tokens),
                    json={"password": PASSWORD},
                )
            else:
                path = f"/api/admin/users/{tokens['user']['id']}"
                answer = client.delete(path, headers=bearer(admin))
            assert answer.status_code == 200, answer.text
        started, waited_until = rounds, time.monotonic() + 60
        while rounds < started + 3 and time.monotonic() < waited_until:
            time.sleep(0.05)
        assert rounds >= started + 3, failures  # the traffic went on meanwhile
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    # Then no request of the others failed, and every erased account is over
    assert failures == []
    for tokens in doomed:
        assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 401


def refresh_of(tokens: dict[str, Any]) -> dict[str, str]:
    return {"refresh_token": tokens["refresh_token"]}


def test_an_unknown_user_is_404_for_admins(
    client: httpx.Client, admin: dict[str, Any]
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"

    assert (
        client.get(
            f"/api/admin/users/{missing}/history", headers=bearer(admin)
        ).status_code
        == 404
    )
    assert (
        client.patch(
            f"/api/admin/users/{missing}", json={"unlock": True}, headers=bearer(admin)
        ).status_code
        == 404
    )


def test_the_last_admin_cannot_demote_or_disable_itself(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    process, base_url = start_server(database_url, data_dir)
    try:
        email = new_email()
        cli(database_url, data_dir, "users", "create-admin", email)
        with httpx.Client(base_url=base_url) as http:
            tokens = login(http, email, ADMIN_PASSWORD).json()
            demoted = http.patch(
                f"/api/admin/users/{tokens['user']['id']}",
                json={"role": "USER"},
                headers=bearer(tokens),
            )
            disabled = http.patch(
                f"/api/admin/users/{tokens['user']['id']}",
                json={"disabled": True},
                headers=bearer(tokens),
            )
            me = http.get("/api/auth/me", headers=bearer(tokens)).json()
    finally:
        stop_server(process)

    assert demoted.status_code == 409
    assert demoted.json()["code"] == "last_admin"
    assert disabled.status_code == 409
    assert disabled.json()["code"] == "last_admin"
    assert me["role"] == "ADMIN"
