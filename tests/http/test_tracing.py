"""Traces: one login's spans and how they nest (the SDK's in-memory exporter),
the trace id in its log line, and OTEL_* turning traces on in a real server."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infrastructure.logs import JsonFormatter
from infrastructure.settings import Settings
from infrastructure.tracing import TracingSettingsError, exporters_asked
from interfaces.http.app import create_app
from tests.http.conftest import start_server, stop_server
from tests.http.helpers import PASSWORD, eventually, new_email

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx in TestClient
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.postgres
# A W3C traceparent a caller sends: version, trace id, its span id, sampled.
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, exporting to memory (set once: the API
    allows no second one; shut down after, so later spans go nowhere)."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    trace.set_tracer_provider(provider)
    yield exported
    provider.shutdown()


class Formatted(logging.Handler):
    """Keep each record as the JSON formatter writes it, when it is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_a_login_is_one_trace_its_password_check_and_append_inside(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    email = new_email()
    request_log = Formatted()
    logger = logging.getLogger("authledger.request")
    logger.addHandler(request_log)
    logger.setLevel(logging.INFO)
    try:
        with TestClient(create_app(settings)) as client:
            signup = {"email": email, "password": PASSWORD}
            assert client.post("/api/auth/signup", json=signup).status_code == 201
            exporter.clear()

            answer = client.post(
                "/api/auth/login", json=signup, headers={"traceparent": CALLER}
            )
    finally:
        logger.removeHandler(request_log)
        logger.setLevel(logging.NOTSET)

    assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == "POST /api/auth/login"]
    # It continues the caller's trace
    assert request.parent is not None
    assert request.parent.is_remote
    assert format(request.parent.span_id, "016x") == CALLER.split("-")[2]
    assert format(request.context.trace_id, "032x") == CALLER.split("-")[1]
    assert request.kind is trace.SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/auth/login"
    assert request.attributes["http.response.status_code"] == 200
    check = only(spans, "password.verify")
    append = only(spans, "events.append")
    inline = only(spans, "read_models.inline")
    assert parent_of(check, spans) is request
    assert parent_of(append, spans) is request
    assert parent_of(inline, spans) is append
    ids = {s.context.trace_id for s in (request, check, append, inline)}
    assert len(ids) == 1
    # The request's log line carries its trace id and request id
    (line,) = [line for line in request_log.lines if line["route"] == "/api/auth/login"]
    assert line["trace_id"] == format(request.context.trace_id, "032x")
    assert line["request_id"] == answer.headers["x-request-id"]


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


def parent_of(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    assert span.parent is not None, span.name
    (parent,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


@pytest.mark.http
def test_otel_variables_turn_traces_on_in_a_real_server(
    module_database_url: str, server_data_dir: Path
) -> None:
    process, base_url = start_server(
        module_database_url,
        server_data_dir,
        workers=1,
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="authledger-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        httpx.get(f"{base_url}/healthz")
        log = server_data_dir / f"server-{base_url.rsplit(':', 1)[1]}.log"
        shown = eventually(log.read_text, lambda text: '"name": "GET /healthz"' in text)
        assert '"name": "GET /healthz"' in shown, shown
        assert '"service.name": "authledger-under-test"' in shown
    finally:
        stop_server(process)


def test_traces_are_off_unless_otel_variables_ask_for_them() -> None:
    assert exporters_asked({}) == []
    assert exporters_asked({"OTEL_SERVICE_NAME": "x"}) == []
    assert exporters_asked({ENDPOINT: "http://c:4318"}) == ["otlp"]
    assert exporters_asked({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporters_asked({"OTEL_TRACES_EXPORTER": "console,otlp"}) == [
        "console",
        "otlp",
    ]
    off = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert exporters_asked(off) == []
    with pytest.raises(TracingSettingsError, match="zipkin"):
        exporters_asked({"OTEL_TRACES_EXPORTER": "zipkin"})
    for asked in ({"OTEL_TRACES_EXPORTER": "otlp"}, {ENDPOINT: "http://c:4317"}):
        with pytest.raises(TracingSettingsError, match="grpc"):
            exporters_asked({**asked, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_an_unexpected_error_is_answered_logged_and_counted_with_its_request_id(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.get("/probe/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    logged = Formatted()
    loggers = [logging.getLogger(n) for n in ("authledger.request", "interfaces")]
    for logger in loggers:
        logger.addHandler(logged)
        logger.setLevel(logging.INFO)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.get("/probe/fails", headers={"X-Request-ID": "bug-1"})
    finally:
        for logger in loggers:
            logger.removeHandler(logged)
            logger.setLevel(logging.NOTSET)

    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "bug-1"
    assert answer.json()["code"] == "internal_error"
    (error,) = [line for line in logged.lines if line["level"] == "error"]
    assert error["request_id"] == "bug-1"
    assert "RuntimeError: a bug" in error["error"]
    (request,) = [line for line in logged.lines if line.get("route") == "/probe/fails"]
    assert (request["status"], request["request_id"]) == (500, "bug-1")
