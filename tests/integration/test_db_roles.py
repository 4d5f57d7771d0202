"""`db setup-roles`: the service runs as a role that cannot rewrite the log."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from application.upgrades import FORGET_LEGACY_STREAMS, SEAL_PERSONAL_DATA
from application.values import Client
from domain.email_claim import EmailClaim
from domain.upgrade import Upgrade
from infrastructure.data_keys import WrongKeyEncryptionKeyError, create_key_table
from infrastructure.database import EventTables, protect_event_log
from infrastructure.db_roles import (
    UnprotectedEventLogError,
    UnsafeAppRoleError,
    grant_app_role,
)
from interfaces.bootstrap import UnsealedLogError
from tests.cli import run_cli
from tests.dumps import FIXTURES
from tests.integration.helpers import MakeServices, wait_for_read_models
from tests.integration.test_upgrade import load_wave_1

pytestmark = pytest.mark.postgres

PASSWORD = "a role password never shown"


def as_role(url: str, role: str) -> str:
    params = conninfo_to_dict(url)
    params["user"] = role
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def app_role(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A fresh role, set up twice as `db setup-roles` does; dropped afterwards."""
    role = f"app_{uuid.uuid4().hex[:12]}"
    for _ in range(2):  # idempotent
        done = run_cli(
            database_url,
            tmp_path / "setup",
            *("db", "setup-roles", "--app-role", role),
            AUTHLEDGER_APP_ROLE_PASSWORD=PASSWORD,
        )
        assert PASSWORD not in done.stdout + done.stderr
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def app_url(database_url: str, app_role: str) -> str:
    return as_role(database_url, app_role)


def test_the_app_role_may_only_read_and_append_to_the_log(
    database_url: str, app_role: str
) -> None:
    with psycopg.connect(database_url) as conn:
        granted = conn.execute(
            "SELECT table_name, privilege_type"
            " FROM information_schema.role_table_grants"
            " WHERE grantee = %s ORDER BY 1, 2",
            (app_role,),
        ).fetchall()
        (verifier,) = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (app_role,)
        ).fetchone() or (None,)
    assert granted == [
        ("auth_events", "INSERT"),
        ("auth_events", "SELECT"),
        ("auth_snapshots", "INSERT"),
        ("auth_snapshots", "SELECT"),
        # Keys are made and destroyed (tombstones), never deleted.
        ("data_keys", "INSERT"),
        ("data_keys", "SELECT"),
        ("data_keys", "UPDATE"),
    ]
    assert str(verifier).startswith("SCRAM-SHA-256$")


def test_the_app_role_signs_up_logs_in_and_rebuilds_read_models(
    app_url: str, make_services: MakeServices
) -> None:
    services = make_services(database_url=app_url)

    grant = services.app.register(
        "role@example.com", "a least-privilege passphrase", Client()
    )
    services.app.login("role@example.com", "a least-privilege passphrase", Client())
    services.app.take_snapshot(grant.user_id)
    services.read_models.build(
        services.read_models.rebuild_targets(["user_directory", "login_history"])
    )

    wait_for_read_models(services)
    user = services.users.get_user(grant.user_id)
    assert user is not None
    assert user.email == "role@example.com"
    timeline = services.history.history(grant.user_id, 10, 0)
    assert [entry.kind for entry in timeline].count("session_opened") == 2


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("UPDATE auth_events SET topic = 'forged'", "permission denied for table"),
        ("DELETE FROM auth_events", "permission denied for table"),
        ("TRUNCATE auth_events", "permission denied for table"),
        ("UPDATE auth_snapshots SET topic = 'forged'", "permission denied for table"),
        ("DELETE FROM auth_snapshots", "permission denied for table"),
        ("ALTER TABLE auth_events DISABLE TRIGGER ALL", "must be owner"),
        ("ALTER TABLE auth_snapshots DISABLE TRIGGER ALL", "must be owner"),
        ("DROP TRIGGER append_only ON auth_events", "must be owner"),
        ("SET session_replication_role = replica", "permission denied to set"),
    ],
)
def test_the_app_role_cannot_rewrite_or_unprotect_the_log(
    app_url: str, make_services: MakeServices, statement: str, refusal: str
) -> None:
    services = make_services(database_url=app_url)
    grant = services.app.register(
        "kept@example.com", "a least-privilege passphrase", Client()
    )
    services.app.take_snapshot(grant.user_id)

    with (
        psycopg.connect(app_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal),
    ):
        conn.execute(statement)


