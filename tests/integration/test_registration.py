"""Registration on a real PostgreSQL: login, normalised emails and duplicate claims."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from pydantic import SecretStr

from application.errors import EmailAlreadyRegisteredError
from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services
from tests.integration.helpers import CLIENT, states_with_topic, stored_facts
from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

REGISTERED = "authledger:User.Registered"
CLAIMED = "authledger:EmailClaim.Claimed"
RACE_ROUNDS = 5
RACE_TIMEOUT_S = 30.0


def test_a_registered_user_logs_in_with_the_same_password(services: Services) -> None:
    # Given
    registered = services.app.register(
        "  Alice@Example.COM ", "correct horse battery", CLIENT
    )

    # When
    granted = services.app.login("Alice@example.com", "correct horse battery", CLIENT)

    # Then
    assert granted.user_id == registered.user_id
    assert granted.session_id != registered.session_id
    row = services.users.get_user(registered.user_id)
    assert row is not None
    assert row.email == "Alice@example.com"
    assert row.failed_logins == 0
    assert row.locked_until is None


def test_a_second_registration_of_the_same_email_in_another_spelling_is_refused(
    services: Services,
) -> None:
    # Given
    first = services.app.register("bob@example.com", "first password", CLIENT)

    # When / Then
    with pytest.raises(EmailAlreadyRegisteredError):
        services.app.register("  bob@EXAMPLE.Com\t", "second password", CLIENT)

    # And the refused registration left nothing behind
    assert [s["email"] for s in states_with_topic(services, REGISTERED)] == [
        "bob@example.com"
    ]
    assert len(states_with_topic(services, CLAIMED)) == 1
    assert services.app.login("bob@example.com", "first password", CLIENT).user_id == (
        first.user_id
    )


def register_when_released(
    database_url: str,
    data_dir: Path,
    emails: list[str],
    barrier: Barrier,
    outcomes: Queue[tuple[str, str, str]],
) -> None:
    """In a process of its own: for each email, wait for the others, then register."""
    services = build_services(
        Settings(
            database_url=database_url,
            data_dir=data_dir,
            bcrypt_rounds=4,
            key_encryption_key=SecretStr(TEST_KEY_ENCRYPTION_KEY),
            run_projections=False,
            read_model_timeout_s=RACE_TIMEOUT_S,
        )
    )
    try:
        for email in emails:
            barrier.wait(timeout=RACE_TIMEOUT_S)
            key = email.strip().lower()
            try:
                grant = services.app.register(email, "racing password", CLIENT)
            except EmailAlreadyRegisteredError:
                outcomes.put((key, "already registered", ""))
            except Exception as error:  # noqa: BLE001  (report it to the test)
                outcomes.put((key, f"{type(error).__name__}: {error}", ""))
            else:
                outcomes.put((key, "registered", f"{grant.user_id} {grant.session_id}"))
    finally:
        services.close()


def test_two_processes_racing_to_register_one_email_yield_exactly_one_account(
    services: Services, settings: Settings
) -> None:
    # Given two processes that register the same emails, spelled differently,
    # each released by a barrier; the `services` fixture runs the projections
    # that both processes wait for.
    assert settings.database_url is not None
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outcomes: Queue[tuple[str, str, str]] = context.Queue()
    spellings = (
        [f"racer{i}@Example.COM" for i in range(RACE_ROUNDS)],
        [f"  racer{i}@example.com " for i in range(RACE_ROUNDS)],
    )
    processes = [
        context.Process(
            target=register_when_released,
            args=(settings.database_url, settings.data_dir, emails, barrier, outcomes),
        )
        for emails in spellings
    ]

    # When
    for process in processes:
        process.start()
    try:
        results = [outcomes.get(timeout=RACE_TIMEOUT_S) for _ in range(2 * RACE_ROUNDS)]
        for process in processes:
            process.join(timeout=RACE_TIMEOUT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    # Then every email was won by exactly one process and refused to the other
    assert [process.exitcode for process in processes] == [0, 0]
    emails = [f"racer{i}@example.com" for i in range(RACE_ROUNDS)]
    for email in emails:
        assert sorted(outcome for key, outcome, _ in results if key == email) == [
            "already registered",
            "registered",
        ], results
    # And the store holds one account, claim and session per email, and nothing
    # of the losers: every stored event belongs to a winner
    registered = [state["email"] for state in states_with_topic(services, REGISTERED)]
    claimed = [state["email"] for state in states_with_topic(services, CLAIMED)]
    assert sorted(registered) == emails
    assert sorted(claimed) == emails
    winners = {UUID(i) for _, _, ids in results for i in ids.split()}
    claims = {services.app.claim_id(email) for email in emails}
    assert {n.originator_id for n in stored_facts(services)} == winners | claims
