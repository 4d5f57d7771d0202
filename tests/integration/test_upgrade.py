"""A database written by wave 1 (table lock, sequence ids) works after the upgrade."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import InfrastructureFactory, IntegrityError, StoredEvent
from eventsourcing.utils import Environment
from psycopg import sql
from pydantic import SecretStr

from application.audit import Auditor
from application.values import PERSONAL_FIELDS, Client
from domain.email_claim import EmailClaim
from infrastructure.data_keys import SEALED
from infrastructure.database import eventsourcing_env
from infrastructure.read_model_registry import live_versions
from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services
from tests.dumps import FIXTURES, leaks, load_dump, pg_dump
from tests.integration.helpers import (
    live_specs,
    read_model_state,
    rebuild_from_zero,
    states_with_topic,
    stored_events,
    wait_for_read_models,
    wait_until,
)

pytestmark = pytest.mark.postgres
# Written with the dump: ada's live session, after one rotation, and carol's,
# rotated past its snapshot (carol's user has one too).
ADA_REFRESH_TOKEN = (
    "d4454cacf650438d8980163c92f2d491.NA9GM5PgMZmgCr8hHPAgX8wfNpOPg0FFr1eiXb61Yus"
)
CAROL_REFRESH_TOKEN = (
    "46d0107e6c134b7481a970084a42a542.OlSvYxN0UXiPaPu-7LvK09BH2n5j9qfCcK13X-EGs_4"
)
WAVE_1_EVENTS = 177
LEGACY_STREAMS = ("authledger:EmailClaim", "authledger:ClientThrottle")


def load_wave_1(database_url: str) -> None:
    load_dump(database_url, "wave1_database.sql")


def settings_of(database_url: str, data_dir: Path, secrets_file: str) -> Settings:
    """Settings with the development secrets the fixture's database was written with."""
    secrets = json.loads((FIXTURES / secrets_file).read_text())
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        bcrypt_rounds=4,
        jwt_secret=SecretStr(secrets["jwt_secret"]),
        password_pepper=SecretStr(secrets["password_pepper"]),
    )


def wave_1_settings(database_url: str, data_dir: Path) -> Settings:
    return settings_of(database_url, data_dir, "wave1_secrets.json")


@pytest.fixture
def upgraded(database_url: str, tmp_path: Path) -> Iterator[Services]:
    """The wave-1 database loaded, then opened by this code."""
    load_wave_1(database_url)
    services = build_services(wave_1_settings(database_url, tmp_path / "data"))
    yield services
    services.close()


def personal_in(states: Iterable[Any]) -> set[str]:
    """Every email, client address and user agent in these states, nested too."""
    found: set[str] = set()

    def collect(state: Any) -> None:
        if isinstance(state, dict):
            for name, value in state.items():
                if name in PERSONAL_FIELDS and isinstance(value, str) and value:
                    found.add(value)
                collect(value)

    for state in states:
        collect(state)
    return found


def personal_values(database_url: str) -> set[str]:
    """What the log's events and snapshots hold in clear."""
    with psycopg.connect(database_url) as conn:
        states = [
            json.loads(bytes(state))
            for table in ("auth_events", "auth_snapshots")
            for (state,) in conn.execute(
                sql.SQL("SELECT state FROM {}").format(sql.Identifier(table))
            )
        ]
    return {value for value in personal_in(states) if not value.startswith(SEALED)}