def test_the_app_role_refuses_to_serve_a_log_left_unprotected(
    database_url: str, app_url: str, make_services: MakeServices
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE auth_snapshots DISABLE TRIGGER append_only")

    with pytest.raises(UnprotectedEventLogError, match=r"public\.auth_snapshots"):
        make_services(database_url=app_url)


def test_setup_refuses_an_app_role_with_the_owners_privileges(
    database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        (owner,) = conn.execute("SELECT current_user").fetchone() or ("",)

    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_cli(database_url, tmp_path, "db", "setup-roles", "--app-role", owner)

    assert "the application role must be none of these" in refused.value.stderr


@pytest.mark.parametrize(
    "grant",
    [
        "GRANT {owner} TO {role} WITH INHERIT FALSE",  # may still SET ROLE
        "ALTER ROLE {role} CREATEROLE",  # may grant itself the owner's role
        "CREATE ROLE {other} SUPERUSER; GRANT {other} TO {role}",  # a superuser's
        "ALTER DATABASE {database} OWNER TO {role}",  # may drop the tables
        "GRANT pg_write_server_files TO {role}",  # may write the server's files
    ],
)
def test_a_role_that_could_become_the_owner_is_refused_at_setup_and_at_start(
    database_url: str,
    app_role: str,
    app_url: str,
    tmp_path: Path,
    make_services: MakeServices,
    grant: str,
) -> None:
    # Given: the app role, set up, then given a way to the owner's privileges
    with psycopg.connect(database_url, autocommit=True) as conn:
        (owner,) = conn.execute("SELECT current_user").fetchone() or ("",)
        other = f"{app_role}_su"
        conn.execute(
            sql.SQL(grant).format(
                owner=sql.Identifier(owner),
                role=sql.Identifier(app_role),
                other=sql.Identifier(other),
                database=sql.Identifier(conn.info.dbname),
            )
        )

    try:
        # Then: setting it up again is refused, and so is serving as it
        with pytest.raises(subprocess.CalledProcessError) as refused:
            run_cli(database_url, tmp_path, "db", "setup-roles", "--app-role", app_role)
        assert "the application role must be none of these" in refused.value.stderr
        with pytest.raises(UnsafeAppRoleError):
            make_services(database_url=app_url)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}; DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(conn.info.dbname),
                    sql.Identifier(owner),
                    sql.Identifier(other),
                )
            )


def test_the_app_role_refuses_a_wave_1_log_until_its_owner_upgraded_it(
    database_url: str, tmp_path: Path, make_services: MakeServices
) -> None:
    # Given a wave-1 log, protected, and an app role granted on it before the
    # owner ran this release (so nothing is sealed, no old stream dropped)
    load_wave_1(database_url)
    tables = EventTables("public", "auth_events", "auth_snapshots")
    protect_event_log(database_url, tables)
    create_key_table(database_url)
    role = f"app_{uuid.uuid4().hex[:12]}"
    grant_app_role(database_url, tables, role, PASSWORD)
    secrets = json.loads((FIXTURES / "wave1_secrets.json").read_text())
    wave_1 = {name: SecretStr(value) for name, value in secrets.items()}
    as_app = as_role(database_url, role)
    try:
        # When the app role starts on it, then it refuses: it may not rewrite
        with pytest.raises(UnsealedLogError, match="start once as its owner"):
            make_services(database_url=as_app, **wave_1)

        # And `db setup-roles`, run as the owner, seals the log and drops the
        # streams named by addresses, for the app role to find them done
        run_cli(
            database_url,
            tmp_path / "setup",
            *("db", "setup-roles", "--app-role", role),
            AUTHLEDGER_JWT_SECRET=secrets["jwt_secret"],
            AUTHLEDGER_PASSWORD_PEPPER=secrets["password_pepper"],
        )
        with psycopg.connect(as_app) as conn:
            upgrades = [SEAL_PERSONAL_DATA, FORGET_LEGACY_STREAMS]
            done, legacy = (
                conn.execute(
                    "SELECT count(*) FROM auth_events WHERE originator_id = ANY(%s)",
                    (streams,),
                ).fetchone()
                or (None,)
                for streams in (
                    [Upgrade.create_id(name) for name in upgrades],
                    [EmailClaim.legacy_id("ada@example.com")],
                )
            )
        assert (done, legacy) == ((2,), (0,))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_key_encryption_key_that_does_not_unwrap_the_data_keys_is_refused(
    make_services: MakeServices,
) -> None:
    # Given a store whose data keys were wrapped by one key-encryption key
    services = make_services()
    services.app.register("kek@example.com", "a least-privilege passphrase", Client())

    # When a process starts with another, then it refuses
    with pytest.raises(WrongKeyEncryptionKeyError):
        make_services(key_encryption_key=SecretStr("another " + "k" * 40))
