"""Which schema of each read model is live, and the stable views readers query.

Every projection version writes its own schema (`users_v2`…); readers query
`read_models.<table>`, a plain SQL view of the live schema's table, and the
commands write the consistent ones into the live schema the registry names.
Switching replaces that view and the registry row in one transaction, so
every process sees the switch at the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

if TYPE_CHECKING:
    import psycopg

READ_SCHEMA = "read_models"

SETUP: tuple[LiteralString, ...] = (
    "CREATE SCHEMA IF NOT EXISTS authledger",
    "CREATE SCHEMA IF NOT EXISTS read_models",
    "CREATE TABLE IF NOT EXISTS authledger.read_model_versions ("
    " name text PRIMARY KEY, live_schema text NOT NULL,"
    " switched_at timestamptz NOT NULL DEFAULT now())",
    # Wave 1 had no inline writes: its live versions start as not inline.
    "ALTER TABLE authledger.read_model_versions"
    " ADD COLUMN IF NOT EXISTS inline boolean NOT NULL DEFAULT false",
    "DROP FUNCTION IF EXISTS authledger.live_position(text)",
)


@dataclass(frozen=True)
class LiveVersion:
    schema: str
    inline: bool


def setup_registry(conn: psycopg.Connection[Any]) -> None:
    """Create the registry and the readers' schema."""
    for statement in SETUP:
        conn.execute(statement)


def live_versions(conn: psycopg.Connection[Any]) -> dict[str, LiveVersion]:
    """Map each read model's name to its live schema, and whether it is inline."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        "SELECT name, live_schema, inline FROM authledger.read_model_versions"
    )
    return {
        str(name): LiveVersion(str(schema), bool(inline))
        for name, schema, inline in rows.fetchall()
    }


def switch_live(
    conn: psycopg.Connection[Any],
    name: str,
    table: str,
    schema: str,
    *,
    inline: bool,
) -> str | None:
    """Make `schema` the live one for `name`; return the one it replaces.

    Runs in the caller's transaction if there is one, else in its own.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT live_schema FROM authledger.read_model_versions"
            " WHERE name = %s FOR UPDATE",
            (name,),
        ).fetchone()
        conn.execute(
            SQL("DROP VIEW IF EXISTS {}").format(Identifier(READ_SCHEMA, table))
        )
        conn.execute(
            SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                Identifier(READ_SCHEMA, table), Identifier(schema, table)
            )
        )
        conn.execute(
            "INSERT INTO authledger.read_model_versions (name, live_schema, inline)"
            " VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE"
            " SET live_schema = excluded.live_schema, inline = excluded.inline,"
            " switched_at = now()",
            (name, schema, inline),
        )
    return None if row is None else str(row[0])


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Drop a replaced read model's schema and everything in it."""
    conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


def schemas_of(conn: psycopg.Connection[Any], name: str) -> list[str]:
    """Every schema holding a version (or rebuild) of read model `name`."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY nspname",
        (f"{name}\\_v%",),
    )
    return [str(schema) for (schema,) in rows.fetchall()]


def position_in(conn: psycopg.Connection[Any], schema: str, name: str, app: str) -> int:
    """How far the read model in `schema` has applied the log of `app`."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                Identifier(schema, f"{name}_tracking")
            ),
            (app,),
        )
        .fetchone()
    )
    return int(row[0]) if row else 0


def row_count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """Count the rows of one version's table."""
    row = conn.execute(
        SQL("SELECT count(*) FROM {}").format(Identifier(schema, table))
    ).fetchone()
    return int(row[0]) if row else 0