def test_the_first_start_seals_what_wave_1_stored_in_clear(
    database_url: str, tmp_path: Path
) -> None:
    # Given the wave-1 log, with emails, addresses and user agents in clear
    load_wave_1(database_url)
    in_clear = personal_values(database_url)
    assert {"ada@example.com", "bob@example.com"} <= in_clear

    # When this code starts on it
    settings = wave_1_settings(database_url, tmp_path / "data")
    services = build_services(settings)
    try:
        # Then none is left in clear in events or snapshots, and the upgrade
        # says how many rows it sealed
        assert personal_values(database_url) == set()
        (sealed,) = states_with_topic(services, "authledger:Upgrade.Applied")[:1]
        assert (sealed["name"], sealed["changed"] > 0) == ("seal-personal-data", True)
        # And the audit opens them all again: the same values, none erased
        auditor = Auditor(services.app)
        ada = services.app.find_claim("ada@example.com")
        assert ada is not None
        assert ada.user_id is not None
        timeline = auditor.timeline(ada.user_id)
        shown = {e.ip for e in timeline} | {e.user_agent for e in timeline}
        assert shown - {""} <= in_clear
        assert auditor.user_at(ada.user_id, datetime.now(UTC))["email"] == (
            "ada@example.com"
        )
        opened = personal_in(record["payload"] for record in auditor.export())
        assert opened == in_clear
    finally:
        services.close()

    # And a second start seals nothing more and records nothing more
    again = build_services(settings)
    try:
        applied = states_with_topic(again, "authledger:Upgrade.Applied")
        assert [a["name"] for a in applied].count("seal-personal-data") == 1
    finally:
        again.close()


