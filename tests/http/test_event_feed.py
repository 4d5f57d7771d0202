"""The event feed on a real server: every event once, in log order, behind
a cursor, while other clients write; its filters; its payload policy."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.http.helpers import PASSWORD, bearer, login, new_email, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]


def read_all(
    client: httpx.Client, admin: dict[str, str], after: str = "0", **query: Any
) -> tuple[list[dict[str, Any]], str]:
    """Follow `next` from `after` until the head; the events and the last cursor."""
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(
            "/api/admin/events",
            params={"after": after, "limit": 7, **query},
            headers=admin,
        )
        assert page.status_code == 200, page.text
        body = page.json()
        events.extend(body["events"])
        after = body["next"]
        if body["at_head"]:
            return events, after


def test_following_next_yields_every_event_once_in_order_while_others_write(
    client: httpx.Client, admin: dict[str, str], server: str
) -> None:
    # Given clients that keep writing
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=server, timeout=30) as writer:
            while not stop.is_set():
                email = new_email()
                signup(writer, email)
                login(writer, email)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        # When a reader follows the feed from the start, page by page, many times
        seen: list[dict[str, Any]] = []
        cursor = "0"
        for _ in range(30):
            events, cursor = read_all(client, admin, cursor)
            seen.extend(events)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    events, _ = read_all(client, admin, cursor)
    seen.extend(events)

    # Then it saw every stored event exactly once, in log order
    positions = [int(e["cursor"]) for e in seen]
    assert positions == sorted(set(positions))
    whole, _ = read_all(client, admin)
    assert [e["cursor"] for e in whole] == [e["cursor"] for e in seen]
    assert {"user.registered", "user.logged_in", "session.opened"} <= {
        e["type"] for e in seen
    }


def test_a_users_events_and_a_type_filter(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    email = new_email()
    tokens = signup(client, email)
    login(client, email, "not the password")
    second = login(client, email).json()
    client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})

    mine, _ = read_all(client, admin, user_id=tokens["user"]["id"])

    types = [e["type"] for e in mine]
    assert types.count("user.registered") == 1
    assert types.count("session.opened") == 2
    assert "session.token_rotated" in types
    assert "user.login_failed" in types
    assert {e["aggregate_id"] for e in mine if e["type"].startswith("user.")} == {
        tokens["user"]["id"]
    }
    failed, _ = read_all(client, admin, type="user.login_failed")
    assert failed
    assert {e["type"] for e in failed} == {"user.login_failed"}


def test_the_payload_shows_personal_data_and_no_hash_or_secret(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    email = new_email()
    tokens = signup(client, email)
    mine, _ = read_all(client, admin, user_id=tokens["user"]["id"])

    registered = next(e for e in mine if e["type"] == "user.registered")
    assert registered["payload"]["email"] == email
    assert registered["version"] == 1
    assert registered["aggregate_id"] == tokens["user"]["id"]
    shown = str(mine)
    assert "$2b$" not in shown  # no password hash
    assert not [k for e in mine for k in e["payload"] if "hash" in k or "secret" in k]
    assert PASSWORD not in shown


def test_only_admins_read_the_feed_and_bad_queries_are_refused(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    user = signup(client, new_email())
    assert client.get("/api/admin/events", headers=bearer(user)).status_code == 403
    assert client.get("/api/admin/events").status_code == 401
    for query, code in (
        ({"type": "user.no_such_thing"}, "unknown_event_type"),
        ({"after": "-1"}, "validation_error"),
        ({"after": "1e9"}, "validation_error"),
        ({"limit": "0"}, "validation_error"),
        ({"limit": "100000"}, "validation_error"),
    ):
        refused = client.get("/api/admin/events", params=query, headers=admin)
        assert (refused.status_code, refused.json()["code"]) == (422, code), query


def test_an_erased_accounts_events_show_their_personal_data_as_erased(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    email = new_email()
    tokens = signup(client, email)
    erased = client.request(
        "DELETE", "/api/auth/me", headers=bearer(tokens), json={"password": PASSWORD}
    )
    assert erased.status_code == 200, erased.text

    mine, _ = read_all(client, admin, user_id=tokens["user"]["id"])

    registered = next(e for e in mine if e["type"] == "user.registered")
    assert registered["payload"]["email"] == "[erased]"
    assert "user.erased" in {e["type"] for e in mine}
    assert email not in str(mine)
    assert "127.0.0.1" not in str(mine)  # the client address is personal too


def test_no_secret_or_hash_of_any_kind_of_event_reaches_the_feed(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    # Given events of many kinds: a throttle's, MFA's, a webhook's
    email = new_email()
    tokens = signup(client, email)
    login(client, email, "not the password")
    enrolled = client.post(
        "/api/auth/mfa/totp", headers=bearer(tokens), json={"password": PASSWORD}
    ).json()
    hook_url = "https://93.184.216.34/hooks?token=a-receivers-own-secret"
    hook = client.post("/api/admin/webhooks", json={"url": hook_url}, headers=admin)
    client.delete(f"/api/admin/webhooks/{hook.json()['id']}", headers=admin)

    # When the whole feed is read
    everything, _ = read_all(client, admin)

    # Then none of their secrets or keyed hashes is in it
    shown = json.dumps(everything)
    types = {e["type"] for e in everything}
    assert {"client_throttle.started", "user.totp_enrolment_started"} <= types
    assert "webhook_endpoints.endpoint_added" in types
    assert enrolled["secret"] not in shown
    assert hook.json()["secret"] not in shown
    assert "a-receivers-own-secret" not in shown
    assert "$2b$" not in shown
    fields = {k for e in everything for k in e["payload"]}
    assert not fields & {"key", "url", "class_version", "originator_topic"}
