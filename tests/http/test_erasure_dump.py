"""After an erasure, a dump of the whole database holds nothing of the person."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dumps import leaks, pg_dump
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, bearer, login, new_email, signup
from tests.integration.helpers import wait_until

pytestmark = [pytest.mark.http, pytest.mark.postgres]

NEW_PASSWORD = "a brand new long passphrase"
ERASED_ADDRESS = "203.0.113.77"
ERASED_AGENT = "ErasureProbe/7.3 (distinctive-agent-5f2c)"
KEPT_ADDRESS = "198.51.100.42"
KEPT_AGENT = "KeptBrowser/2.1 (other-agent-9d1e)"


def from_(address: str, agent: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, "User-Agent": agent}


@pytest.fixture
def proxied(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A server that takes the client's address from its proxy (this host)."""
    process, base_url = start_server(
        database_url, tmp_path / "data", AUTHLEDGER_TRUSTED_PROXIES='["127.0.0.1/32"]'
    )
    yield base_url
    stop_server(process)


def test_an_erased_user_leaves_no_email_address_or_agent_in_a_dump(
    proxied: str, database_url: str
) -> None:
    erased_email, kept_email = new_email(), new_email()
    with httpx.Client(base_url=proxied) as http:
        # Given a user who signs up and logs in from a distinctive address and
        # user agent, and changes the password; and another user
        http.headers.update(from_(ERASED_ADDRESS, ERASED_AGENT))
        signup(http, erased_email)
        tokens = login(http, erased_email).json()
        changed = http.post(
            "/api/auth/password",
            headers=bearer(tokens),
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert changed.status_code == 200, changed.text
        http.headers.update(from_(KEPT_ADDRESS, KEPT_AGENT))
        signup(http, kept_email)

        # (whose data the dump shows until the erasure: the check can see it)
        personal = [erased_email, ERASED_ADDRESS, ERASED_AGENT]
        wait_until(
            lambda: all(value in pg_dump(database_url) for value in personal),
            30,
            "the read models to show the user's email, address and agent",
        )

        # When the first erases the account
        http.headers.update(from_(ERASED_ADDRESS, ERASED_AGENT))
        erased = http.request(
            "DELETE",
            "/api/auth/me",
            headers=bearer(tokens),
            json={"password": NEW_PASSWORD},
        )
        assert erased.status_code == 200, erased.text

        # Then a dump of the whole database, once the lagging read models have
        # applied the erasure, shows none of it in any encoding
        wait_until(
            lambda: not leaks(pg_dump(database_url), personal),
            30,
            "the read models to forget the erased user",
        )
        dump = pg_dump(database_url)
        assert leaks(dump, personal) == []
        # While the other user's data is intact (their row in the users read
        # model, their logins' address and agent), and their login works
        kept = (kept_email, KEPT_ADDRESS, KEPT_AGENT)
        assert [value for value in kept if value not in dump] == []
        http.headers.update(from_(KEPT_ADDRESS, KEPT_AGENT))
        assert login(http, kept_email).status_code == 200


def test_the_access_log_names_no_client_address(proxied: str, tmp_path: Path) -> None:
    # A log line cannot be erased: it keeps the method, path and status only.
    with httpx.Client(base_url=proxied) as client:
        signup(client)
        assert client.get("/api/auth/me").status_code == 401
    logs = "".join(log.read_text() for log in (tmp_path / "data").glob("server-*.log"))
    answered = [json.loads(line) for line in logs.splitlines()]
    requests = {
        (r["method"], r["route"], r["status"]) for r in answered if "route" in r
    }
    assert {("GET", "/api/auth/me", 401), ("POST", "/api/auth/signup", 201)} <= requests
    assert "127.0.0.1" not in logs