def wave_1_schemas(database_url: str) -> list[str]:
    """The schemas of read-model versions that version 2 replaces."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
            (["user_directory_v1", "login_history_v1"],),
        ).fetchall()
    return [name for (name,) in rows]


def test_wave_1_accounts_once_erased_leave_nothing_in_a_dump(
    database_url: str, tmp_path: Path
) -> None:
    # Given the wave-1 log, whose claims were named by uuid5 of the address
    # and whose throttles by the client address itself
    load_wave_1(database_url)
    in_clear = personal_values(database_url)
    emails = ["ada@example.com", "bob@example.com", "carol@example.com"]
    legacy_claims = [str(EmailClaim.legacy_id(email)) for email in emails]
    assert all(claim in pg_dump(database_url) for claim in legacy_claims)

    # When this code starts on it, and every account is erased
    services = build_services(wave_1_settings(database_url, tmp_path / "data"))
    try:
        for email in emails:
            claim = services.app.find_claim(email)
            assert claim is not None
            assert claim.user_id is not None
            services.app.erase(claim.user_id, None, Client())
        wait_for_read_models(services)
        # (once the read models of wave 1's versions are replaced and dropped)
        wait_until(lambda: not wave_1_schemas(database_url), 20, "v1 dropped")

        # Then a dump of the whole database holds none of their emails,
        # addresses and agents in any encoding, and no stream named by one
        dump = pg_dump(database_url)
        assert leaks(dump, sorted(in_clear)) == []
        assert [claim for claim in legacy_claims if claim in dump] == []
        forgotten = states_with_topic(services, "authledger:Upgrade.Applied")
        assert [
            u["changed"] > 0 for u in forgotten if u["name"] == "forget-legacy-streams"
        ] == [True]
    finally:
        services.close()


def test_the_upgrade_keeps_accounts_sessions_and_history(upgraded: Services) -> None:
    app = upgraded.app
    stored = stored_events(upgraded)
    old = [n for n in stored if n.id <= WAVE_1_EVENTS]
    # The first start sealed personal data, folded the addresses (all
    # lower-case already: no new claim), named every old claim by its keyed
    # hash (ADR 29), started the admin roster (wave 1 had no admin), and
    # dropped the streams named by personal values: the old claims and
    # throttles, and only those (ADR 32)
    claimed = "authledger:EmailClaim.Claimed"
    new = stored[len(old) :]
    claims = sum(n.topic == claimed for n in new)
    assert claims >= 2
    assert [n.topic for n in new] == [
        "authledger:Upgrade.Applied",  # personal data sealed (ADR 31)
        "authledger:Upgrade.Applied",
        *[claimed] * claims,
        "authledger:Upgrade.Applied",
        "authledger:AdminRoster.Started",
        "authledger:Upgrade.Applied",  # legacy streams forgotten
        "authledger:KeyRing.Started",  # its first key active, the next published
        "authledger:KeyRing.KeyAdded",
        "authledger:KeyRing.KeyActivated",
        "authledger:KeyRing.KeyAdded",
    ]
    dropped = set(range(1, WAVE_1_EVENTS + 1)) - {n.id for n in old}
    assert dropped
    assert not [n for n in old if n.topic.startswith(LEGACY_STREAMS)]
    for email in ("ada@example.com", "bob@example.com"):
        found = app.find_claim(email)
        assert found is not None
        assert found.id == app.claim_id(email)

    # Old passwords log in, the old refresh token rotates, the old log replays
    ada = app.login("ada@example.com", "correct horse battery", Client())
    bob = app.login("bob@example.com", "a newer good password", Client())
    rotated = app.refresh(ADA_REFRESH_TOKEN, Client())
    assert rotated.user_id == ada.user_id
    # Aggregates restored from wave 1's snapshots know the new rules too
    carol = app.refresh(CAROL_REFRESH_TOKEN, Client())
    app.change_password(
        carol.user_id,
        "carol's good password",
        "carol's newer password",
        Client(),
        keep=carol.session_id,
    )
    assert app.refresh(carol.refresh_token, Client()).user_id == carol.user_id
    timeline = Auditor(app).timeline(ada.user_id)
    assert [e.event for e in timeline][:2] == ["registered", "session_opened"]

    # New events come after every old one, in the same log
    new = stored_events(upgraded)[WAVE_1_EVENTS:]
    assert new
    assert min(n.id for n in new) > max(n.id for n in old)
    exported = [record["position"] for record in Auditor(app).export()]
    assert exported == [n.id for n in stored_events(upgraded)]

    # The consistent read models are now written inline, and the newest
    # versions of the timeline, the users table and the sessions are built
    # from the whole log (old events included) and go live
    def live() -> dict[str, tuple[str, bool]]:
        with psycopg.connect(upgraded.database_url) as conn:
            return {n: (v.schema, v.inline) for n, v in live_versions(conn).items()}

    wait_until(lambda: live()["login_history"][0] == "login_history_v2", 20, "v2")
    wait_until(lambda: live()["user_directory"][0] == "user_directory_v3", 20, "v3")
    wait_until(lambda: live()["active_sessions"][0] == "active_sessions_v2", 20, "v2")
    assert live() == {
        "user_directory": ("user_directory_v3", True),
        "active_sessions": ("active_sessions_v2", True),
        "login_history": ("login_history_v2", False),
        "mail_outbox": ("mail_outbox_v1", False),
    }
    assert upgraded.users.get_user(bob.user_id) is not None
    history = upgraded.history.history(ada.user_id, 100, 0)
    assert [h.kind for h in history][:2] == ["registered", "session_opened"]

    # And every read model equals a rebuild of the whole log by this code
    wait_for_read_models(upgraded)
    specs = live_specs(upgraded)
    rebuilt = rebuild_from_zero(upgraded.settings, specs)
    now = read_model_state(upgraded.database_url, specs)
    again = read_model_state(upgraded.database_url, rebuilt)
    for spec in specs:
        assert now[spec.name][1] == again[spec.name][1], spec.name


def test_a_process_of_wave_1_can_no_longer_append(upgraded: Services) -> None:
    # Given the stock recorder, as wave 1 wrote: a table lock and sequence ids
    env = {
        key: value
        for key, value in eventsourcing_env(upgraded.database_url, 1, 0).items()
        if key != "APPLICATION_RECORDER_TOPIC"
    }
    factory = InfrastructureFactory.construct(Environment("Auth", env))
    stock = factory.application_recorder()

    # When it appends, its position would land below every reader: refused
    with pytest.raises(IntegrityError, match="positions_from_xid"):
        stock.insert_events([StoredEvent(uuid4(), 1, "wave1", b"{}")])
    factory.close()
