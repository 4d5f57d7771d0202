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


def fuzz(operation: Any, headers: dict[str, str], statuses: list[int]) -> None:
    """Send the operation's generated cases, checking every answer."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Any) -> None:
        response = case.call(headers=headers)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text

    send()


def test_the_api_never_fails_and_answers_as_documented(
    api_schema: Any, client: httpx.Client
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    statuses: list[int] = []

    for operation in operations:
        # A fresh user per operation: fuzzing logout must not starve the others.
        fuzz(operation, bearer(signup(client)), statuses)

    # The fuzzing really ran, and reached both answers and refusals.
    assert len(statuses) >= 5 * len(operations)
    assert any(200 <= status < 300 for status in statuses)
    assert any(400 <= status < 500 for status in statuses)
