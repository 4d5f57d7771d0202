"""A failing projection stops visibly, keeps its position and resumes when fixed."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking

from application.errors import ReadModelsLaggingError
from application.projections import UserDirectoryProjection
from application.values import Client
from domain.user import User
from infrastructure.postgres_views import PostgresUserDirectoryView
from infrastructure.projection_runner import ReadModelSpec
from interfaces.bootstrap import ACTIVE_SESSIONS, LOGIN_HISTORY, build_services
from interfaces.http.routes.health import readyz
from tests.integration.helpers import last_position, wait_until

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


FRAGILE = ReadModelSpec.of(FragileUserDirectory, PostgresUserDirectoryView)


def test_a_failing_projection_stops_visibly_and_resumes_once_fixed(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services = build_services(
        settings.model_copy(update={"read_model_timeout_s": 1}),
        (FRAGILE, ACTIVE_SESSIONS, LOGIN_HISTORY),
    )
    try:
        healthy = services.app.register("fine@example.com", "password one", Client())
        caught_up = services.positions.position(services.app.name)

        # When: an event the projection cannot handle is stored
        with pytest.raises(ReadModelsLaggingError):
            services.app.register("poison@example.com", "password one", Client())
        stored = services.app.recorder.select_notifications(start=1, limit=100)
        poisoned_at = max(n.id for n in stored if n.topic.endswith("User.Registered"))
        users = next(
            w for w in services.workers if w.spec and w.spec.name == "user_directory"
        )
        wait_until(lambda: users.last_error is not None, timeout_s=10, what="failure")

        # Then: it says where it stopped, readiness fails, the position holds
        assert f"stopped at position {poisoned_at}" in str(users.last_error)
        assert f"stopped at position {poisoned_at}" in caplog.text
        not_ready = readyz(services)
        assert not_ready.status_code == 503
        checks = json.loads(bytes(not_ready.body))["checks"]
        assert "stopped at position" in checks["user_directory_v1"]
        assert services.positions.position(services.app.name) == caught_up
        assert services.users.get_user(healthy.user_id) is not None

        # When the bug is fixed, it resumes from there on its own
        FragileUserDirectory.fixed = True
        wait_until(
            lambda: services.positions.reached(
                services.app.name, last_position(services)
            ),
            timeout_s=15,
            what="resumed",
        )
        wait_until(lambda: readyz(services).status_code == 200, 10, "ready again")
        rows = services.users.list_users("poison", 10, 0)
        assert [row.email for row in rows] == ["poison@example.com"]
    finally:
        FragileUserDirectory.fixed = False
        services.close()
