"""A log written before sealing, with an account erased then: the first start
seals what it keeps and shreds what the erasure promised to forget (ADR 31)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from application.audit import Auditor
from application.values import Client
from domain.values import ERASED
from interfaces.bootstrap import build_services
from tests.dumps import leaks, load_dump, pg_dump
from tests.integration.helpers import (
    live_specs,
    read_model_state,
    rebuild_from_zero,
    states_with_topic,
    wait_for_read_models,
)
from tests.integration.test_upgrade import personal_in, personal_values, settings_of

pytestmark = pytest.mark.postgres

# Written by tests/fixtures/presealing_database.sql (see its README).
DORA = UUID("a076d6d1-6447-4135-8f67-740e0c90acf3")
ERIN = UUID("2952f80b-5a98-4adf-9a82-8ff28563902a")
DORA_KEPT = {
    "dora@example.com",
    "198.51.100.61",
    "DoraBrowser/1.0 (kept)",
    "192.0.2.63",
    "AdminTool/1.0",
}
ERIN_ERASED = {"erin@example.com", "203.0.113.62", "ErinBrowser/2.0 (erased)"}


def test_the_first_start_shreds_what_an_erasure_before_sealing_left_in_clear(
    database_url: str, tmp_path: Path
) -> None:
    # Given a log written before sealing: dora's data, and erin's, whose
    # account was erased then (an unknown login and a reset ask on her
    # address before and after signing up), all in clear
    load_dump(database_url, "presealing_database.sql")
    assert personal_values(database_url) >= DORA_KEPT | ERIN_ERASED

    # When this code starts on it
    settings = settings_of(database_url, tmp_path / "data", "presealing_secrets.json")
    services = build_services(settings)
    try:
        wait_for_read_models(services)
        # Then a dump of the whole database shows nothing of erin, in any
        # encoding, and the log nothing of anyone in clear (erin's fields
        # are stored as erased)
        assert leaks(pg_dump(database_url), sorted(ERIN_ERASED)) == []
        assert personal_values(database_url) == {ERASED}

        # And the audit shows erin's events with their personal fields
        # erased, on her account and on her address's streams alike
        auditor = Auditor(services.app)
        erin = auditor.timeline(ERIN)
        assert [e.event for e in erin][:2] == ["registered", "session_opened"]
        assert {e.ip for e in erin} | {e.user_agent for e in erin} == {ERASED, ""}
        tried = auditor.unknown_logins("erin@example.com", services.app.address_key)
        assert len(tried) == 2
        assert {(t.ip, t.user_agent) for t in tried} == {(ERASED, ERASED)}
        # while dora's open as they were, and her password still logs in
        dora = auditor.timeline(DORA)
        assert {e.ip for e in dora} - {""} == {"198.51.100.61", "192.0.2.63"}
        assert auditor.user_at(DORA, dora[-1].at)["email"] == "dora@example.com"
        opened = personal_in(record["payload"] for record in auditor.export())
        assert opened - {ERASED} == DORA_KEPT
        services.app.login("dora@example.com", "dora's good password", Client())

        # And erin's address may sign up again, as a new account
        again = services.app.register(
            "erin@example.com", "erin's second good password", Client()
        )
        assert again.user_id != ERIN

        # And the read models equal a rebuild of the whole log
        wait_for_read_models(services)
        specs = live_specs(services)
        now = read_model_state(database_url, specs)
        rebuilt = read_model_state(database_url, rebuild_from_zero(settings, specs))
        for spec in specs:
            assert now[spec.name][1] == rebuilt[spec.name][1], spec.name
    finally:
        services.close()

    # And a second start seals nothing more
    second = build_services(settings)
    try:
        applied = states_with_topic(second, "authledger:Upgrade.Applied")
        assert [a["name"] for a in applied].count("seal-personal-data") == 1
    finally:
        second.close()
