"""Commands racing on an account: two admins demoting each other (one admin is
left), a refresh racing a disable (it waits, and is refused)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest

from application.auth import AuthApplication
from application.errors import InvalidRefreshTokenError
from application.values import Client
from domain.errors import LastAdminError
from domain.values import Role
from interfaces.bootstrap import Services
from tests.integration.helpers import MakeServices

pytestmark = pytest.mark.postgres
ROUNDS = 5
PASSWORD = "a quorum of one admin"
CLIENT = Client("192.0.2.44", "pytest-races")


def demote_each_other(app: AuthApplication, pair: list[UUID]) -> list[UUID]:
    """Each admin demotes the other at the same moment; who was refused."""
    start, refused = threading.Barrier(2), []

    def demote(target: UUID, by: UUID) -> None:
        start.wait()
        try:
            app.change_role(target, Role.USER, changed_by=by)
        except LastAdminError:
            refused.append(target)

    threads = [
        threading.Thread(target=demote, args=(pair[0], pair[1])),
        threading.Thread(target=demote, args=(pair[1], pair[0])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return refused


def test_admins_demoting_each_other_at_once_leave_exactly_one(
    services: Services,
) -> None:
    app = services.app
    for round_ in range(ROUNDS):
        # Given: exactly two admins (the one left by the last round demoted)
        pair = [
            app.register(f"a{round_}-{n}@example.com", PASSWORD, Client(), Role.ADMIN)
            for n in range(2)
        ]
        ids = [grant.user_id for grant in pair]
        for stale in app.admin_roster(app.clock()).admins:
            if stale not in ids:
                app.change_role(stale, Role.USER, changed_by=ids[0])

        # When: each demotes the other at the same moment
        refused = demote_each_other(app, ids)

        # Then: one was refused, and exactly one admin is left, in the log too
        roles = [app.get_user(user_id).role for user_id in ids]
        assert len(refused) == 1
        assert sorted(roles) == [Role.ADMIN, Role.USER]
        left = app.admin_roster(app.clock()).admins
        assert left == refused == [ids[roles.index(Role.ADMIN)]]


def test_a_refresh_racing_a_disable_waits_for_it_and_is_refused(
    make_services: MakeServices,
) -> None:
    # Given a session, and a disable of its account in flight (holding the
    # account while it decides)
    services = make_services(run_projections=False, run_mailer=False)
    grant = services.app.register(f"{uuid4().hex}@example.com", PASSWORD, CLIENT)
    holding, release = threading.Event(), threading.Event()

    def disable() -> None:
        with services.app.exclusively(grant.user_id):
            holding.set()
            release.wait(10)
            services.app.set_disabled(grant.user_id, True, None, CLIENT)

    with ThreadPoolExecutor(2) as pool:
        disabling = pool.submit(disable)
        assert holding.wait(10)
        # When the session refreshes meanwhile
        refreshing = pool.submit(services.app.refresh, grant.refresh_token, CLIENT)
        time.sleep(0.3)
        waited = not refreshing.done()
        release.set()
        disabling.result(10)

        # Then it waited for the disable, and is refused: no token of a
        # disabled account is handed out
        assert waited
        with pytest.raises(InvalidRefreshTokenError):
            refreshing.result(10)
