"""Guards in front of the routes: a body size limit, fast 503s while the
database is down, and the headers every answer carries."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infrastructure.database import DatabaseProbe
from infrastructure.deadlines import deadline

MAX_BODY_BYTES = 16 * 1024


class BodySizeLimit:
    """Read at most MAX_BODY_BYTES of a body; answer 413 for anything larger.

    The body is buffered (it is small by construction) so that a chunked body
    without Content-Length is held to the same limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (RFC 9112 6.3)
            return
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.max_bytes
        ):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {"detail": "The request body is too large.", "code": "payload_too_large"}
        await JSONResponse(body, 413, headers={"Connection": "close"})(
            scope, receive, send
        )


# Answers carry tokens or personal data: no cache keeps them (RFC 6749 5.1),
# and no browser guesses a type other than the one declared.
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
)


class HttpMiddleware:
    """An ASGI middleware for HTTP requests: anything else passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class SecurityHeaders(HttpMiddleware):
    """Add SECURITY_HEADERS to every HTTP answer, errors included."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                if b"cache-control" in names:  # a public answer says how long
                    names.add(b"pragma")
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DatabaseGate:
    """Answer 503 at once while the probe sees the database down.

    /healthz still answers: the process is alive, and an orchestrator should
    not restart it for an outage it will recover from by itself.
    """

    def __init__(self, app: ASGIApp, probe: DatabaseProbe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.probe.is_down
            and scope["path"] != "/healthz"
        ):
            body = {"detail": "Service unavailable.", "code": "database_unavailable"}
            response = JSONResponse(body, 503, headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestDeadline:
    """Give every request a deadline, which its database calls are held to.

    Past it, a call in flight is interrupted and the request answers 503
    `database_unavailable` (with Retry-After); what a command had stored by
    then is found out first (see the event store), so the answer is true.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with deadline(self.seconds):
            await self.app(scope, receive, send)
