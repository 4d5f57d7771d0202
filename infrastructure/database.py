"""Where the events live: the database URL turned into eventsourcing's environment."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

if TYPE_CHECKING:
    from infrastructure.settings import Settings


def database_url(settings: Settings) -> str:
    """Return the configured database, or start the embedded one (not in production)."""
    if settings.database_url:
        return settings.database_url
    if settings.env == "production":
        raise MissingDatabaseError("AUTHLEDGER_DATABASE_URL is required in production")
    from infrastructure.embedded_db import start_embedded_postgres  # noqa: PLC0415

    return start_embedded_postgres(settings.data_dir / "db").get_uri()


class MissingDatabaseError(RuntimeError):
    """Production must name its database; the embedded one is for development."""


CONNECT_TIMEOUT_S = 2
# Read by the factory (infrastructure.event_store), not by the library.
STATEMENT_TIMEOUT = "DB_STATEMENT_TIMEOUT_S"
APPLICATION_NAME = "DB_APPLICATION_NAME"


# A silent server is found out within seconds, not the kernel's two hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def eventsourcing_env(
    url: str,
    pool_size: int,
    max_overflow: int,
    *,
    purpose: str = "authledger",
    statement_timeout_s: float | None = None,
) -> dict[str, str]:
    """Translate a libpq URL into the POSTGRES_* variables eventsourcing reads.

    `purpose` names the connections (pg_stat_activity's application_name);
    a statement timeout bounds each statement on them, server-side.
    """
    params = conninfo_to_dict(url)
    timeout = (
        {}
        if statement_timeout_s is None
        else {STATEMENT_TIMEOUT: str(statement_timeout_s)}
    )
    return {
        # The library's PostgreSQL factory, with our connection settings.
        "PERSISTENCE_MODULE": "infrastructure.event_store:AuthFactory",
        APPLICATION_NAME: purpose,
        **timeout,
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or 5432),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        # Fail fast instead of queueing forever behind a lock.
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
        # No ping before every use: the recorder checks pooled connections more
        # cheaply, so a restarted server still costs no failed request.
        "POSTGRES_PRE_PING": "n",
        # Its insert function writes to the wrong table in 9.5.6 (ADR 2): never.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # Appends without the library's table lock (ADR 15).
        "APPLICATION_RECORDER_TOPIC": "infrastructure.event_store:AuthRecorder",
    }


def connect(url: str, purpose: str, **settings: Any) -> psycopg.Connection[Any]:
    """An autocommit connection of one of the process's users (named after it)."""
    return psycopg.connect(
        url,
        autocommit=True,
        application_name=purpose,
        connect_timeout=CONNECT_TIMEOUT_S,
        **{**KEEPALIVES, **settings},
    )


def ensure_schema(url: str, schema: str) -> None:
    """Create a schema for a read model; eventsourcing never creates schemas."""
    with connect(url, "authledger-setup") as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        )


@dataclass(frozen=True)
class EventTables:
    """Where the event store keeps its events and its snapshots."""

    schema: str
    events: str
    snapshots: str

    def qualified(self) -> tuple[sql.Identifier, sql.Identifier]:
        return sql.Identifier(self.schema, self.events), sql.Identifier(
            self.schema, self.snapshots
        )


def appends_lock(events_table: str) -> sql.Identifier:
    """The function that holds appends back: LOCK TABLE needs more than INSERT."""
    return sql.Identifier("authledger", f"lock_{events_table}")


