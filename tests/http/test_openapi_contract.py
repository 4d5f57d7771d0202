"""Responses match the service's own OpenAPI document, which describes every route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.http.helpers import PASSWORD, bearer, login, new_email, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]

ROUTES = {
    ("post", "/api/auth/signup"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/refresh"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/me"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}


@pytest.fixture(scope="module")
def openapi(server: str) -> dict[str, Any]:
    spec: dict[str, Any] = httpx.get(f"{server}/openapi.json").json()
    return spec


def assert_matches(openapi: dict[str, Any], component: str, body: Any) -> None:
    schema = {
        "$ref": f"#/components/schemas/{component}",
        "components": openapi["components"],
    }
    Draft202012Validator(schema).validate(body)


def test_every_route_is_described(openapi: dict[str, Any]) -> None:
    described = {
        (method, path) for path, item in openapi["paths"].items() for method in item
    }

    assert described >= ROUTES


@pytest.mark.parametrize(
    ("method", "path"), sorted(r for r in ROUTES if r[1].startswith("/api"))
)
def test_every_auth_route_describes_its_errors(
    openapi: dict[str, Any], method: str, path: str
) -> None:
    responses = openapi["paths"][path][method]["responses"]

    for status in ("401", "422", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }


def test_success_bodies_match_their_schemas(
    client: httpx.Client, openapi: dict[str, Any]
) -> None:
    email = new_email()
    signed_up = signup(client, email)
    logged_in = login(client, email).json()
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": logged_in["refresh_token"]}
    ).json()
    me = client.get("/api/auth/me", headers=bearer(refreshed)).json()
    logged_out = client.post("/api/auth/logout", headers=bearer(refreshed)).json()

    for body in (signed_up, logged_in, refreshed):
        assert_matches(openapi, "TokenResponse", body)
    assert_matches(openapi, "UserResponse", me)
    assert_matches(openapi, "MessageResponse", logged_out)


def test_error_bodies_match_the_error_schema(
    client: httpx.Client, openapi: dict[str, Any]
) -> None:
    email = new_email()
    signup(client, email)
    errors = [
        client.post("/api/auth/signup", json={"email": email, "password": PASSWORD}),
        client.post(
            "/api/auth/login", json={"email": email, "password": "wrong password"}
        ),
        client.post("/api/auth/refresh", json={"refresh_token": "nope"}),
        client.post(
            "/api/auth/signup", json={"email": "not-an-email", "password": "short"}
        ),
        client.post(
            "/api/auth/signup",
            content=b"{" * 20_000,
            headers={"Content-Type": "application/json"},
        ),
        client.get("/api/auth/me"),
        client.get("/api/nowhere"),
    ]

    assert [e.status_code for e in errors] == [409, 401, 401, 422, 413, 401, 404]
    for error in errors:
        assert_matches(openapi, "ErrorResponse", error.json())
        assert "Traceback" not in error.text


def test_validation_errors_never_echo_the_submitted_values(
    client: httpx.Client,
) -> None:
    secret = "short\x00pw"

    response = client.post(
        "/api/auth/signup", json={"email": "x@example.com", "password": secret}
    )

    assert response.status_code == 422
    assert "short" not in response.text
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "password"]]


def test_the_interactive_docs_are_served(client: httpx.Client) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "swagger" in response.text.lower()
