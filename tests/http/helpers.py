"""Small helpers for the HTTP tests: unique emails, sign-ups, bearer headers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from application.values import session_id_of

T = TypeVar("T")

PASSWORD = "correct horse battery"


def eventually(
    read: Callable[[], T], until: Callable[[T], bool], timeout: float = 10
) -> T:
    """Read until `until` holds: failed logins are not read-your-writes."""
    deadline = time.monotonic() + timeout
    value = read()
    while not until(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def signup(
    client: httpx.Client, email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    response = client.post(
        "/api/auth/signup", json={"email": email or new_email(), "password": password}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def login(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/auth/login", json={"email": email, "password": password})


def session_of(tokens: dict[str, Any]) -> str:
    """The id of the session a token response opened, as the tables print it."""
    return str(session_id_of(str(tokens["refresh_token"])))
