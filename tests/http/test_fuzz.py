"""Schemathesis fuzzes the API from its OpenAPI document: no 5xx, documented bodies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.helpers import bearer, signup

pytestmark = [pytest.mark.http, pytest.mark.postgres]

# Bounded so the suite stays quick: about 400 requests across the API.
EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


@pytest.fixture(scope="module")
def auth_headers(client: httpx.Client) -> dict[str, str]:
    """A real user's token, so protected routes are fuzzed past authentication."""
    return bearer(signup(client))


def test_the_api_never_fails_and_answers_as_documented(
    api_schema: Any, auth_headers: dict[str, str]
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    statuses: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            sends_own_token = "Authorization" in (case.headers or {})
            response = case.call(headers=None if sends_own_token else auth_headers)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)
            assert "Traceback" not in response.text

        fuzz()

    # The fuzzing really ran, and reached both answers and refusals.
    assert len(statuses) >= 5 * len(operations)
    assert any(200 <= status < 300 for status in statuses)
    assert any(400 <= status < 500 for status in statuses)
