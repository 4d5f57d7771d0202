"""The reusable auth dependencies: required and optional current user."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from infrastructure.settings import Settings
from interfaces.http.app import create_app
from interfaces.http.deps import CurrentUserDep, OptionalUserDep
from tests.http.helpers import bearer, new_email

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx in TestClient
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.postgres


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    app: FastAPI = create_app(settings)

    @app.get("/probe/optional")
    def optional(user: OptionalUserDep) -> dict[str, str | None]:
        return {"email": user.user.email if user else None}

    @app.get("/probe/required")
    def required(user: CurrentUserDep) -> dict[str, str]:
        return {"email": user.user.email}

    with TestClient(app) as test_client:
        yield test_client


def test_optional_user_is_none_without_a_token_and_401_with_a_bad_one(
    client: Any,
) -> None:
    email = new_email()
    tokens = client.post(
        "/api/auth/signup", json={"email": email, "password": "long enough"}
    ).json()

    assert client.get("/probe/optional").json() == {"email": None}
    assert client.get("/probe/optional", headers=bearer(tokens)).json() == {
        "email": email
    }
    bad = client.get("/probe/optional", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == "Bearer"


def test_required_user_is_401_without_a_token(client: Any) -> None:
    email = new_email()
    tokens = client.post(
        "/api/auth/signup", json={"email": email, "password": "long enough"}
    ).json()

    assert client.get("/probe/required").status_code == 401
    assert client.get("/probe/required", headers=bearer(tokens)).json() == {
        "email": email
    }
