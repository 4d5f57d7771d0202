"""write→read: from a command's commit to its rows being visible in the read models.

The command is a token rotation (no bcrypt), saved here without waiting; the
service's own projection runners (in its worker processes) apply it. The clock
stops when every live read model's tracking position — committed in the same
transaction as its rows — has reached the event, polled in a tight loop.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

import psycopg

from application.values import hash_token
from bench import seed
from bench.stats import Figure, percentile

if TYPE_CHECKING:
    from domain.session import Session
    from interfaces.bootstrap import Services

TIMEOUT_S = 10.0
POSITION = "SELECT authledger.live_position(%s)"


def _sample(
    services: Services, conn: psycopg.Connection[tuple[int]], grant: seed.Grant
) -> float:
    """Rotate one session's token; seconds until the read models show it."""
    app = services.app
    session: Session = app.repository.get(grant.session_id)
    session.refresh(
        hash_token(grant.refresh_token),
        secrets.token_hex(32),
        seed.IP,
        seed.AGENT,
        app.policy.refresh,
        app.clock(),
    )
    recordings = app.save(session)
    committed = time.perf_counter()
    position = max(r.notification.id for r in recordings)
    deadline = committed + TIMEOUT_S
    while True:
        row = conn.execute(POSITION, (app.name,)).fetchone()
        now = time.perf_counter()
        if row and row[0] >= position:
            return now - committed
        if now > deadline:
            raise RuntimeError(f"read models did not reach {position}")


def measure(services: Services, runs: int, samples: int) -> tuple[Figure, Figure]:
    """p50 and p99 (ms) of write→read, one value per run."""
    p50s, p99s = [], []
    user_ids = seed.create_users(
        services, [f"fresh-{secrets.token_hex(4)}@bench.example.com"]
    )
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        for _ in range(runs):
            grants = seed.open_sessions(services, user_ids * samples)
            seed.wait_caught_up(services)
            delays = []
            for grant in grants:
                delays.append(_sample(services, conn, grant) * 1000)
                time.sleep(0.005)  # each sample starts from idle runners
            p50s.append(percentile(delays, 0.50))
            p99s.append(percentile(delays, 0.99))
    return Figure.of(p50s), Figure.of(p99s)
