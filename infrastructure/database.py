"""Where the events live: the database URL turned into eventsourcing's environment."""

from __future__ import annotations

import threading
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


def eventsourcing_env(url: str, pool_size: int, max_overflow: int) -> dict[str, str]:
    """Translate a libpq URL into the POSTGRES_* variables eventsourcing reads."""
    params = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or 5432),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        # Fail fast instead of queueing forever behind a lock.
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_CONNECT_TIMEOUT": "2",
        # No ping before every use: the recorder checks pooled connections more
        # cheaply, so a restarted server still costs no failed request.
        "POSTGRES_PRE_PING": "n",
        # Its insert function writes to the wrong table in 9.5.6 (ADR 2): never.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # Appends without the library's table lock (ADR 15).
        "APPLICATION_RECORDER_TOPIC": "infrastructure.event_store:AuthRecorder",
    }


def ensure_schema(url: str, schema: str) -> None:
    """Create a schema for a read model; eventsourcing never creates schemas."""
    with psycopg.connect(url, autocommit=True) as conn:
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
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
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

    Without it a request waits out the pool and the library's retries (tens
    of seconds) before failing; with it, the interface answers 503 at once
    and the pool reconnects by itself when the probe sees the server again.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._url = ""
        self.is_down = False

    def start(self, url: str) -> None:
        self._url = url
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stopping.wait(self._interval_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._url, autocommit=True, connect_timeout=2
                    )
                conn.execute("SELECT 1")
                self.is_down = False
            except psycopg.Error:
                self.is_down = True
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
