"""The embedded PostgreSQL: made from nothing, survives a restart, runs the suite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from infrastructure.embedded_db import start_embedded_postgres


def test_the_embedded_database_starts_in_an_empty_directory_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    # Given an empty directory
    assert list(tmp_path.iterdir()) == []

    # When a server is made there, given data and stopped
    server = start_embedded_postgres(tmp_path)
    try:
        first_url = server.get_uri()
        with psycopg.connect(first_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
            conn.execute("INSERT INTO notes VALUES (1, 'kept'), (2, 'also kept')")
    finally:
        server.cleanup()
    assert (tmp_path / "postgres" / "PG_VERSION").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(first_url, connect_timeout=2).close()

    # Then a server started again from the same directory has the data
    again = start_embedded_postgres(tmp_path)
    try:
        with psycopg.connect(again.get_uri()) as conn:
            rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
            data_directory = conn.execute("SHOW data_directory").fetchone()
    finally:
        again.cleanup()
    assert rows == [(1, "kept"), (2, "also kept")]
    assert data_directory is not None
    assert Path(data_directory[0]) == (tmp_path / "postgres").resolve()


@pytest.mark.skipif(
    bool(os.environ.get("AUTHLEDGER_TEST_DATABASE_URL")),
    reason="the suite runs on the server named by AUTHLEDGER_TEST_DATABASE_URL",
)
def test_without_a_configured_server_the_suite_runs_on_an_embedded_one(
    postgres_server_url: str,
) -> None:
    # When
    host = str(conninfo_to_dict(postgres_server_url).get("host") or "")
    with psycopg.connect(postgres_server_url) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    data_directory = Path(row[0]).resolve()

    # Then the URL names a unix-socket directory, not a network host
    assert host.startswith("/"), postgres_server_url
    sockets = [
        path
        for path in Path(host).glob(".s.PGSQL.*")
        if stat.S_ISSOCK(path.stat().st_mode)
    ]
    assert sockets, f"no PostgreSQL socket in {host}"
    # And the server is the suite's own embedded one, in a throwaway directory
    assert data_directory.parent.name.startswith("authledger-test-pg-")
    assert (data_directory / "PG_VERSION").exists()
