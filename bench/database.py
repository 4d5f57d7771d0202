"""The database bound: pgbench appending one row and updating one per transaction."""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING, LiteralString

import psycopg

if TYPE_CHECKING:
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


class Pgbench:
    """A database on the bench's server with the two tables, and the script."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        url = stack.create_database(DATABASE)
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in TABLES:
                conn.execute(statement)
        self.script = stack.tmp / "append_update.sql"
        self.script.write_text(SCRIPT)

    def run(self, duration: float, meter: Meter) -> tuple[float, Load]:
        """One run, 8 clients on 2 threads: transactions per second, and the load."""
        argv = [str(self.stack.bin_dir / "pgbench"), "-h", self.stack.socket_dir]
        argv += ["-U", "postgres", "-n", "-c", "8", "-j", "2"]
        argv += ["-T", str(max(1, round(duration))), "-f", str(self.script), DATABASE]
        with meter:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
        found = re.search(r"tps = ([\d.]+) \(without initial", done.stdout)
        if not found:
            raise RuntimeError(f"unreadable pgbench output:\n{done.stdout}")
        return float(found.group(1)), meter.load
