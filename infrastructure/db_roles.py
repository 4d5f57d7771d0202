"""Who may do what to the event store: its owner, and an application role.

The owner creates the tables and their append-only triggers. The application
role may only read and append to them: it cannot drop or disable a trigger
(that needs ownership) nor set `session_replication_role` (that needs a
superuser), so even a compromised process cannot rewrite history. It owns
what it builds and rebuilds itself: the read models and their registry.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from infrastructure.database import EventTables, appends_lock, connect

# The triggers protect_event_log() installs; 'O' and 'A' fire in normal sessions.
PROTECTED = """
SELECT c.relname, count(t.tgname) FILTER (WHERE t.tgenabled IN ('O', 'A')
       AND t.tgfoid = to_regprocedure('authledger.refuse_rewrite()')
       AND t.tgname IN ('append_only', 'no_truncate'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_trigger t ON t.tgrelid = c.oid
WHERE n.nspname = %s AND c.relname = ANY(%s)
GROUP BY c.relname
"""


class UnprotectedEventLogError(RuntimeError):
    """The event log lacks its append-only triggers, and this role cannot add them."""


class UnsafeAppRoleError(ValueError):
    """The application role could alter the event log: no least privilege."""


def owns_event_log(url: str, tables: EventTables) -> bool:
    """Whether this role may run the event store's DDL: it owns it, or it is new."""
    with connect(url, "authledger-setup") as conn:
        row = conn.execute(
            "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (tables.schema, tables.events),
        ).fetchone()
    return row is None or bool(row[0])


def check_append_only(url: str, tables: EventTables) -> None:
    """Refuse to serve a log left unprotected, or as a role that could unprotect it."""
    names = [tables.events, tables.snapshots]
    with connect(url, "authledger-setup") as conn:
        rows = conn.execute(PROTECTED, (tables.schema, names)).fetchall()
        refuse_unsafe_role(conn, conn.info.user, tables)
    protected = {str(name) for name, triggers in rows if triggers == 2}
    for name in names:
        if name not in protected:
            raise UnprotectedEventLogError(
                f"{tables.schema}.{name} is not append-only: run"
                " `authledger db setup-roles` as the owner of the event store"
            )


# Who could switch the triggers off or replace the tables: a member (even
# without INHERIT: it may SET ROLE) of a superuser, of a role that may create
# roles (before PostgreSQL 16 it may grant itself any), of the tables' owner,
# or of the owner of their schema or database (who may drop them), or of a
# built-in role that reaches the server's files or writes every table.
RISKY = """
SELECT EXISTS (
    SELECT 1 FROM pg_roles a
    WHERE pg_has_role(r.oid, a.oid, 'MEMBER')
      AND (a.rolsuper OR a.rolcreaterole OR a.rolname = %(owner)s
           OR a.oid = (SELECT datdba FROM pg_database
                       WHERE datname = current_database())
           OR a.oid = (SELECT nspowner FROM pg_namespace WHERE nspname = %(schema)s)
           OR a.rolname IN ('pg_execute_server_program', 'pg_write_server_files',
                            'pg_write_all_data')))
FROM pg_roles r WHERE r.rolname = %(role)s
"""
OWNER = """
SELECT pg_get_userbyid(c.relowner) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


def refuse_unsafe_role(
    conn: psycopg.Connection[Any], role: str, tables: EventTables
) -> None:
    """Refuse `role` as the application role if it could escape its limits."""
    found_owner = conn.execute(OWNER, (tables.schema, tables.events)).fetchone()
    owner = str(found_owner[0]) if found_owner else str(conn.info.user)
    schema = tables.schema
    row = conn.execute(RISKY, {"role": role, "owner": owner, "schema": schema})
    found = row.fetchone()
    if found is not None and found[0]:
        raise UnsafeAppRoleError(
            f"{role} is or may become a superuser, a role that creates roles,"
            f" {owner}, or the owner of the database or of schema {schema}:"
            " the application role must be none of these"
        )


def grant_app_role(
    url: str, tables: EventTables, role: str, password: str | None = None
) -> None:
    """Create the application role if missing and grant it exactly what it needs.

    SELECT and INSERT on events and snapshots (positions come from the
    transaction id, so no sequence); SELECT, INSERT and UPDATE on the data
    keys; the owner's function that holds appends back; CREATE on the
    database and on `authledger`, for the read models' schemas and registry.
    Idempotent: its grants on the tables are reset each time. The password
    travels only as the SCRAM verifier libpq computes.
    """
    app = sql.Identifier(role)
    events, snapshots = tables.qualified()
    with connect(url, "authledger-setup") as conn, conn.transaction():
        _create_role(conn, role, tables, password)
        statements = (
            sql.SQL("REVOKE ALL ON TABLE {}, {} FROM {}").format(
                events, snapshots, app
            ),
            sql.SQL("GRANT SELECT, INSERT ON TABLE {}, {} TO {}").format(
                events, snapshots, app
            ),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(tables.schema), app
            ),
            sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(
                appends_lock(tables.events), app
            ),
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA authledger TO {}").format(app),
            # Data keys are made and destroyed, never deleted (tombstones).
            sql.SQL("REVOKE ALL ON TABLE authledger.data_keys FROM {}").format(app),
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE ON TABLE authledger.data_keys TO {}"
            ).format(app),
            sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(conn.info.dbname), app
            ),
        )
        for statement in statements:
            conn.execute(statement)


def _create_role(
    conn: psycopg.Connection[Any], role: str, tables: EventTables, password: str | None
) -> None:
    refuse_unsafe_role(conn, role, tables)
    app = sql.Identifier(role)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if exists.fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(app))
    if password:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode())
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                app, sql.Literal(verifier.decode())
            )
        )
