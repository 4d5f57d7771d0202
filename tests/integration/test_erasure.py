"""After an erasure, audits and views show the account's personal fields as
erased, in every process, whatever keys a process had cached before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from application.audit import Auditor
from application.values import Client
from domain.values import ERASED
from tests.cli import run_cli
from tests.integration.helpers import MakeServices, wait_for_read_models

pytestmark = pytest.mark.postgres

EMAIL = "to-be-erased@example.com"
PASSWORD = "correct horse battery"
DISTINCT = Client("203.0.113.50", "ErasedLater/3.1 (distinctive)")


def test_audits_views_and_the_cli_show_erased_fields_in_a_process_that_cached_keys(
    make_services: MakeServices,
) -> None:
    # Given an account served by one process, whose audit opened its events
    # (so that process holds its key), and another process
    serving = make_services()
    erasing = make_services(run_projections=False, run_mailer=False)
    grant = serving.app.register(EMAIL, PASSWORD, DISTINCT)
    serving.app.login(EMAIL, PASSWORD, DISTINCT)
    user_id = grant.user_id
    auditor = Auditor(serving.app)
    assert DISTINCT.ip in {e.ip for e in auditor.timeline(user_id)}

    # When the other process erases it
    erasing.app.erase(user_id, None, Client())

    # Then the serving process's audit replays every event, none failing,
    # each personal field erased
    timeline = auditor.timeline(user_id)
    assert [e.event for e in timeline][:2] == ["registered", "session_opened"]
    assert {e.ip for e in timeline} <= {ERASED, ""}
    assert {e.user_agent for e in timeline} <= {ERASED, ""}
    assert auditor.user_at(user_id, datetime.now(UTC))["email"] == ERASED
    # And so does the export, for the account's and its sessions' streams
    streams = {str(user_id), str(grant.session_id)}
    exported = [r for r in auditor.export() if r["aggregate_id"] in streams]
    personal = {
        r["payload"][field]
        for r in exported
        for field in ("email", "ip", "user_agent")
        if r["payload"].get(field)
    }
    assert exported
    assert personal == {ERASED}
    # And the read models it keeps: the history's addresses, the users row
    wait_for_read_models(serving)
    rows = serving.history.history(user_id, 100, 0)
    assert rows
    assert {(r.ip, r.user_agent) for r in rows} <= {(ERASED, ERASED), ("", "")}
    listed = serving.users.get_user(user_id)
    assert listed is not None
    assert listed.email == ERASED
    # And the CLI's replay of the log itself
    settings = serving.settings
    replayed = run_cli(
        str(settings.database_url),
        settings.data_dir,
        "audit",
        "history",
        str(user_id),
        "--replay",
        "--json",
    ).stdout
    assert ERASED in replayed
    assert DISTINCT.ip not in replayed
    assert DISTINCT.user_agent not in replayed
    # And the CLI's history from the read model, and its export of every event
    for command in (("audit", "history", str(user_id), "--json"), ("audit", "export")):
        shown = run_cli(str(settings.database_url), settings.data_dir, *command).stdout
        assert EMAIL not in shown
        assert DISTINCT.ip not in shown
        assert DISTINCT.user_agent not in shown
        records = [json.loads(line) for line in shown.splitlines()]
        if command[1] == "history":
            assert {(r["ip"], r["user_agent"]) for r in records} <= {
                (ERASED, ERASED),
                ("", ""),
            }
            assert (ERASED, ERASED) in {(r["ip"], r["user_agent"]) for r in records}
        else:
            mine = [r for r in records if r["aggregate_id"] in streams]
            assert {r["payload"].get("email") for r in mine} >= {ERASED}
            assert any(r["payload"].get("ip") == ERASED for r in mine)
