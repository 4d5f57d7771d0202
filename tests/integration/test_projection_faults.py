"""A failing read model: a consistent one refuses the command, a lagging one stops."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking

from application.errors import ReadModelFailedError
from application.projections import LoginHistoryProjection, UserDirectoryProjection
from application.values import Client
from domain.session import Session
from domain.user import User
from infrastructure.database import DatabaseProbe
from infrastructure.postgres_views import (
    PostgresLoginHistoryView,
    PostgresUserDirectoryView,
)
from infrastructure.projection_runner import ReadModelSpec
from interfaces.bootstrap import (
    ACTIVE_SESSIONS,
    MAIL_OUTBOX,
    USER_DIRECTORY,
    build_services,
)
from interfaces.http.routes.health import readyz
from tests.integration.helpers import (
    last_position,
    stored_events,
    stored_facts,
    wait_until,
)

pytestmark = pytest.mark.postgres


class FragileUserDirectory(UserDirectoryProjection):
    """The users projection with a bug that one email triggers, until fixed."""

    name = "user_directory"
    fixed: ClassVar[bool] = False

    @singledispatchmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        super().apply(event, tracking)

    @apply.register
    def _(self, event: User.Registered, tracking: Tracking) -> None:
        if "poison" in event.email and not FragileUserDirectory.fixed:
            raise ValueError("cannot handle this email")
        super().apply(event, tracking)


class FragileLoginHistory(LoginHistoryProjection):
    """The timeline projection with a bug that one user agent triggers, until fixed."""

    name = "login_history"
    fixed: ClassVar[bool] = False

    @singledispatchmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        if (
            isinstance(event, Session.Opened)
            and event.user_agent == "poison"
            and not FragileLoginHistory.fixed
        ):
            raise ValueError("cannot handle this user agent")
        super().apply(event, tracking)


FRAGILE_USERS = ReadModelSpec.of(FragileUserDirectory, PostgresUserDirectoryView)
FRAGILE_HISTORY = ReadModelSpec.of(FragileLoginHistory, PostgresLoginHistoryView)


def test_a_consistent_read_model_that_fails_refuses_the_command_and_stores_nothing(
    settings: Any,
) -> None:
    services = build_services(
        settings, (FRAGILE_USERS, ACTIVE_SESSIONS, FRAGILE_HISTORY, MAIL_OUTBOX)
    )
    try:
        services.app.register("fine@example.com", "password one", Client())
        before = stored_facts(services)

        # When: a command whose event the read model cannot apply
        with pytest.raises(ReadModelFailedError, match="stopped at position"):
            services.app.register("poison@example.com", "password one", Client())

        # Then: nothing of it is stored, and the account does not exist
        assert stored_facts(services) == before
        assert services.app.find_user_by_email("poison@example.com") is None

        # When the bug is fixed, the same command succeeds
        FragileUserDirectory.fixed = True
        grant = services.app.register("poison@example.com", "password one", Client())
        assert services.users.get_user(grant.user_id) is not None
    finally:
        FragileUserDirectory.fixed = False
        services.close()


def test_a_failing_lagging_read_model_stops_visibly_and_resumes_once_fixed(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services = build_services(
        settings, (USER_DIRECTORY, ACTIVE_SESSIONS, FRAGILE_HISTORY, MAIL_OUTBOX)
    )
    try:
        healthy = services.app.register("fine@example.com", "password one", Client())
        wait_until(lambda: bool(history_of(services, healthy.user_id)), 10, "history")
        caught_up = history_position(services)

        # When: an event the lagging read model cannot apply is stored
        poisoned = services.app.register(
            "victim@example.com", "password one", Client("192.0.2.1", "poison")
        )
        poisoned_at = next(
            n.id
            for n in stored_events(services)
            if n.originator_id == poisoned.session_id
        )
        worker = next(w for w in services.workers if "login_history" in w.label)
        wait_until(lambda: worker.last_error is not None, timeout_s=10, what="failure")

        # Then: the command succeeded, and the read model says where it stopped
        assert services.users.get_user(poisoned.user_id) is not None
        assert f"stopped at position {poisoned_at}" in str(worker.last_error)
        logged = f"stopped at position {poisoned_at}"
        wait_until(lambda: logged in caplog.text, timeout_s=5, what="logged")
        not_ready = readyz(services, DatabaseProbe())
        assert not_ready.status_code == 503
        checks = json.loads(bytes(not_ready.body))["checks"]
        assert any("stopped at position" in check for check in checks.values())
        # (it may have passed the signup's address count, stored just before)
        assert caught_up <= history_position(services) < poisoned_at

        # When the bug is fixed, it resumes from there on its own
        FragileLoginHistory.fixed = True
        wait_until(
            lambda: history_position(services) >= last_position(services),
            timeout_s=15,
            what="resumed",
        )
        wait_until(
            lambda: readyz(services, DatabaseProbe()).status_code == 200,
            10,
            "ready again",
        )
        assert history_of(services, poisoned.user_id)
    finally:
        FragileLoginHistory.fixed = False
        services.close()


def history_of(services: Any, user_id: Any) -> list[Any]:
    return list(services.history.history(user_id, 100, 0))


def history_position(services: Any) -> int:
    statuses = services.read_models.status(services.recorder, services.app.name)
    return int(next(s.position for s in statuses if s.name == "login_history"))
