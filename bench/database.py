"""The database bounds, measured by pgbench on the bench's own server.

- append + update: one row appended and one updated per transaction (refresh);
- insert: one row per transaction into a table shaped like the events table
  (the event-store appends).
"""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING, LiteralString

import psycopg

if TYPE_CHECKING:
    from pathlib import Path

    from bench.procs import Load, Meter
    from bench.setup import Stack

DATABASE = "pgbench_bound"
TABLES: tuple[LiteralString, ...] = (
    "CREATE TABLE log (id bigserial PRIMARY KEY,"
    " at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)",
    "CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)",
    "INSERT INTO counter SELECT g, 0 FROM generate_series(1, 1000) g",
)
# About the size of a stored event; one append and one update, committed.
SCRIPT = """\\set id random(1, 1000)
BEGIN;
INSERT INTO log (body) VALUES (repeat('x', 400));
UPDATE counter SET n = n + 1 WHERE id = :id;
END;
"""

INSERT_DATABASE = "pgbench_insert"
# The events table's shape: (uuid, bigint) key, text, bytea, a unique bigint.
INSERT_TABLES: tuple[LiteralString, ...] = (
    "CREATE TABLE events (originator_id uuid NOT NULL,"
    " originator_version bigint NOT NULL, topic text, state bytea,"
    " notification_id bigserial,"
    " PRIMARY KEY (originator_id, originator_version))",
    "CREATE UNIQUE INDEX events_position ON events (notification_id)",
)
# One row, one (implicit) transaction: what an append of one event stores.
INSERT_SCRIPT = (
    "INSERT INTO events (originator_id, originator_version, topic, state)"
    " VALUES (gen_random_uuid(), 1, 'bench', '\\x7b7d'::bytea);\n"
)


def _setup(stack: Stack, database: str, statements: tuple[LiteralString, ...]) -> None:
    url = stack.create_database(database)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _pgbench(
    stack: Stack,
    database: str,
    script: Path,
    clients: int,
    threads: int,
    seconds: float,
    meter: Meter,
    *extra: str,
) -> tuple[float, Load]:
    """One pgbench run over the unix socket: transactions per second, and the load."""
    argv = [str(stack.bin_dir / "pgbench"), "-h", stack.socket_dir]
    argv += ["-U", "postgres", "-n", "-c", str(clients), "-j", str(threads), *extra]
    argv += ["-T", str(max(1, round(seconds))), "-f", str(script), database]
    with meter:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    found = re.search(r"tps = ([\d.]+) \(without initial", done.stdout)
    if not found:
        raise RuntimeError(f"unreadable pgbench output:\n{done.stdout}")
    return float(found.group(1)), meter.load


class Pgbench:
    """A database on the bench's server with the two tables, and the script."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        _setup(stack, DATABASE, TABLES)
        self.script = stack.tmp / "append_update.sql"
        self.script.write_text(SCRIPT)

    def run(self, duration: float, meter: Meter) -> tuple[float, Load]:
        """One run, 8 clients on 2 threads: transactions per second, and the load."""
        return _pgbench(self.stack, DATABASE, self.script, 8, 2, duration, meter)


class PgbenchInsert:
    """pgbench inserting one row per transaction into an events-shaped table."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        _setup(stack, INSERT_DATABASE, INSERT_TABLES)
        self.script = stack.tmp / "insert_one.sql"
        self.script.write_text(INSERT_SCRIPT)

    def run(self, clients: int, seconds: float, meter: Meter) -> tuple[float, Load]:
        """`-c N -j N -M prepared` (the recorders prepare their insert too)."""
        return _pgbench(
            self.stack,
            INSERT_DATABASE,
            self.script,
            clients,
            clients,
            seconds,
            meter,
            "-M",
            "prepared",
        )
