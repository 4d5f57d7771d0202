"""Random sequences of auth commands on real PostgreSQL keep the read models honest."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from application.errors import (
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    SessionNotFoundError,
    WrongPasswordError,
)
from application.values import Client
from interfaces.bootstrap import Services
from tests.integration.helpers import (
    MakeServices,
    stored_events,
    wait_for_read_models,
)

pytestmark = pytest.mark.postgres
RUNS = itertools.count()


def fold(services: Services) -> tuple[dict[str, Any], set[str]]:
    """Users and live sessions computed straight from the stored events."""
    users: dict[str, Any] = {}
    opened: dict[str, str | None] = {}  # session -> user
    revoked: set[str] = set()
    stored = stored_events(services)
    for notification, state in zip(
        stored, services.app.personal_data.payloads(stored), strict=True
    ):
        aggregate, topic = str(notification.originator_id), notification.topic
        kind = topic.rsplit(".", 1)[-1]
        if topic == "authledger:User.Registered":
            users[aggregate] = {"email": state["email"], "failed_logins": 0}
        elif topic == "authledger:User.LoginFailed":
            users[aggregate]["failed_logins"] = state["failures_in_window"]
        elif topic in (
            "authledger:User.LockedOut",
            "authledger:User.Unlocked",
            "authledger:User.FailuresCleared",
        ):
            users[aggregate]["failed_logins"] = 0
        elif topic == "authledger:User.SessionsRevoked":
            # Every session the user opened before this, but the one kept.
            kept = state["kept_session_id"]
            revoked |= {
                s for s, u in opened.items() if u == aggregate and s != str(kept)
            }
        elif kind == "Opened":
            opened[aggregate] = str(state["user_id"])
        elif kind == "Revoked":
            revoked.add(aggregate)
    return users, set(opened) - revoked


class AuthMachine(RuleBasedStateMachine):
    """Users register, log in right and wrong, refresh fresh and stale tokens, leave."""

    services: Services

    def __init__(self) -> None:
        super().__init__()
        self.run = next(RUNS)
        self.client = Client("192.0.2.44", "hypothesis")
        self.tokens: list[tuple[Any, str]] = []  # (user id, refresh token) ever issued
        self.passwords: dict[str, str] = {}

    def email(self, n: int) -> str:
        return f"p{self.run}-{n}@example.com"

    @rule(n=st.integers(0, 2))
    def register(self, n: int) -> None:
        try:
            grant = self.services.app.register(
                self.email(n), "passphrase number 0", self.client
            )
        except EmailAlreadyRegisteredError:
            assert self.email(n) in self.passwords
            return
        self.passwords[self.email(n)] = "passphrase number 0"
        self.tokens.append((grant.user_id, grant.refresh_token))

    @rule(n=st.integers(0, 2), right=st.booleans())
    def login(self, n: int, right: bool) -> None:
        password = self.passwords.get(self.email(n), "x") if right else "wrong password"
        try:
            grant = self.services.app.login(self.email(n), password, self.client)
        except InvalidCredentialsError:
            return
        assert right
        self.tokens.append((grant.user_id, grant.refresh_token))

    @rule(data=st.data())
    def refresh(self, data: st.DataObject) -> None:
        if not self.tokens:
            return
        user_id, token = data.draw(st.sampled_from(self.tokens))
        try:
            grant = self.services.app.refresh(token, self.client)
        except InvalidRefreshTokenError:
            return
        self.tokens.append((user_id, grant.refresh_token))

    @rule(data=st.data())
    def logout_everywhere(self, data: st.DataObject) -> None:
        if self.tokens:
            user_id, _ = data.draw(st.sampled_from(self.tokens))
            self.services.app.logout_all(user_id, self.client)

    @rule(n=st.integers(0, 2))
    def change_password(self, n: int) -> None:
        email = self.email(n)
        if email not in self.passwords:
            return
        user_id = next(u.id for u in self.services.users.list_users(email, 1, 0))
        new = f"passphrase number {len(self.tokens)}"
        try:
            self.services.app.change_password(
                user_id, self.passwords[email], new, self.client
            )
        except (WrongPasswordError, SessionNotFoundError):
            return
        self.passwords[email] = new

    def teardown(self) -> None:
        wait_for_read_models(self.services)
        url = self.services.database_url
        users, live_sessions = fold(self.services)
        with psycopg.connect(url) as conn:
            table_users = {
                str(i): {"email": e, "failed_logins": f}
                for i, e, f in conn.execute(
                    "SELECT id, email, failed_logins FROM read_models.users"
                )
            }
            table_sessions = {
                str(s)
                for (s,) in conn.execute(
                    "SELECT session_id FROM read_models.active_sessions"
                )
            }
        assert table_users == users
        assert table_sessions == live_sessions
        registered = [u["email"] for u in users.values()]
        assert len(registered) == len(set(registered))  # one account per email


def test_the_read_models_equal_a_fold_over_the_events(
    make_services: MakeServices,
) -> None:
    # One client address makes every failed login here: lift its throttle.
    AuthMachine.services = make_services(client_max_failures=1_000_000)
    run_state_machine_as_test(
        AuthMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
