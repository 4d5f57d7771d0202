"""The events table's recorder: writers never queue on one lock, readers never skip.

eventsourcing's own recorder locks the whole table for every insert, until the
commit is flushed, so that ids commit in id order. This one gives each event
the position `transaction id << 20 | index in its transaction` and lets
readers pass only positions below the oldest transaction still running
(`pg_snapshot_xmin`): every transaction below it has ended, so nothing can
commit behind a reader, while writers commit side by side (ADR 15).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from uuid import UUID
from weakref import WeakKeyDictionary

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import pq
from psycopg.errors import error_from_result
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import PoolTimeout

from application.errors import ReadModelFailedError
from infrastructure.database import (
    APPLICATION_NAME,
    KEEPALIVES,
    STATEMENT_TIMEOUT,
    appends_lock,
)
from infrastructure.deadlines import WATCH, allows, bounded
from infrastructure.instruments import appended
from infrastructure.tracing import TRACER

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import Connection, Cursor, Pipeline
    from psycopg.rows import DictRow

# A transaction holds at most 2**20 events; 2**43 transaction ids fit in a bigint.
INDEX_BITS = 20
# Positions below this are final: every transaction that could write one has ended.
HORIZON = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {INDEX_BITS})"
FIRST_POSITION = f"(pg_current_xact_id()::text::bigint << {INDEX_BITS})"
# Per-aggregate advisory locks: appends share them, a must-win writer excludes.
LOCK_AGGREGATE = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))"
SHARE_AGGREGATE = "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 7))"
# One append is one statement: Postgres takes at most 65 535 parameters, 5 per event.
MAX_EVENTS = 10_000
# Appends of up to this many events use prepared statements (one per shape).
PREPARED_EVENTS = 64
# A lone append's parameters as libpq takes them: four per event (id,
# version and topic as text, the state as raw bytes), then the aggregates' keys.
EVENT_FORMATS = (pq.Format.TEXT, pq.Format.TEXT, pq.Format.TEXT, pq.Format.BINARY)
# How many lone-append statements a connection keeps prepared, and the error
# of one found deallocated (invalid_sql_statement_name).
PREPARED_SHAPES = 16
STATEMENT_GONE = b"26000"
# A connection back in the pool this recently is trusted without a ping.
TRUSTED_FOR_S = 0.5
# An append whose connection broke is tried this often, this far apart.
INSERT_ATTEMPTS = 10
INSERT_RETRY_WAIT_S = 0.2
# How long a broken connection's backend may take to end once told to.
LOST_BACKEND_WAIT_S = 5.0
BACKEND_ALIVE = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
# Past the request's deadline, finding out whether a lost commit happened may
# take this much longer: the answer is then true rather than "unknown".
RESOLVE_EXTRA_S = 0.35  # with the watch's cut (see deadlines), under 1 s
# A read whose connection broke is tried again this often, this far apart.
READ_ATTEMPTS = 10
READ_RETRY_WAIT_S = 0.2
# Server errors that end the connection, not the statement: a restart, a
# crash, a session killed after idling in a transaction. Anything else with
# an SQLSTATE (a lock or statement timeout, a cancel) is final.
CONNECTION_ENDED = ("08", "57P01", "57P02", "57P03", "25P03")

log = logging.getLogger(__name__)
# Which lone-append statements each connection holds prepared, by name.
_PREPARED: WeakKeyDictionary[Connection[DictRow], set[bytes]] = WeakKeyDictionary()
Result = TypeVar("Result")


class TransactionLostError(DatabaseError):
    """The connection of a one_transaction() block broke: nothing of it committed."""


class InlineWriter(Protocol):
    """What runs inside every insert transaction, after the events are in."""

    def __call__(
        self, curs: Cursor[DictRow], notifications: Sequence[Notification]
    ) -> None:
        """Write what must commit with these events (the consistent read models)."""
        ...


def connection_ended(error: BaseException) -> bool:
    """Whether a database error lost the connection (a retry may pass), rather
    than failed a statement on it (a retry would only wait the same again)."""
    cause = error.__cause__ if isinstance(error, PersistenceError) else error
    if isinstance(cause, PoolTimeout):
        return False  # every connection is busy: waiting again helps nobody
    if not isinstance(cause, psycopg.Error):
        return cause is None or isinstance(cause, OSError)
    state = cause.sqlstate
    return state is None or state.startswith(CONNECTION_ENDED)


def reconnecting(read: Callable[..., Result]) -> Callable[..., Result]:
    """Try a read again when its connection ended, while the deadline allows.

    In place of the library's retry of every operational error ten times,
    which also repeats a lock or statement timeout, ten times its length.
    """

    @functools.wraps(read)
    def again(*args: Any, **kwargs: Any) -> Result:
        attempt = 1
        while True:
            try:
                return read(*args, **kwargs)
            except (InterfaceError, OperationalError) as error:
                if (
                    attempt == READ_ATTEMPTS
                    or not connection_ended(error)
                    or not allows(READ_RETRY_WAIT_S)
                ):
                    raise
            attempt += 1
            time.sleep(READ_RETRY_WAIT_S)

    return again


_SELECT_EVENTS = inspect.unwrap(PostgresAggregateRecorder.select_events)
_INSERT_SNAPSHOTS = inspect.unwrap(PostgresAggregateRecorder.insert_events)


class BoundedReads(PostgresAggregateRecorder):
    """An aggregate's events (or snapshots) read with bounded retries."""

    @reconnecting
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return cast(
            "Sequence[StoredEvent]",
            _SELECT_EVENTS(self, originator_id, gt=gt, lte=lte, desc=desc, limit=limit),
        )


