"""Hostile input gets a clear 4xx in the one error shape, never a 5xx or a trace."""

from __future__ import annotations

import contextlib
import socket

import httpx
import pytest

from tests.http.helpers import login, new_email, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]

JSON = {"Content-Type": "application/json"}


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"detail", "code"}
    assert body["code"] != "http_error"
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"[" * 5000 + b"]" * 5000, JSON, 400),  # deeply nested JSON
        (b'{"email": "a@b.co", "password": "x' + b"\xff\xfe" * 8 + b'"}', JSON, 400),
        (
            b"email=a%40b.co&password=longenough",
            {"Content-Type": "application/x-www-form-urlencoded"},
            422,
        ),
        (b"not json at all", JSON, 422),
        (b"", JSON, 422),
        (b"{" * 20_000, JSON, 413),
        (b'{"email": "a@b.co", "password": "longenough", "role": "ADMIN"}', JSON, 422),
    ],
)
def test_malformed_signup_bodies_are_refused(
    client: httpx.Client, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = client.post("/api/auth/signup", content=content, headers=headers)

    assert_refused(response, status)


@pytest.mark.parametrize(
    "email",
    ["nul\x00@example.com", "no-at-sign", "a@", "@b.co", "x" * 300 + "@example.com"],
)
def test_bad_emails_are_refused(client: httpx.Client, email: str) -> None:
    response = client.post(
        "/api/auth/signup", json={"email": email, "password": "long enough"}
    )

    assert_refused(response, 422)


def test_a_nul_byte_in_a_password_is_refused_on_login_too(client: httpx.Client) -> None:
    response = login(client, new_email(), "pass\x00word")

    assert_refused(response, 422)


def test_a_73_byte_password_is_stored_whole(client: httpx.Client) -> None:
    email = new_email()
    first_72 = ("correct horse battery staple " * 3)[:72]
    password = first_72 + "!"
    signup(client, email, password)

    assert login(client, email, password).status_code == 200
    assert login(client, email, first_72).status_code == 401
    assert login(client, email, first_72 + "?").status_code == 401


def test_unicode_and_mixed_case_emails_keep_their_local_part(
    client: httpx.Client,
) -> None:
    email = f"Zoë.{new_email()[5:15]}@Exämple.COM"

    created = signup(client, email)

    stored = created["user"]["email"]
    assert stored.startswith("Zoë.")
    assert stored.endswith("@exämple.com")
    assert login(client, email.replace("COM", "com")).status_code == 200


def test_a_huge_refresh_token_is_refused(client: httpx.Client) -> None:
    response = client.post("/api/auth/refresh", json={"refresh_token": "r" * 100_000})

    assert_refused(response, 413)


@pytest.mark.parametrize(
    "token", ["r" * 500, "abc.def", "0" * 32 + "." + "x" * 43, "."]
)
def test_forged_refresh_tokens_are_refused(client: httpx.Client, token: str) -> None:
    response = client.post("/api/auth/refresh", json={"refresh_token": token})

    assert_refused(response, 401)


def test_a_wrong_method_is_refused_in_the_same_shape(client: httpx.Client) -> None:
    assert_refused(client.get("/api/auth/signup"), 405)


def test_an_endless_request_head_is_cut_short_at_its_limit(server: str) -> None:
    """A header that never ends must not grow a worker's memory without bound:
    past the head's limit the answer is 431 and the connection is closed."""
    url = httpx.URL(server)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        answer = b""
        # The server stops reading once it has answered: sends then fail or stall.
        with contextlib.suppress(OSError):
            for _ in range(64):  # 4 MiB, far past the limit
                sock.sendall(b"a" * 65536)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b'"code":"header_too_large"' in answer
