"""A command whose commit's answer was lost answers as what happened: a success.

The fault: PostgreSQL commits and answers, and the connection drops before the
service hears it (a relay in between cuts it there). The library would try
the append again, fail on its own events and call it a lost race: a refresh
answered 401 though it rotated, a signup 409 for the account it just made.
For each command: the events are in the log, so the command returns, and
what it returned works. Where the log cannot be asked either (a 503), the
client's retry is told what the first try did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError

from application.account_mail import RESET
from application.errors import InvalidRefreshTokenError
from application.values import Client
from interfaces.bootstrap import Services
from tests.faults import CommitCutter
from tests.integration.helpers import MakeServices, stored_events

pytestmark = pytest.mark.postgres
PASSWORD = "a lost commit's passphrase"
NEW_PASSWORD = "a found commit's passphrase"
CLIENT = Client()
KEYED = Client(retry_key="a-lost-commit's-retry-key")
NOW = datetime.now(UTC)


@pytest.fixture
def cutter(database_url: str) -> Iterator[CommitCutter]:
    with CommitCutter(database_url) as cutter:
        yield cutter


@pytest.fixture
def services(make_services: MakeServices, cutter: CommitCutter) -> Services:
    return make_services(
        database_url=cutter.url, run_projections=False, run_mailer=False
    )


@contextmanager
def outcome_unknown(services: Services) -> Iterator[None]:
    """The block's command has its commit answer lost while the server cannot
    be asked what happened: it answers 503 (OperationalError), to be retried."""

    def unknown(*_: object) -> None:
        raise OperationalError("the outcome of a lost commit is unknown")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services.recorder, "stored_positions", unknown)
        with pytest.raises(OperationalError):
            yield


def reset_link(services: Services, user_id: UUID) -> str:
    """Ask for a reset link and mint its token, as the outbox does."""
    services.mail.forgot_password("lost@example.com", CLIENT)
    services.mail.dispatch_resets(0)
    request = next(
        json.loads(n.state)
        for n in stored_events(services)
        if n.topic == "authledger:User.PasswordResetRequested"
    )
    request_id = UUID(hex=request["request_id"]["_data_"])
    return services.mail.tokens.mint(RESET, user_id, request_id)


def stored(services: Services, topic: str, stream: UUID) -> int:
    """How many events of `topic` the log holds on `stream`."""
    return sum(
        1
        for n in stored_events(services)
        if n.topic == topic and n.originator_id == stream
    )


def test_a_signup_whose_commit_answer_is_lost_is_the_account(
    services: Services, cutter: CommitCutter
) -> None:
    cutter.cut_commit_of("authledger:User.Registered")

    grant = services.app.register("lost@example.com", PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.Registered", grant.user_id) == 1
    assert services.app.login("lost@example.com", PASSWORD, CLIENT).user_id == (
        grant.user_id
    )


def test_a_login_whose_commit_answer_is_lost_opens_one_working_session(
    services: Services, cutter: CommitCutter
) -> None:
    user_id = services.app.register("lost@example.com", PASSWORD, CLIENT).user_id
    cutter.cut_commit_of("authledger:Session.Opened")

    grant = services.app.login("lost@example.com", PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.LoggedIn", user_id) == 2  # no orphan
    assert services.app.refresh(grant.refresh_token, CLIENT).user_id == user_id


def test_a_refresh_whose_commit_answer_is_lost_gives_the_stored_successor(
    services: Services, cutter: CommitCutter
) -> None:
    first = services.app.register("lost@example.com", PASSWORD, CLIENT)
    cutter.cut_commit_of("authledger:Session.TokenRotated")

    rotated = services.app.refresh(first.refresh_token, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:Session.TokenRotated", first.session_id) == 1
    assert stored(services, "authledger:Session.Revoked", first.session_id) == 0
    assert services.app.refresh(rotated.refresh_token, CLIENT).user_id == (
        first.user_id
    )


def test_a_logout_whose_commit_answer_is_lost_has_ended_the_session(
    services: Services, cutter: CommitCutter
) -> None:
    grant = services.app.register("lost@example.com", PASSWORD, CLIENT)
    cutter.cut_commit_of("authledger:Session.Revoked")

    services.app.logout(grant.user_id, grant.session_id, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:Session.Revoked", grant.session_id) == 1
    with pytest.raises(InvalidRefreshTokenError):
        services.app.refresh(grant.refresh_token, CLIENT)
    assert services.sessions.get_session(grant.session_id, NOW) is None


def test_a_logout_everywhere_whose_commit_answer_is_lost_has_ended_them(
    services: Services, cutter: CommitCutter
) -> None:
    grant = services.app.register("lost@example.com", PASSWORD, CLIENT)
    cutter.cut_commit_of("authledger:User.SessionsRevoked")

    services.app.logout_all(grant.user_id, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.SessionsRevoked", grant.user_id) == 1
    with pytest.raises(InvalidRefreshTokenError):
        services.app.refresh(grant.refresh_token, CLIENT)
    assert services.sessions.get_session(grant.session_id, NOW) is None


def test_a_password_change_whose_commit_answer_is_lost_has_changed_it(
    services: Services, cutter: CommitCutter
) -> None:
    grant = services.app.register("lost@example.com", PASSWORD, CLIENT)
    cutter.cut_commit_of("authledger:User.PasswordChanged")

    services.app.change_password(grant.user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert services.app.login("lost@example.com", NEW_PASSWORD, CLIENT).user_id == (
        grant.user_id
    )


def test_a_reset_whose_commit_answer_is_lost_has_set_the_password(
    services: Services, cutter: CommitCutter
) -> None:
    user_id = services.app.register("lost@example.com", PASSWORD, CLIENT).user_id
    token = reset_link(services, user_id)
    cutter.cut_commit_of("authledger:User.PasswordChanged")

    services.mail.reset_password(token, NEW_PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert services.app.login("lost@example.com", NEW_PASSWORD, CLIENT).user_id == (
        user_id
    )


def test_a_refresh_retried_after_an_unknown_outcome_keeps_the_session(
    make_services: MakeServices, cutter: CommitCutter
) -> None:
    # Given: the default reuse interval, and a rotation whose commit answer is
    # lost while the server cannot be asked what happened
    services = make_services(
        database_url=cutter.url,
        run_projections=False,
        run_mailer=False,
        refresh_reuse_interval_s=10,
    )
    first = services.app.register("lost@example.com", PASSWORD, CLIENT)
    cutter.cut_commit_of("authledger:Session.TokenRotated")
    with outcome_unknown(services):
        services.app.refresh(first.refresh_token, CLIENT)

    # When: the client retries with the token it still holds
    retried = services.app.refresh(first.refresh_token, CLIENT)

    # Then: the rotation had been stored; the retry got a working successor
    # and the session lives on
    assert cutter.cut == 1
    assert stored(services, "authledger:Session.TokenRotated", first.session_id) >= 1
    assert stored(services, "authledger:Session.Revoked", first.session_id) == 0
    assert services.app.refresh(retried.refresh_token, CLIENT).user_id == (
        first.user_id
    )


def test_a_signup_retried_under_its_key_after_an_unknown_outcome_is_the_account(
    services: Services, cutter: CommitCutter
) -> None:
    cutter.cut_commit_of("authledger:User.Registered")
    with outcome_unknown(services):
        services.app.register("lost@example.com", PASSWORD, KEYED)

    grant = services.app.register("lost@example.com", PASSWORD, KEYED)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.Registered", grant.user_id) == 1
    assert stored(services, "authledger:Session.Opened", grant.session_id) == 1
    assert services.app.refresh(grant.refresh_token, CLIENT).user_id == grant.user_id


def test_a_login_retried_under_its_key_after_an_unknown_outcome_is_one_session(
    services: Services, cutter: CommitCutter
) -> None:
    user_id = services.app.register("lost@example.com", PASSWORD, CLIENT).user_id
    cutter.cut_commit_of("authledger:Session.Opened")
    with outcome_unknown(services):
        services.app.login("lost@example.com", PASSWORD, KEYED)

    grant = services.app.login("lost@example.com", PASSWORD, KEYED)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.LoggedIn", user_id) == 2  # no orphan
    assert services.app.refresh(grant.refresh_token, CLIENT).user_id == user_id


def test_a_password_change_retried_after_an_unknown_outcome_is_done(
    services: Services, cutter: CommitCutter
) -> None:
    user_id = services.app.register("lost@example.com", PASSWORD, CLIENT).user_id
    cutter.cut_commit_of("authledger:User.PasswordChanged")
    with outcome_unknown(services):
        services.app.change_password(user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    services.app.change_password(user_id, PASSWORD, NEW_PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.PasswordChanged", user_id) == 1
    assert stored(services, "authledger:User.LoginFailed", user_id) == 0
    assert services.app.login("lost@example.com", NEW_PASSWORD, CLIENT).user_id == (
        user_id
    )


def test_a_reset_retried_after_an_unknown_outcome_is_done(
    services: Services, cutter: CommitCutter
) -> None:
    user_id = services.app.register("lost@example.com", PASSWORD, CLIENT).user_id
    token = reset_link(services, user_id)
    cutter.cut_commit_of("authledger:User.PasswordChanged")
    with outcome_unknown(services):
        services.mail.reset_password(token, NEW_PASSWORD, CLIENT)

    services.mail.reset_password(token, NEW_PASSWORD, CLIENT)

    assert cutter.cut == 1
    assert stored(services, "authledger:User.PasswordChanged", user_id) == 1
    assert services.app.login("lost@example.com", NEW_PASSWORD, CLIENT).user_id == (
        user_id
    )
