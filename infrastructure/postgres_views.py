"""PostgreSQL read models: rows and tracking position commit in one transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import class_row
from psycopg.sql import SQL, Composed, Identifier

from application.read_models import (
    ActiveSessionsView,
    LoginHistoryRow,
    LoginHistoryView,
    MailOutboxView,
    MailRow,
    SessionRow,
    UserDirectoryView,
    UserRow,
)
from domain.values import ERASED
from infrastructure.read_model_registry import READ_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import Tracking
    from psycopg import Cursor
    from psycopg.rows import DictRow

Row = TypeVar("Row")


class PostgresReadModel(PostgresTrackingRecorder):
    """Shared plumbing: DDL in the view's own schema; writes through a caller's txn.

    A read model never opens a transaction to write: it writes through the
    cursor of a command's insert transaction (consistent read models) or of
    a runner's batch (lagging ones, rebuilds), bound by `writing`. Many
    request threads write through one view at once, so the binding is
    per thread.
    """

    table: ClassVar[str]
    ddl: ClassVar[tuple[str, ...]]

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            SQL(statement).format(schema=Identifier(self.datastore.schema))
            for statement in self.ddl
        )
        self._bound = threading.local()
        self._statements: dict[str, Composed] = {}

    @contextmanager
    def writing(self, curs: Cursor[DictRow], *, track: bool) -> Iterator[None]:
        """Apply events through `curs`; with `track`, record the last position.

        Rows and position then commit together with the caller's transaction:
        exactly once. Consistent read models written inline track nothing:
        they are at the head of the log by construction. Changes are sent at
        the end, runs of the same statement as one executemany.
        """
        self._bound.pending = []
        self._bound.position = None
        try:
            yield
            for statement, rows in groupby(self._bound.pending, key=itemgetter(0)):
                params = [row[1] for row in rows]
                if len(params) == 1:
                    curs.execute(statement, params[0], prepare=True)
                    continue
                # A cursor of its own: executemany's last result must not
                # become the one the tracking insert's fetch reads.
                with curs.connection.cursor() as many:
                    many.executemany(statement, params)
            if track and self._bound.position is not None:
                self._insert_tracking(curs, self._bound.position)
        finally:
            self._bound.pending = None

    def qualified(self, query: str) -> Composed:
        """Format `{table}` in a query as this view's schema-qualified table."""
        statement = self._statements.get(query)
        if statement is None:
            table = Identifier(self.datastore.schema, self.table)
            statement = self._statements[query] = SQL(query).format(table=table)
        return statement

    def write(
        self, tracking: Tracking, query: str, params: Sequence[Any] | dict[str, Any]
    ) -> None:
        """Apply one event's change in the bound transaction."""
        self._pending(tracking).append((self.qualified(query), params))

    def _pending(self, tracking: Tracking) -> list[tuple[Composed, Any]]:
        pending: list[tuple[Composed, Any]] | None = getattr(
            self._bound, "pending", None
        )
        if pending is None:
            raise RuntimeError(f"{self.table}: written outside a transaction")
        self._bound.position = tracking
        return pending

    def insert(
        self, row: Any, tracking: Tracking, leave_out: frozenset[str] = frozenset()
    ) -> None:
        """Insert a dataclass row whose fields are the table's columns (but
        `leave_out`: those of later versions)."""
        names = [name for name in _field_names(type(row)) if name not in leave_out]
        self.write(
            tracking,
            f"INSERT INTO {{table}} ({', '.join(names)})"
            f" VALUES ({', '.join('%s' for _ in names)})",
            [getattr(row, name) for name in names],
        )

    def skip(self, tracking: Tracking) -> None:
        """Record the position of an event this view does not need."""
        self._pending(tracking)

    def select(
        self, row_type: type[Row], query: str, params: Sequence[Any]
    ) -> list[Row]:
        """Query the live version of this table and build `row_type` from each row.

        Reads go through `read_models.<table>`, which a switch repoints at a
        rebuilt schema, so readers never need to know which version is live.
        """
        live_table = Identifier(READ_SCHEMA, self.table)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=class_row(row_type)) as curs,
        ):
            curs.execute(SQL(query).format(table=live_table), params, prepare=True)
            return curs.fetchall()


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(row_type: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(row_type)
    if names is None:
        names = _FIELD_NAMES[row_type] = tuple(f.name for f in fields(row_type))
    return names


def _columns(row_type: type[Any]) -> str:
    return ", ".join(_field_names(row_type))


# Columns a newer version added, as read while an older version (which
# lacks them) is still live beside the newer one being built: a read finds
# no such column and shows the default. Decisions never rest on them: a
# disabled account's logins are refused all the same, decided on its events.
LATER_COLUMNS = {
    "disabled": "coalesce((to_jsonb(u) ->> 'disabled')::boolean, false)",
    "mfa_enabled": "coalesce((to_jsonb(u) ->> 'mfa_enabled')::boolean, false)",
}
USER_COLUMNS = ", ".join(
    f"{LATER_COLUMNS[name]} AS {name}" if name in LATER_COLUMNS else f"u.{name}"
    for name in _field_names(UserRow)
)
USERS_TABLE = {
    "id": "uuid PRIMARY KEY",
    "email": "text NOT NULL",
    "role": "text NOT NULL",
    "is_verified": "boolean NOT NULL",
    "created_at": "timestamptz NOT NULL",
    "updated_at": "timestamptz NOT NULL",
    "locked_until": "timestamptz",
    "failed_logins": "integer NOT NULL",
    "disabled": "boolean NOT NULL",
    "mfa_enabled": "boolean NOT NULL",
}


def _users_ddl(absent: frozenset[str]) -> tuple[str, ...]:
    columns = ", ".join(
        f"{name} {kind}" for name, kind in USERS_TABLE.items() if name not in absent
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {{schema}}.users ({columns})",
        "CREATE INDEX IF NOT EXISTS users_email ON {schema}.users"
        " (email text_pattern_ops)",
    )


class PostgresUserDirectoryView(PostgresReadModel, UserDirectoryView):
    table = "users"
    # Columns of later versions this version's table lacks.
    absent: ClassVar[frozenset[str]] = frozenset()
    ddl = _users_ddl(absent)
    updatable: ClassVar = frozenset(
        {
            "email",
            "role",
            "is_verified",
            "locked_until",
            "failed_logins",
            "disabled",
            "mfa_enabled",
        }
    )

    def add_user(self, row: UserRow, tracking: Tracking) -> None:
        self.insert(row, tracking, self.absent)

    def update_user(
        self, user_id: UUID, at: datetime, tracking: Tracking, **changes: Any
    ) -> None:
        unknown = changes.keys() - self.updatable
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        for name in self.absent:
            changes.pop(name, None)
        assignments = "".join(f", {column} = %({column})s" for column in changes)
        self.write(
            tracking,
            f"UPDATE {{table}} SET updated_at = %(at)s{assignments} WHERE id = %(id)s",
            {"at": at, "id": user_id, **changes},
        )

    def get_user(self, user_id: UUID) -> UserRow | None:
        rows = self.select(
            UserRow,
            f"SELECT {USER_COLUMNS} FROM {{table}} u WHERE id = %s",
            (user_id,),
        )
        return rows[0] if rows else None

    def list_users(self, email_prefix: str, limit: int, offset: int) -> list[UserRow]:
        pattern = (
            email_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        return self.select(
            UserRow,
            f"SELECT {USER_COLUMNS} FROM {{table}} u WHERE email LIKE %s"
            " ORDER BY email, id LIMIT %s OFFSET %s",
            (pattern, limit, offset),
        )


class PostgresUserDirectoryViewV2(PostgresUserDirectoryView):
    """Version 2's table, without `mfa_enabled`, kept for one release."""

    absent = frozenset({"mfa_enabled"})
    ddl = _users_ddl(absent)


class PostgresUserDirectoryViewV1(PostgresUserDirectoryView):
    """Version 1's table, without `disabled` either, kept for one release."""

    absent = frozenset({"disabled", "mfa_enabled"})
    ddl = _users_ddl(absent)


@dataclass(frozen=True)
class ExpiredSession:
    session_id: UUID


# A session's factors, as read while version 1 (without them: every session
# of it was opened with a password alone) is live.
SESSION_COLUMNS = ", ".join(
    f"s.{name}" for name in _field_names(SessionRow) if name != "factors"
) + (
    ", CASE WHEN to_jsonb(s) ? 'factors'"
    " THEN ARRAY(SELECT jsonb_array_elements_text(to_jsonb(s) -> 'factors'))"
    " ELSE ARRAY['pwd'] END AS factors"
)


class PostgresActiveSessionsView(PostgresReadModel, ActiveSessionsView):
    table = "active_sessions"
    ddl = (
        "CREATE TABLE IF NOT EXISTS {schema}.active_sessions ("
        " session_id uuid PRIMARY KEY, user_id uuid NOT NULL,"
        " generation integer NOT NULL, created_at timestamptz NOT NULL,"
        " last_rotated_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,"
        " ip text NOT NULL, user_agent text NOT NULL, factors text[] NOT NULL)",
        "CREATE INDEX IF NOT EXISTS active_sessions_user"
        " ON {schema}.active_sessions (user_id)",
        # The sweep's: the sessions whose token ran out first.
        "CREATE INDEX IF NOT EXISTS active_sessions_expiry"
        " ON {schema}.active_sessions (expires_at)",
    )

    def add_session(self, row: SessionRow, tracking: Tracking) -> None:
        self.insert(row, tracking)

    def rotate_session(
        self,
        session_id: UUID,
        generation: int,
        at: datetime,
        expires_at: datetime,
        tracking: Tracking,
    ) -> None:
        self.write(
            tracking,
            "UPDATE {table} SET generation = %s, last_rotated_at = %s, expires_at = %s"
            " WHERE session_id = %s",
            (generation, at, expires_at, session_id),
        )

    def remove_session(self, session_id: UUID, tracking: Tracking) -> None:
        self.write(tracking, "DELETE FROM {table} WHERE session_id = %s", (session_id,))

    def remove_sessions_of(
        self, user_id: UUID, kept: UUID | None, tracking: Tracking
    ) -> None:
        self.write(
            tracking,
            "DELETE FROM {table} WHERE user_id = %s AND session_id IS DISTINCT FROM %s",
            (user_id, kept),
        )

    def get_session(self, session_id: UUID, now: datetime) -> SessionRow | None:
        rows = self.select(
            SessionRow,
            f"SELECT {SESSION_COLUMNS} FROM {{table}} s"
            " WHERE session_id = %s AND expires_at > %s",
            (session_id, now),
        )
        return rows[0] if rows else None

    def list_sessions(self, user_id: UUID, now: datetime) -> list[SessionRow]:
        return self.select(
            SessionRow,
            f"SELECT {SESSION_COLUMNS} FROM {{table}} s"
            " WHERE user_id = %s AND expires_at > %s ORDER BY created_at DESC",
            (user_id, now),
        )

    def expired(self, now: datetime, limit: int) -> list[UUID]:
        rows = self.select(
            ExpiredSession,
            "SELECT session_id FROM {table} WHERE expires_at <= %s"
            " ORDER BY expires_at LIMIT %s",
            (now, limit),
        )
        return [row.session_id for row in rows]


class PostgresActiveSessionsViewV1(PostgresActiveSessionsView):
    """Version 1's table, without `factors`, kept for one release."""

    ddl = (
        PostgresActiveSessionsView.ddl[0].replace(", factors text[] NOT NULL", ""),
        *PostgresActiveSessionsView.ddl[1:],
    )

    def add_session(self, row: SessionRow, tracking: Tracking) -> None:
        self.insert(row, tracking, frozenset({"factors"}))


# The authenticated request's one read: the account behind an active session.
CALLER_QUERY = SQL(
    f"SELECT {USER_COLUMNS} FROM {{sessions}} s JOIN {{users}} u ON u.id = s.user_id"
    " WHERE s.session_id = %s AND s.user_id = %s AND s.expires_at > %s"
).format(
    sessions=Identifier(READ_SCHEMA, PostgresActiveSessionsView.table),
    users=Identifier(READ_SCHEMA, PostgresUserDirectoryView.table),
)


class PostgresLoginHistoryView(PostgresReadModel, LoginHistoryView):
    table = "login_history"
    ddl = (
        "CREATE TABLE IF NOT EXISTS {schema}.login_history ("
        " position bigint PRIMARY KEY, user_id uuid NOT NULL, session_id uuid,"
        " occurred_at timestamptz NOT NULL, kind text NOT NULL, detail text NOT NULL,"
        " ip text NOT NULL, user_agent text NOT NULL)",
        "CREATE INDEX IF NOT EXISTS login_history_user"
        " ON {schema}.login_history (user_id, occurred_at, position)",
    )

    def append(self, row: LoginHistoryRow, tracking: Tracking) -> None:
        self.insert(row, tracking)

    def anonymise_user(
        self, user_id: UUID, personal_kinds: frozenset[str], tracking: Tracking
    ) -> None:
        self.write(
            tracking,
            "UPDATE {table} SET ip = %(erased)s, user_agent = %(erased)s,"
            " detail = CASE WHEN kind = ANY(%(kinds)s) THEN %(erased)s"
            " ELSE detail END WHERE user_id = %(id)s",
            {"erased": ERASED, "kinds": sorted(personal_kinds), "id": user_id},
        )

    def history(
        self,
        user_id: UUID,
        limit: int,
        offset: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LoginHistoryRow]:
        return self.select(
            LoginHistoryRow,
            f"SELECT {_columns(LoginHistoryRow)} FROM {{table}} WHERE user_id = %s"
            " AND occurred_at >= coalesce(%s::timestamptz, '-infinity')"
            " AND occurred_at <= coalesce(%s::timestamptz, 'infinity')"
            " ORDER BY occurred_at, position LIMIT %s OFFSET %s",
            (user_id, since, until, limit, offset),
        )


class PostgresMailOutboxView(PostgresReadModel, MailOutboxView):
    table = "outbox"
    ddl = (
        "CREATE TABLE IF NOT EXISTS {schema}.outbox ("
        " position bigint PRIMARY KEY, purpose text NOT NULL, user_id uuid NOT NULL,"
        " request_id uuid NOT NULL, email text NOT NULL,"
        " requested_at timestamptz NOT NULL, expires_at timestamptz NOT NULL)",
        "CREATE INDEX IF NOT EXISTS outbox_user ON {schema}.outbox (user_id, purpose)",
    )

    def add_mail(self, row: MailRow, tracking: Tracking) -> None:
        self.insert(row, tracking)

    def forget_user(self, user_id: UUID, tracking: Tracking) -> None:
        self.write(tracking, "DELETE FROM {table} WHERE user_id = %s", (user_id,))
