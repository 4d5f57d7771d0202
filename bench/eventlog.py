"""A generated event log: many users' stories, and one user with a long history.

Events are made by the domain aggregates themselves and stored with
`app.save()`, as the service stores them; only the bcrypt hash is shared (one
real cost-12 hash), since hashing each registration would take hours.
"""

from __future__ import annotations

import secrets
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from bench.seed import first_claim
from domain.session import Session
from domain.user import LockoutPolicy, User
from domain.values import RevocationReason, Role

if TYPE_CHECKING:
    from datetime import datetime

    from eventsourcing.domain import BaseAggregate

    from interfaces.bootstrap import Services

IP, AGENT = "192.0.2.7", "Mozilla/5.0 (bench) Gecko/20100101 Firefox/140.0"
# 420 events per save, each save one transaction that also writes the consistent
# read models inline (as a command's would). Far bigger saves (~1 000 events)
# once hung in the stock recorder's pipelined insert; this size is known good.
USERS_PER_SAVE = 30
# A story: registered, email claimed, two logins (each a session opened),
# three rotations per session, one logout, one wrong password.
EVENTS_PER_STORY = 14
# No lockout, however many failures: the long history is all failures.
NEVER_LOCK = LockoutPolicy(max_failures=10**9, window=timedelta(days=3650))


def _story(
    n: int, prefix: str, password_hash: str, services: Services, now: datetime
) -> list[BaseAggregate[UUID]]:
    refresh_policy = services.app.policy.refresh
    email = f"{prefix}{n}@bench.example.com"
    user = User.register(email, password_hash, Role.USER, now)
    claim = first_claim(services.app, email, user.id, now)
    sessions = []
    for _ in range(2):
        session_id = uuid4()
        user.record_login(session_id, IP, AGENT, now)
        session = Session.open(
            session_id,
            user.id,
            user.version,
            secrets.token_hex(32),
            IP,
            AGENT,
            refresh_policy,
            now,
        )
        for _rotation in range(3):
            session.refresh(
                session.refresh_token_hash,
                secrets.token_hex(32),
                IP,
                AGENT,
                refresh_policy,
                now,
            )
        sessions.append(session)
    sessions[0].revoke(RevocationReason.LOGOUT, IP, AGENT, now)
    user.record_failed_login(IP, AGENT, services.app.policy.lockout, now)
    return [user, claim, *sessions]


def generate(services: Services, events: int, prefix: str = "gen") -> int:
    """Store at least `events` events of user stories; return the log's length."""
    app = services.app
    password_hash = app.passwords.hash("correct horse battery staple")
    stories = -(-events // EVENTS_PER_STORY)
    started, reported = time.monotonic(), 0
    for first in range(0, stories, USERS_PER_SAVE):
        now = app.clock()
        batch = []
        for n in range(first, min(first + USERS_PER_SAVE, stories)):
            batch += _story(n, prefix, password_hash, services, now)
        app.save(*batch)
        done = (first + USERS_PER_SAVE) * EVENTS_PER_STORY
        if done - reported >= 250_000:
            reported = done
            rate = done / (time.monotonic() - started)
            print(f"  {done:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return count_events(services)


def count_events(services: Services) -> int:
    """How many events the log holds (positions are `xid << 20 | index`, not 1…N)."""
    return services.recorder.count_after(0, 2**62)


def long_history(services: Services, events: int = 10_000) -> UUID:
    """One user with `events` events, returning its id.

    In every ten events, a login (its user event and its session's opening) and
    eight wrong passwords: the timeline replays the user's stream and one
    stream per session.
    """
    app = services.app
    now = app.clock()
    email = f"long-{uuid4().hex[:8]}@bench.example.com"
    user = User.register(email, "$2b$12$" + "x" * 53, Role.USER, now)
    app.save(user, first_claim(app, email, user.id, now))
    made, pending = 2, []
    while made < events:
        if made % 10 == 2 and made + 2 <= events:
            session_id = uuid4()
            user.record_login(session_id, IP, AGENT, now)
            session = Session.open(
                session_id,
                user.id,
                user.version,
                secrets.token_hex(32),
                IP,
                AGENT,
                app.policy.refresh,
                now,
            )
            pending.append(session)
            made += 2
        else:
            user.record_failed_login(IP, AGENT, NEVER_LOCK, now)
            made += 1
        if len(user.pending_events) >= 500:
            app.save(user, *pending)
            pending = []
    app.save(user, *pending)
    return user.id
