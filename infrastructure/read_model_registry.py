"""Which schema of each read model is live, and the stable views readers query.

Every projection version writes its own schema (`users_v2`…); readers query
`read_models.<table>`, a plain SQL view of the live schema's table. Switching a
read model to a rebuilt schema replaces that view and the registry row in one
transaction, so every process sees the switch at the same instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, LiteralString

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
    # The slowest live read model's position, in one round trip. A schema
    # dropped under it counts as position 0: the caller polls again.
    """
    CREATE OR REPLACE FUNCTION authledger.live_position(app text)
    RETURNS bigint LANGUAGE plpgsql STABLE AS $$
    DECLARE
        model record;
        position bigint;
        slowest bigint := NULL;
    BEGIN
        FOR model IN SELECT name, live_schema FROM authledger.read_model_versions
        LOOP
            BEGIN
                EXECUTE format(
                    'SELECT notification_id FROM %I.%I WHERE application_name = $1',
                    model.live_schema, model.name || '_tracking'
                ) INTO position USING app;
            EXCEPTION WHEN undefined_table THEN
                position := 0;
            END;
            slowest := least(coalesce(slowest, position), coalesce(position, 0));
        END LOOP;
        RETURN coalesce(slowest, 0);
    END $$
    """,
)


def setup_registry(conn: psycopg.Connection[Any]) -> None:
    """Create the registry, the readers' schema and the position function."""
    for statement in SETUP:
        conn.execute(statement)


def live_schemas(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Map each read model's name to its live schema."""
    rows = conn.execute("SELECT name, live_schema FROM authledger.read_model_versions")
    return {str(name): str(schema) for name, schema in rows.fetchall()}


def switch_live(
    conn: psycopg.Connection[Any], name: str, table: str, schema: str
) -> str | None:
    """Make `schema` the live one for `name`, atomically; return the one it replaces."""
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
            "INSERT INTO authledger.read_model_versions (name, live_schema)"
            " VALUES (%s, %s) ON CONFLICT (name) DO UPDATE"
            " SET live_schema = excluded.live_schema, switched_at = now()",
            (name, schema),
        )
    return str(row[0]) if row else None


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
    row = conn.execute(
        SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
            Identifier(schema, f"{name}_tracking")
        ),
        (app,),
    ).fetchone()
    return int(row[0]) if row else 0


def row_count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """Count the rows of one version's table."""
    row = conn.execute(
        SQL("SELECT count(*) FROM {}").format(Identifier(schema, table))
    ).fetchone()
    return int(row[0]) if row else 0
