"""Each request's deadline, and the watch that holds its database calls to it.

Server-side timeouts end a statement that waits on a lock or runs long, but
not one whose server has frozen (a stopped process still acknowledges TCP,
so keepalives pass). So every connection a request checks out is watched:
past the request's deadline its statement is cancelled; if the server does
not react, its socket is shut, which the caller sees as a lost connection.
A connection that was interrupted is closed, never reused: a cancel that
arrives late must not hit the next request's statement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)
_deadline: ContextVar[float | None] = ContextVar("authledger_deadline", default=None)

# How often the watch looks, and how long a cancelled statement may take to
# end. A call given `extra_s` past the deadline is over by the deadline +
# extra_s + CANCEL_GRACE_S + two looks: kept well under a second, so every
# request answers within its deadline + 1 s.
WATCH_EVERY_S = 0.02
CANCEL_GRACE_S = 0.25


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Give the block (and the threads it hands work to) `seconds` at most."""
    ends = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(ends if current is None else min(current, ends))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left to the current deadline (None: there is none)."""
    ends = _deadline.get()
    return None if ends is None else ends - time.monotonic()


def allows(wait_s: float) -> bool:
    """Whether waiting `wait_s` still leaves time before the deadline."""
    left = remaining()
    return left is None or left > wait_s


def bounded(timeout_s: float, extra_s: float = 0.0) -> float:
    """`timeout_s`, or what is left of the deadline (plus `extra_s`) if that is
    less; never below 0."""
    left = remaining()
    return timeout_s if left is None else max(0.0, min(timeout_s, left + extra_s))


@dataclass
class _Watched:
    conn: psycopg.Connection[Any]
    ends: float
    cancelled: bool = False
    cut: bool = False
    released: bool = False
    busy: bool = False  # an interruption of it is under way
    # Held while interrupting, and by the owner to release: never both at once.
    lock: threading.Lock = field(default_factory=threading.Lock)


class DeadlineWatch:
    """Interrupt statements of connections held past their request's deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(
        self, conn: psycopg.Connection[Any], extra_s: float = 0.0
    ) -> Iterator[None]:
        """Watch `conn` while the block runs, if the caller has a deadline."""
        ends = _deadline.get()
        if ends is None:
            yield
            return
        entry = _Watched(conn, ends + extra_s)
        with self._lock:
            self._watched[id(conn)] = entry
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="deadline watch", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                del self._watched[id(conn)]
            with entry.lock:
                entry.released = True
                if entry.cancelled or entry.cut:
                    conn.close()

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY_S)
            try:
                self._interrupt_overdue()
            except Exception:  # the watch must outlive any one failure
                log.exception("deadline watch round failed")

    def _interrupt_overdue(self) -> None:
        """Interrupt each overdue connection in a thread of its own: a cancel
        can take its whole grace (a frozen postmaster), and must not delay
        the next connection's."""
        now = time.monotonic()
        with self._lock:
            due = [e for e in self._watched.values() if now > e.ends and not e.busy]
            for entry in due:
                entry.busy = True
        for entry in due:
            threading.Thread(
                target=self._interrupt, args=(entry, now), daemon=True
            ).start()

    @staticmethod
    def _interrupt(entry: _Watched, now: float) -> None:
        try:
            with entry.lock:
                if entry.released or entry.cut:
                    return
                if not entry.cancelled:
                    entry.cancelled = True
                    with contextlib.suppress(psycopg.Error):
                        entry.conn.cancel_safe(timeout=CANCEL_GRACE_S)
                elif now > entry.ends + CANCEL_GRACE_S:
                    entry.cut = True
                    _shut(entry.conn)
        finally:
            entry.busy = False


# The one watch of this process.
WATCH = DeadlineWatch()


def _shut(conn: psycopg.Connection[Any]) -> None:
    """End the connection's socket under its blocked reader: it reads EOF."""
    with contextlib.suppress(OSError, psycopg.Error):
        duplicate = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()
