"""Small helpers for the HTTP tests: unique emails, sign-ups, bearer headers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

PASSWORD = "correct horse battery"


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
