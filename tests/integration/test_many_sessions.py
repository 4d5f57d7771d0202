"""A user with very many sessions can log out everywhere without stalling writes."""

from __future__ import annotations

from uuid import uuid4

import pytest

from application.errors import InvalidRefreshTokenError
from application.values import Client, hash_token
from domain.session import Session
from interfaces.bootstrap import Services
from tests.integration.helpers import wait_for_read_models

pytestmark = pytest.mark.postgres
SESSIONS = 4000  # one save of this many revocations stalled the driver


def test_logging_out_everywhere_with_4000_sessions_revokes_them_all(
    services: Services,
) -> None:
    # Given a user with many open sessions
    app = services.app
    grant = app.register("busy@example.com", "a busy passphrase", Client())
    user = app.get_user(grant.user_id)
    now = app.clock()
    for batch in range(SESSIONS // 100):
        sessions = [
            Session.open(
                uuid4(),
                user.id,
                user.version,
                hash_token(f"token-{batch}-{n}"),
                "192.0.2.9",
                "seed",
                app.policy.refresh,
                now,
            )
            for n in range(100)
        ]
        app.save(*sessions)
    wait_for_read_models(services)
    assert len(services.sessions.list_sessions(user.id, now)) == SESSIONS + 1

    # When
    app.logout_all(user.id, Client())

    # Then one event on the user ends every session, and the store still takes writes
    assert services.sessions.list_sessions(user.id, app.clock()) == []
    stored = app.recorder.select_notifications(start=1, limit=20000)
    markers = [n for n in stored if n.topic == "authledger:User.SessionsRevoked"]
    assert len(markers) == 1
    with pytest.raises(InvalidRefreshTokenError):
        app.refresh(grant.refresh_token, Client())
    app.register("after@example.com", "a busy passphrase", Client())
