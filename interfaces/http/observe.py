"""Each request measured, traced and logged once: the outermost middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from infrastructure.instruments import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS
from infrastructure.logs import CURRENT_REQUEST, FIELDS, RequestFacts
from infrastructure.tracing import TRACER
from interfaces.http.limits import HttpMiddleware

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("authledger.request")
REQUEST_ID = b"x-request-id"
TRACEPARENT = b"traceparent"
# A client's request id is kept if it is this plain (else one is made): it is
# written to every log line of the request.
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
SERVER_ERROR = 500
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a path no route has: never the path


def request_id_and_trace(scope: Scope) -> tuple[str, Context | None]:
    """The client's request id if plain (else a new one), and the trace it
    continues if it sent one (W3C traceparent, as OTEL_PROPAGATORS reads)."""
    request_id, traced = "", False
    for name, value in scope["headers"]:
        if name == REQUEST_ID and CLIENT_REQUEST_ID.fullmatch(value):
            request_id = str(value.decode())
        traced = traced or name == TRACEPARENT
    parent = None
    if traced:
        headers = scope["headers"]
        parent = extract({k.decode("latin-1"): v.decode("latin-1") for k, v in headers})
    return request_id or uuid.uuid4().hex, parent


class Observed(HttpMiddleware):
    """Give the request an id (the client's X-Request-ID if plain, else a new
    one), answered in X-Request-ID; count it by route template, method and
    status, time it, trace it in a span of its own, and log one line for it.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id, parent = request_id_and_trace(scope)
        facts = RequestFacts(request_id)
        token = CURRENT_REQUEST.set(facts)
        header = (REQUEST_ID, facts.request_id.encode())
        status = SERVER_ERROR  # unless an answer starts
        answered = False

        async def answer(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        method = scope["method"] if scope["method"] in METHODS else "other"
        HTTP_IN_FLIGHT.inc()
        with TRACER.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, answer)
            except Exception:
                # Starlette raises again what it answered with a 500, for the
                # server to log: it is logged already, with its request id.
                if not (answered and status == SERVER_ERROR):
                    raise
            finally:
                HTTP_IN_FLIGHT.dec()
                route = getattr(scope.get("route"), "path", UNMATCHED)
                took = time.perf_counter() - started
                HTTP_REQUESTS.labels(route, method, str(status)).inc()
                HTTP_LATENCY.labels(route).observe(took)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if facts.user_id:
                        span.set_attribute("enduser.id", facts.user_id)
                    if status >= SERVER_ERROR:
                        span.set_status(Status(StatusCode.ERROR))
                log.info(
                    "%s %s %s %.1f ms",
                    method,
                    route,
                    status,
                    took * 1000,
                    extra={
                        FIELDS: {
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(took * 1000, 2),
                            "user_id": facts.user_id,
                        }
                    },
                )
                CURRENT_REQUEST.reset(token)
