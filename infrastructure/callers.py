"""Who holds a session: every authenticated request's one read, on the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg_pool import AsyncConnectionPool

from application.read_models import UserRow
from infrastructure.database import CONNECT_TIMEOUT_S, KEEPALIVES
from infrastructure.deadlines import bounded
from infrastructure.event_store import trusted_without_ping
from infrastructure.postgres_views import CALLER_QUERY
from infrastructure.tracing import TRACER

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

# How long a request may wait for one of these connections (or less: its deadline).
WAIT_S = 5.0
# Composed once: a query object is rendered again at every execution.
QUERY = CALLER_QUERY.as_string()


class SessionCallers:
    """Find the account behind an access token's session in one indexed read.

    Both tables it joins are consistent read models, written in the very
    transaction that records a logout, a revocation or an erasure: a read
    that starts after that commit cannot find the session, in any process.
    Nothing is cached, so nothing needs invalidating.

    The read runs on the event loop (async psycopg, a small pool of its own),
    so an authenticated request costs no hop to a thread and never waits for
    a thread of the request pool.
    """

    def __init__(self, url: str, connections: int, statement_timeout_s: float) -> None:
        self._returned: WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            WeakKeyDictionary()
        )
        self._pool = AsyncConnectionPool(
            url,
            min_size=connections,
            max_size=connections,
            open=False,
            name="authledger-callers",
            check=self._check,
            kwargs={
                "autocommit": True,
                "application_name": "authledger-callers",
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={round(statement_timeout_s * 1000)}",
                **KEEPALIVES,
            },
        )

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    async def open(self) -> None:
        """Start connecting in the background; the first reads wait for it."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def find(
        self, session_id: UUID, user_id: UUID, now: datetime
    ) -> UserRow | None:
        """The session's account if the session is active and is `user_id`'s.

        Held to the request's deadline: past it the read is abandoned (its
        statement cancelled, or its connection closed, in the background) and
        the caller gets a database error (503), never a wait.
        """
        with TRACER.start_as_current_span("read_models.session_check"):
            read = asyncio.ensure_future(self._read(session_id, user_id, now))
            try:
                return await asyncio.wait_for(asyncio.shield(read), bounded(WAIT_S))
            except TimeoutError:
                read.cancel()
                raise psycopg.OperationalError("past the request's deadline") from None

    async def _read(
        self, session_id: UUID, user_id: UUID, now: datetime
    ) -> UserRow | None:
        async with self._pool.connection(timeout=bounded(WAIT_S)) as conn:
            try:
                curs = await conn.execute(QUERY, (session_id, user_id, now))
                row = await curs.fetchone()
            finally:
                self._returned[conn] = time.monotonic()
        return None if row is None else UserRow(*row)

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Ping only a connection idle for long or one the server wrote to
        (as the request pool does): a dead one is dropped, the next one tried."""
        if not trusted_without_ping(self._returned.get(conn), conn.fileno()):
            await conn.execute("")
