"""Refusals the running service rarely shows on demand: their answers, in shape."""

from __future__ import annotations

import warnings
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, PersistenceError
from fastapi import FastAPI

from application.errors import HashingBusyError
from interfaces.cli.audit import _json_line
from interfaces.http.errors import install_error_handlers
from interfaces.http.limits import SecurityHeaders

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx in TestClient
    from fastapi.testclient import TestClient


def app_raising(error: Exception) -> Any:
    """The service's error handling and headers in front of one failing route."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    @app.get("/fail")
    def fail() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


def test_bcrypt_work_beyond_the_bound_is_a_503_to_retry_in_a_second() -> None:
    answer = app_raising(HashingBusyError()).get("/fail")

    assert answer.status_code == 503
    assert answer.json()["code"] == "busy"
    assert answer.headers["retry-after"] == "1"


def test_an_unexpected_error_is_a_bare_500_with_the_security_headers() -> None:
    answer = app_raising(RuntimeError("secret detail")).get("/fail")

    assert answer.status_code == 500
    assert answer.json() == {"detail": "Internal error.", "code": "internal_error"}
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_json_audit_lines_escape_control_characters_stored_before_cleaning() -> None:
    line = _json_line(
        {"user_agent": "ok\x85row\u202e\x1b[2J", "email": "zoë@example.com"}
    )

    assert line.isascii()
    assert "\\u0085" in line
    assert "\\u001b" in line


def _subclasses(root: type[Exception]) -> list[type[Exception]]:
    found, pending = [], [root]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


DATABASE_ERRORS = _subclasses(psycopg.Error) + _subclasses(PersistenceError)


@pytest.mark.parametrize("kind", DATABASE_ERRORS, ids=lambda kind: kind.__name__)
def test_every_database_error_is_a_409_conflict_or_a_503_to_retry(
    kind: type[Exception],
) -> None:
    answer = app_raising(kind("server detail")).get("/fail")

    lost_race = issubclass(kind, (psycopg.IntegrityError, IntegrityError))
    expected = (409, "conflict") if lost_race else (503, "database_unavailable")
    assert (answer.status_code, answer.json()["code"]) == expected
    assert "server detail" not in answer.text
    if not lost_race:
        assert answer.headers["retry-after"] == "1"