REFUSE_REWRITE = (
    "CREATE SCHEMA IF NOT EXISTS authledger",
    """
    CREATE OR REPLACE FUNCTION authledger.refuse_rewrite() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the event log is append-only: % on % refused',
            TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
)
APPEND_ONLY = (
    "CREATE OR REPLACE TRIGGER append_only BEFORE UPDATE OR DELETE ON {table}"
    " FOR EACH ROW EXECUTE FUNCTION authledger.refuse_rewrite()",
    "CREATE OR REPLACE TRIGGER no_truncate BEFORE TRUNCATE ON {table}"
    " FOR EACH STATEMENT EXECUTE FUNCTION authledger.refuse_rewrite()",
)
# Runs as its owner, so that a role with only INSERT on the table may still
# wait out the appends in flight (a read model's switch); nothing else.
LOCK_APPENDS = (
    "CREATE OR REPLACE FUNCTION {function}() RETURNS void LANGUAGE plpgsql"
    " SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
    " AS $$ BEGIN LOCK TABLE {table} IN EXCLUSIVE MODE; END $$",
    "REVOKE ALL ON FUNCTION {function}() FROM PUBLIC",
)


# Wave 1 numbered events 1, 2, 3… by a sequence; since then a position is
# `xid << 20 | index` (ADR 15). Every new position must lie above every old
# one, and a process of wave 1 still running must not append: its positions
# would land below readers that have passed them.
POSITIONS_FROM_XID = (
    "DO $$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'positions_from_xid'"
    " AND conrelid = '{table}'::regclass) THEN"
    " IF (SELECT coalesce(max(notification_id), 0) FROM {table})"
    " >= pg_current_xact_id()::text::bigint << 20 THEN"
    " RAISE EXCEPTION 'stored positions run ahead of transaction ids';"
    " END IF;"
    " EXECUTE format('ALTER TABLE {table} ADD CONSTRAINT positions_from_xid"
    " CHECK (notification_id >= %s) NOT VALID',"
    " pg_current_xact_id()::text::bigint << 20);"
    " END IF; END $$"
)


def protect_event_log(url: str, tables: EventTables) -> None:
    """Make events and snapshots append-only, and positions transaction-ordered.

    UPDATE, DELETE, TRUNCATE all fail: no code path, bug or injected SQL can
    rewrite history; only someone who may drop triggers (the table owner, a
    superuser) could. Appends by a process of wave 1 fail too (see above).
    """
    events, snapshots = tables.qualified()
    with connect(url, "authledger-setup") as conn, conn.transaction():
        for statement in REFUSE_REWRITE:
            conn.execute(statement)
        for table in (events, snapshots):
            for statement in APPEND_ONLY:
                conn.execute(sql.SQL(statement).format(table=table))
        for statement in LOCK_APPENDS:
            conn.execute(
                sql.SQL(statement).format(
                    function=appends_lock(tables.events), table=events
                )
            )
        name = events.as_string(conn)
        conn.execute(POSITIONS_FROM_XID.replace("{table}", name))


class DatabaseProbe:
    """Watch the database from a thread, so requests fail fast while it is down.

    Without it a request waits out its deadline before failing; with it, the
    interface answers 503 at once and the pool reconnects by itself when the
    probe sees the server again. Each round also tries what every command
    needs, an append's lock on the events table, and reports when it is held
    up (a migration's ACCESS EXCLUSIVE lock, a stuck EXCLUSIVE one). A round
    that hangs (a frozen server acknowledges TCP but never answers) counts
    as down once it has taken STALLED_S.
    """

    STALLED_S = 1.0
    LOCK_TIMEOUT = "SET LOCAL lock_timeout = '500ms'"

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._url = ""
        self._events: sql.Composable = sql.SQL("")
        self._failed = False
        self._round_started: float | None = None
        self.appends_blocked = False

    def start(self, url: str, events: sql.Composable) -> None:
        self._url = url
        self._events = events
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.STALLED_S)

    @property
    def is_down(self) -> bool:
        started = self._round_started
        hung = started is not None and time.monotonic() - started > self.STALLED_S
        return self._failed or hung

    def _watch(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        timeout = f"-c statement_timeout={round(self.STALLED_S * 1000)}"
        try_append = sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(self._events)
        while not self._stopping.wait(self._interval_s):
            self._round_started = time.monotonic()
            try:
                if conn is None or conn.closed:
                    conn = connect(self._url, "authledger-probe", options=timeout)
                conn.execute("SELECT 1")
                self._failed = False
                with conn.transaction(force_rollback=True):
                    conn.execute(self.LOCK_TIMEOUT)
                    conn.execute(try_append)
                self.appends_blocked = False
            except psycopg.errors.LockNotAvailable:
                self.appends_blocked = True
            except psycopg.Error:
                self._failed = True
                if conn is not None:
                    conn.close()
                conn = None
            finally:
                self._round_started = None
        if conn is not None:
            conn.close()