class SnapshotRecorder(BoundedReads):
    """Snapshots: a shortcut for reads, so one that cannot be stored is skipped.

    The library tries a failed insert ten times, and then fails the command
    whose events are stored already. A snapshot of the same version stored
    by another process holds the same state: nothing is lost either way.
    """

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        try:
            _INSERT_SNAPSHOTS(self, stored_events, **kwargs)
        except IntegrityError:
            pass  # taken already, by a racing save
        except (InterfaceError, OperationalError) as error:
            log.warning("snapshot skipped: %s", type(error).__name__)
        return None


def trusted_without_ping(returned_at: float | None, fileno: int) -> bool:
    """A connection used moments ago whose socket has nothing to read is alive:
    a server that ends a connection says so first (HikariCP's alive-bypass)."""
    return (
        returned_at is not None
        and time.monotonic() - returned_at < TRUSTED_FOR_S
        and not select.select([fileno], [], [], 0)[0]
    )


class AuthFactory(PostgresFactory):
    """The library's PostgreSQL factory, with authledger's connection settings.

    Every connection carries its lock timeout, its statement timeout (where
    the environment sets one: request pools), TCP keepalives and a user
    timeout so a dead server or a cut network is noticed within seconds, and
    an application name that tells whose connection it is.
    """

    aggregate_recorder_class = SnapshotRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        settings = pool.kwargs
        if not isinstance(settings, dict):
            raise TypeError("the datastore's pool takes no connection settings")
        options = f"-c lock_timeout={self.datastore.lock_timeout}s"
        statement_timeout = self.env.get(STATEMENT_TIMEOUT)
        if statement_timeout:
            ms = round(float(statement_timeout) * 1000)
            options += f" -c statement_timeout={ms}"
        settings.update(
            options=options,
            application_name=self.env.get(APPLICATION_NAME) or "authledger",
            **KEEPALIVES,
        )
        waits = pool.getconn

        def getconn(timeout: float | None = None) -> psycopg.Connection[Any]:
            # A request waits for a connection no longer than its deadline.
            return waits(bounded(pool.timeout) if timeout is None else timeout)

        pool.getconn = getconn  # type: ignore[method-assign]


