"""Accounts and sessions written straight to the event store, as the service would.

Hashing each password at cost 12 would take longer than the benchmark, so
every account shares one real cost-12 hash of the same password (made with the
service's pepper): a login still costs one full bcrypt check.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from application.values import hash_token
from domain.email_claim import EmailClaim
from domain.session import Session
from domain.user import User
from domain.values import Role, email_identity
from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from application.auth import AuthApplication

PASSWORD = "correct horse battery staple"
BATCH = 200
IP, AGENT = "127.0.0.1", "authledger-bench"


@dataclass(frozen=True)
class Grant:
    user_id: UUID
    session_id: UUID
    refresh_token: str
    access_token: str


def connect(database_url: str, data_dir: Path) -> Services:
    """The service's use cases in this process (same pepper and JWT secret)."""
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        bcrypt_rounds=12,
        run_projections=False,
        run_mailer=False,
        run_webhooks=False,  # the service delivers; this process adds endpoints
        webhook_allow_private=True,
    )
    return build_services(settings)


def first_claim(
    app: AuthApplication, email: str, user_id: UUID, now: datetime
) -> EmailClaim:
    """The claim a new account makes on a fresh address (as signup does)."""
    return EmailClaim.claim(app.claim_id(email_identity(email)), email, user_id, now)


def create_users(services: Services, emails: list[str]) -> list[UUID]:
    """Register accounts (password PASSWORD), BATCH per transaction."""
    password_hash = services.app.passwords.hash(PASSWORD)
    now = services.app.clock()
    ids = []
    for start in range(0, len(emails), BATCH):
        batch = []
        for email in emails[start : start + BATCH]:
            user = User.register(email, password_hash, Role.USER, now)
            batch += [user, first_claim(services.app, email, user.id, now)]
            ids.append(user.id)
        services.app.save(*batch)
    return ids


def open_sessions(services: Services, user_ids: list[UUID]) -> list[Grant]:
    """One new session per user id (ids may repeat), as a login opens it."""
    app = services.app
    now = app.clock()
    grants = []
    users: dict[UUID, User] = {}
    for start in range(0, len(user_ids), BATCH):
        changed: list[User | Session] = []
        for user_id in user_ids[start : start + BATCH]:
            user = users.get(user_id) or app.repository.get(user_id)
            users[user_id] = user
            session_id = uuid4()
            token = f"{session_id.hex}.{secrets.token_urlsafe(32)}"
            # As the service opens one: the login first, then the session
            # carrying the user's version after it (revocations compare it).
            user.record_login(session_id, IP, AGENT, now)
            session = Session.open(
                session_id,
                user_id,
                user.version,
                hash_token(token),
                IP,
                AGENT,
                app.policy.refresh,
                now,
            )
            changed.append(session)
            access = services.tokens.issue(user_id, session_id, user.role)
            grants.append(Grant(user_id, session_id, token, access))
        app.save(*changed, *users.values())
        users.clear()
    return grants


def wait_caught_up(services: Services, timeout: float = 120) -> None:
    """Until the lagging read models have applied the whole log.

    The consistent ones need no wait: they commit with the events.
    """
    deadline = time.monotonic() + timeout
    models, name = services.read_models, services.app.name
    while models.lag(services.recorder, name, 1):
        if time.monotonic() > deadline:
            raise RuntimeError("the lagging read models did not catch up")
        time.sleep(0.01)
