"""Fixtures: a real PostgreSQL (embedded by default) and a fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from infrastructure.embedded_db import start_embedded_postgres
from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services
from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY


@contextmanager
def embedded_postgres() -> Iterator[tuple[str, Path]]:
    """A throwaway embedded server: its URL and data directory.

    Not under pytest's temp root: the server runs as another user, and every
    new pytest session resets that root to mode 0700, which would cut a
    running server off from its own files.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="authledger-test-pg-"))
    server = start_embedded_postgres(data_dir)
    try:
        yield server.get_uri(), data_dir
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The suite's server: AUTHLEDGER_TEST_DATABASE_URL, or an embedded one."""
    external = os.environ.get("AUTHLEDGER_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with embedded_postgres() as (url, _):
        yield url


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    yield make_conninfo(**params)  # type: ignore[arg-type]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database shared by one module's tests (each uses its own emails)."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: its own database and data directory, a cheap bcrypt cost."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        bcrypt_rounds=4,
        key_encryption_key=SecretStr(TEST_KEY_ENCRYPTION_KEY),
        # Tests sign up from one address; the throttle has tests of its own.
        signup_max_per_address=1_000_000,
        # Replays come at once here: strict mode (the default interval is
        # tested on its own).
        refresh_reuse_interval_s=0,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The application wired as in production, projections running in-process."""
    built = build_services(settings)
    yield built
    built.close()