class AuthRecorder(BoundedReads, PostgresApplicationRecorder):
    """Appends ordered by transaction, consistent read models written inline."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.table = Identifier(self.datastore.schema, self.events_table_name)
        self._insert_statements: dict[tuple[int, int], bytes] = {}
        self.lock_timeout_statement = SQL("SET LOCAL lock_timeout = '{0}s'").format(
            self.datastore.lock_timeout
        )
        self.inline: InlineWriter | None = None
        self._held = threading.local()
        self._returned: WeakKeyDictionary[Connection[DictRow], float] = (
            WeakKeyDictionary()
        )
        self._numbered: dict[tuple[int, int], bytes] = {}
        self._pin_connections()

    def _pin_connections(self) -> None:
        """Let one_transaction() lend its connection to this thread's reads.

        The repository (events and snapshots) reaches the database through the
        datastore's get_connection(); within one_transaction() it gets the
        thread's open transaction instead of a pooled autocommit connection.
        """
        pooled = self.datastore.get_connection

        @contextmanager
        def get_connection() -> Iterator[Connection[DictRow]]:
            pinned = self._held.__dict__.get("conn")
            if pinned is not None:
                if pinned.broken or pinned.closed:
                    # The library would retry on it ten times: the transaction
                    # is gone, so the whole command fails now (503, retryable).
                    raise TransactionLostError("the database connection was lost")
                yield pinned
                return
            with self._checked() as conn:
                yield conn

        self._pooled = pooled
        self.datastore.get_connection = get_connection  # type: ignore[method-assign]

    @contextmanager
    def _checked(self, extra_s: float = 0.0) -> Iterator[Connection[DictRow]]:
        """A pooled connection that is alive, skipping those a restart closed,
        held to the deadline of the request (plus `extra_s`).

        In place of the pool's ping before every use: a dead one goes back
        (the pool discards it) and the next is tried, up to the whole pool.
        """
        for _ in range(self.datastore.pool.max_size + 1):
            if not allows(-extra_s):  # each dead one may have cost a cut
                raise OperationalError("past the request's deadline")
            with self._pooled() as conn, WATCH.watching(conn, extra_s):
                if self._alive(conn):
                    try:
                        yield conn
                    finally:
                        self._returned[conn] = time.monotonic()
                    return
        raise OperationalError("no live connection to the database")

    def _alive(self, conn: Connection[DictRow]) -> bool:
        """Ping only a connection idle for long, or one the server wrote to.

        A server that ends a connection (restart, termination) says so before
        closing it, so its socket turns readable; a connection used moments
        ago with nothing to read is trusted without a round trip (HikariCP's
        alive-bypass window).
        """
        if conn.closed or conn.broken:
            return False
        if trusted_without_ping(self._returned.get(conn), conn.fileno()):
            return True
        try:
            conn.execute("")
        except psycopg.Error:
            return False
        return True

    @contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Run this thread's reads and appends in one transaction, committed at the end.

        An append inside it is a savepoint; its positions still come from the
        transaction's id, assigned at the append, its first write. If the
        connection breaks at the commit, whether it happened is found out
        (see stored_positions): committed, the block's outcome stands; not,
        TransactionLostError (nothing of it is stored: a retry is safe).
        """
        if self._held.__dict__.get("conn") is not None:
            yield  # already inside one
            return
        with self._checked() as conn:
            backend = conn.info.backend_pid
            committing = False
            try:
                with conn.transaction():
                    self._held.conn = conn
                    self._held.appended = ()
                    try:
                        yield
                        committing = True
                    finally:
                        stored: Sequence[StoredEvent] = self._held.appended
                        started: float = self._held.__dict__.get("started", 0.0)
                        self._held.conn = None
                        self._held.appended = ()
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                if not (committing and stored and _lost(conn)):
                    raise
                if self.stored_positions(backend, stored) is None:
                    raise TransactionLostError("not committed") from error
            if stored:
                appended((e.topic for e in stored), started)

    @contextmanager
    def exclusively(self, aggregate_id: UUID) -> Iterator[None]:
        """Hold other appends to the aggregate back while the block runs.

        Every append takes a shared advisory lock on each aggregate it writes;
        this takes the exclusive one first thing in the block's one transaction
        (so on the connection its reads and save use, and released at its
        end whatever happens). Racing appends wait, then lose on the version
        and decide again on what the block wrote.
        """
        with self.one_transaction():
            self._held.conn.execute(LOCK_AGGREGATE, (str(aggregate_id),))
            yield

    def behind(self, aggregate_id: UUID) -> None:
        """Inside one_transaction(): wait out a block holding the aggregate
        exclusively, and hold new ones back until this transaction ends (a
        command that saves elsewhere but decides on the aggregate)."""
        conn = self._held.__dict__.get("conn")
        if conn is None:
            raise ProgrammingError("behind() outside one_transaction()")
        conn.execute(SHARE_AGGREGATE, (str(aggregate_id),))

    def _select(self, where: str, order: str = "") -> Composed:
        query = f"SELECT * FROM {{table}} WHERE {where} {order}"
        return SQL(query).format(table=self.table)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        """Append the events and write the inline read models, in one transaction."""
        with TRACER.start_as_current_span("events.append") as span:
            span.set_attribute("authledger.events", len(stored_events))
            return self._append(stored_events)

    def _append(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        """(See insert_events.)

        No table lock and no NOTIFY (whose lock is held through commit):
        concurrent appends commit and flush together. A failure of an inline
        read model rolls back the events too. With nothing to write beside
        them, the one insert statement is the whole transaction.

        When the connection breaks, the append is not blindly tried again (as
        the library does, which then fails on its own events): if these very
        events were stored, their positions are the answer; if not, it is
        tried again, a few times.
        """
        if not stored_events:
            return []
        self._check_one_append(len(stored_events))
        started = time.perf_counter()
        if self._held.__dict__.get("conn") is not None:
            with self.datastore.get_connection() as conn:
                try:
                    ids = self._insert_with_inline(conn, stored_events)
                except psycopg.IntegrityError as error:
                    # As the pool's connections raise it: a lost race, which
                    # the command may decide again in the same transaction
                    # (the append was a savepoint).
                    raise IntegrityError(str(error)) from error
            self._held.appended = stored_events  # this transaction's positions
            self._held.started = started
            return ids
        attempt = 1
        while True:
            used: Connection[DictRow] | None = None
            backend = 0  # known before the watch may close the connection
            try:
                with self._checked() as conn:
                    used, backend = conn, conn.info.backend_pid
                    ids = self._insert_alone(conn, stored_events)
                appended((e.topic for e in stored_events), started)
                return ids
            except (OperationalError, InterfaceError):
                if used is not None:
                    if not _lost(used):
                        raise  # a statement failed (a lock timeout): rolled back
                    positions = self.stored_positions(backend, stored_events)
                    if positions is not None:
                        appended((e.topic for e in stored_events), started)
                        return positions  # it committed: only the answer was lost
                if attempt == INSERT_ATTEMPTS or not allows(INSERT_RETRY_WAIT_S):
                    raise
            attempt += 1
            time.sleep(INSERT_RETRY_WAIT_S)

    def _insert_alone(
        self, conn: Connection[DictRow], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        if self.inline is not None:
            return self._insert_with_inline(conn, stored_events)
        return self._insert_through_libpq(conn, stored_events)

    def _insert_through_libpq(
        self, conn: Connection[DictRow], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """The lone append, one statement handed to libpq as it is.

        psycopg's execute costs the client more CPU than the append's whole
        round trip (ADR 27); here the parameters are already bytes and the
        statement is prepared once per connection. libpq's call waits with
        the interpreter released, and the deadline watch still cancels it.
        """
        values: list[bytes] = []
        for e in stored_events:
            values += (
                str(e.originator_id).encode(),
                str(e.originator_version).encode(),
                e.topic.encode(),
                e.state,
            )
        aggregates = sorted({str(e.originator_id).encode() for e in stored_events})
        shape = (len(stored_events), len(aggregates))
        formats = [*EVENT_FORMATS] * shape[0] + [pq.Format.TEXT] * shape[1]
        prepare = shape[0] <= PREPARED_EVENTS
        statement = self._numbered.get(shape)
        if statement is None:
            statement = _numbered(self._insert_statement(*shape))
            if prepare:
                self._numbered[shape] = statement
        result = _run(conn, statement, values + aggregates, formats, prepare=prepare)
        _check(conn, result, pq.ExecStatus.TUPLES_OK)
        positions = (result.get_value(row, 0) for row in range(result.ntuples))
        return sorted(int(p) for p in positions if p is not None)  # NOT NULL

    def stored_positions(
        self, backend: int, stored_events: Sequence[StoredEvent]
    ) -> list[int] | None:
        """Where these exact events are stored, or None: after a connection
        broke around its commit, whether the transaction happened.

        The broken connection's backend is ended first and waited for, so the
        transaction is over either way and the answer is final. A request may
        spend a moment past its deadline on this; longer, the outcome is
        unknown (OperationalError: a retryable answer).
        """
        ids = [str(e.originator_id) for e in stored_events]
        versions = [e.originator_version for e in stored_events]
        statement = SQL(
            "SELECT originator_id, originator_version, state, notification_id"
            " FROM {table} WHERE (originator_id, originator_version) IN"
            " (SELECT * FROM unnest(%s::uuid[], %s::bigint[]))"
        ).format(table=self.table)
        with self._checked(RESOLVE_EXTRA_S) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
            deadline = time.monotonic() + bounded(LOST_BACKEND_WAIT_S, RESOLVE_EXTRA_S)
            while conn.execute(BACKEND_ALIVE, (backend,)).fetchone():
                if time.monotonic() > deadline:
                    raise OperationalError("the outcome of a lost commit is unknown")
                time.sleep(0.01)
            rows = conn.execute(statement, (ids, versions)).fetchall()
        stored = {
            (row["originator_id"], row["originator_version"]): row for row in rows
        }
        positions = []
        for e in stored_events:
            row = stored.get((e.originator_id, e.originator_version))
            if row is None or bytes(row["state"]) != e.state:
                return None  # not ours: that transaction did not commit
            positions.append(int(row["notification_id"]))
        return sorted(positions)

    def _insert_with_inline(
        self, conn: Connection[DictRow], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        failure: BaseException | None = None
        try:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
                try:
                    self._insert_stored_events(curs, stored_events)
                    _sync(conn, pipeline)  # a version conflict raises here
                    ids = sorted(row["notification_id"] for row in curs.fetchall())
                    self._write_inline(curs, pipeline, stored_events, ids)
                # Re-raised below: leaving a failed pipeline by an error warns.
                except Exception as error:  # noqa: BLE001
                    failure = error
                    raise psycopg.Rollback from None
        except (psycopg.Rollback, psycopg.Error):
            # A Rollback that escapes, or a rollback that failed (a lost
            # connection): either way the failure below is what happened.
            if failure is None:
                raise
        if failure is not None:
            raise failure
        return ids

    def _insert_stored_events(
        self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        """Insert without the library's table lock; positions come from the xid."""
        params: list[Any] = []
        for e in stored_events:
            params += (e.originator_id, e.originator_version, e.topic, e.state)
        # A backend never waits for its own locks: the exclusive holder passes.
        aggregates = sorted({str(e.originator_id) for e in stored_events})
        shape = (len(stored_events), len(aggregates))
        curs.execute(
            self._insert_statement(*shape),
            params + aggregates,
            prepare=shape[0] <= PREPARED_EVENTS,
        )

    def _insert_statement(self, events: int, aggregates: int) -> bytes:
        """Share each aggregate's lock (an exclusive holder makes it wait), then
        insert at positions from the transaction's id: one statement, whose
        parameters are plain values (arrays cost the client twice the CPU),
        kept as bytes (composing it again costs as much as sending it).
        RETURNING promises no order: positions grow with the index, so the
        caller sorts them back into the events' order.
        """
        statement = self._insert_statements.get((events, aggregates))
        if statement is not None:
            return statement
        row = "(%s::uuid, %s::bigint, %s::text, %s::bytea, {})"
        rows = ", ".join(row.format(index) for index in range(events))
        keys = ", ".join(["(%s::text)"] * aggregates)
        statement = (
            SQL(
                "INSERT INTO {table} (originator_id, originator_version, topic, state,"
                " notification_id) SELECT e.originator_id, e.originator_version,"
                " e.topic, e.state, {first} + e.index"
                f" FROM (VALUES {rows})"
                " AS e(originator_id, originator_version, topic, state, index)"
                " WHERE (SELECT count(*) FROM (SELECT"
                " pg_advisory_xact_lock_shared(hashtextextended(key, 7))"
                f" FROM (VALUES {keys}) AS k(key)) AS held) >= 0"
                " RETURNING notification_id"
            )
            .format(table=self.table, first=SQL(FIRST_POSITION))
            .as_bytes()
        )
        if events <= PREPARED_EVENTS:
            self._insert_statements[events, aggregates] = statement
        return statement

    def _check_one_append(self, events: int) -> None:
        """Positions come from the transaction's id: one append per transaction."""
        if events > MAX_EVENTS:
            raise ProgrammingError(f"{events} events in one append")
        if self._held.__dict__.get("appended"):
            raise ProgrammingError("a second append in one transaction")

    def _write_inline(
        self,
        curs: Cursor[DictRow],
        pipeline: Pipeline,
        stored_events: Sequence[StoredEvent],
        ids: list[int],
    ) -> None:
        if self.inline is None:
            return
        notifications = [
            Notification(
                id=notification_id,
                originator_id=e.originator_id,
                originator_version=e.originator_version,
                topic=e.topic,
                state=e.state,
            )
            for e, notification_id in zip(stored_events, ids, strict=True)
        ]
        try:
            self.inline(curs, notifications)
            _sync(
                curs.connection, pipeline
            )  # the inline writes' SQL errors surface here
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the database failed (a timeout, a lost connection), not the model
        except Exception as error:
            raise ReadModelFailedError(str(error)) from error

    @reconnecting
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Events after `start` in position order, only up to the horizon."""
        first = 0 if start is None else start + (0 if inclusive_of_start else 1)
        where = f"notification_id >= %s AND notification_id < {HORIZON}"
        params: list[Any] = [first]
        if stop is not None:
            where += " AND notification_id <= %s"
            params.append(stop)
        if topics:
            where += " AND topic = ANY(%s)"
            params.append(list(topics))
        params.append(limit)
        statement = self._select(where, "ORDER BY notification_id LIMIT %s")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [_notification(row) for row in curs.fetchall()]

    @reconnecting
    def max_notification_id(self) -> int | None:
        """The last position a reader may pass now (the head, as readers see it)."""
        statement = SQL(
            f"SELECT max(notification_id) AS max FROM {{table}}"
            f" WHERE notification_id < {HORIZON}"
        ).format(table=self.table)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(statement).fetchone()
        return None if row is None else row["max"]

    @reconnecting
    def count_after(self, position: int, at_most: int) -> int:
        """How many readable events lie after `position`, counting up to `at_most`."""
        statement = SQL(
            f"SELECT count(*) AS n FROM (SELECT 1 FROM {{table}}"
            f" WHERE notification_id > %s AND notification_id < {HORIZON}"
            f" LIMIT %s) AS pending"
        ).format(table=self.table)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(statement, (position, at_most)).fetchone()
        return int(row["n"]) if row else 0

    def select_all_after(
        self, curs: Cursor[DictRow], position: int
    ) -> list[Notification]:
        """Every event after `position`, ignoring the horizon.

        Only correct while the caller holds the table's EXCLUSIVE lock, when no
        insert is in flight and so every event is final.
        """
        curs.execute(
            self._select("notification_id > %s", "ORDER BY notification_id"),
            (position,),
        )
        return [_notification(row) for row in curs.fetchall()]

    def lock_appends(self, curs: Cursor[DictRow]) -> None:
        """Wait for every append in flight, and hold new ones until commit."""
        curs.execute(self.lock_timeout_statement)
        curs.execute(SQL("SELECT {}()").format(appends_lock(self.events_table_name)))


def _run(
    conn: Connection[DictRow],
    statement: bytes,
    values: Sequence[bytes],
    formats: Sequence[pq.Format],
    *,
    prepare: bool,
) -> pq.abc.PGresult:
    """Execute the statement through libpq; if `prepare`, prepared once per
    connection (up to PREPARED_SHAPES statements; others go unprepared).

    Its name comes from its text, so recorders sharing a connection share it.
    One found gone (psycopg deallocates every prepared statement after
    rolling back one of its own) is prepared again: in autocommit, the failed
    execution changed nothing.
    """
    pgconn = conn.pgconn
    prepared = _PREPARED.setdefault(conn, set())
    name = _name_of(statement) if prepare else b""
    if not name or (name not in prepared and len(prepared) >= PREPARED_SHAPES):
        return pgconn.exec_params(statement, values, None, formats)
    if name not in prepared:
        _check(conn, pgconn.prepare(name, statement), pq.ExecStatus.COMMAND_OK)
        prepared.add(name)
    result = pgconn.exec_prepared(name, values, formats)
    if result.error_field(pq.DiagnosticField.SQLSTATE) == STATEMENT_GONE:
        prepared.clear()  # all of them went at once
        return _run(conn, statement, values, formats, prepare=True)
    return result


@functools.lru_cache(maxsize=4 * PREPARED_SHAPES)
def _name_of(statement: bytes) -> bytes:
    return b"authledger_" + hashlib.sha256(statement).hexdigest()[:24].encode()


def _numbered(statement: bytes) -> bytes:
    """psycopg's `%s` placeholders as libpq's `$1, $2, ...`."""
    parts = statement.split(b"%s")
    numbered = [part + b"$%d" % index for index, part in enumerate(parts[:-1], 1)]
    return b"".join([*numbered, parts[-1]])


def _check(
    conn: Connection[DictRow], result: pq.abc.PGresult, expected: pq.ExecStatus
) -> None:
    """Raise what psycopg would have raised for a failed libpq call."""
    if result.status == expected:
        return
    if conn.pgconn.status == pq.ConnStatus.BAD:
        message = conn.pgconn.error_message.decode(errors="replace")
        raise psycopg.OperationalError(message or "the connection was lost")
    raise error_from_result(result, encoding=conn.info.encoding)


def _lost(conn: Connection[DictRow]) -> bool:
    """Whether the connection broke (its transaction's outcome then unknown),
    rather than a statement on it failing."""
    return conn.broken or conn.closed


def _sync(conn: Connection[DictRow], pipeline: Pipeline) -> None:
    """Send what the pipeline holds, then sync it.

    psycopg's sync alone waits forever when a large request (a few hundred
    kB) is still unsent (psycopg issue 685): flush first, reading the
    server's answers meanwhile so that neither side blocks the other.
    """
    pgconn = conn.pgconn
    while pgconn.flush():
        readable, _, _ = select.select([pgconn.socket], [pgconn.socket], [])
        if readable:
            pgconn.consume_input()
    pipeline.sync()


def _notification(row: DictRow) -> Notification:
    return Notification(
        id=row["notification_id"],
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
