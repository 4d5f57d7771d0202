"""Snapshots on a real PostgreSQL: a long-lived user is stored and loaded from one."""

from __future__ import annotations

from typing import Any

import pytest

from application.errors import InvalidCredentialsError
from domain.user import User
from domain.values import Role
from tests.integration.helpers import CLIENT, MakeServices, wait_for_read_models

EMAIL = "oscar@example.com"
PASSWORD = "the real one"
FAILURES = 51


def replayed(events: list[Any]) -> User:
    """The user rebuilt from every one of its events, ignoring snapshots."""
    user: User | None = None
    for event in events:
        user = event.mutate(user)
    assert isinstance(user, User)
    return user


def test_a_user_with_more_than_fifty_failed_logins_loads_from_a_snapshot(
    make_services: MakeServices,
) -> None:
    # Given services that never lock an account nor block the address
    services = make_services(lockout_max_failures=1000, client_max_failures=1000)
    user_id = services.app.register(EMAIL, PASSWORD, CLIENT).user_id

    # When
    for i in range(FAILURES):
        with pytest.raises(InvalidCredentialsError):
            services.app.login(EMAIL, f"guess {i}", CLIENT)

    # Then snapshots were taken, every 50 versions
    assert services.app.snapshots is not None
    snapshots = list(services.app.snapshots.get(user_id))
    assert snapshots
    assert {s.originator_version % 50 for s in snapshots} == {0}
    # And the user loads with every failure counted, as a full replay would
    events = list(services.app.events.get(user_id))
    user: User = services.app.repository.get(user_id)
    assert isinstance(user, User)
    assert user.version == events[-1].originator_version > 50
    assert user.failed_logins == FAILURES
    assert vars(user) == vars(replayed(events))
    assert user.role == Role.USER
    # And the read model agrees
    wait_for_read_models(services)
    row = services.users.get_user(user_id)
    assert row is not None
    assert row.failed_logins == FAILURES
    # And the account still works after loading from the snapshot
    assert services.app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id
