"""write→read at idle: a command's commit, and when each kind of read model shows it.

Commands run one at a time, with a pause between them, in this process (the
service's use cases, `seed.connect`): token rotations and role changes
alternately, neither costing a bcrypt. Both append one event, which the
consistent read models (user_directory, active_sessions) write in the insert
transaction itself, and which the lagging ones (login_history, mail_outbox)
get from the service's one group runner, in its worker processes.

- consistent: queried right after the command returns, once: the rotation's
  generation in active_sessions, the new role in user_directory. Each sample
  is visible or not; the figure is how many were (all, 0 ms, by design).
- lagging: from the command's return (its commit: a command reads and saves
  in one transaction, committed as it returns) until
  `read_models.login_history` holds the row of one of its events' positions (which a
  wrapper on this process's recorder's insert_events records) and the live
  mail_outbox's tracking position has reached it, polled in a tight loop.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from application.values import Client
from bench import seed
from bench.stats import Figure, percentile
from domain.values import Role

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from interfaces.bootstrap import Services

TIMEOUT_S = 10.0
PAUSE_S = 0.02  # between commands: each starts with the runner idle
CLIENT = Client(seed.IP, seed.AGENT)
LAGGING = ("login_history", "mail_outbox")
SESSION_GENERATION = (
    "SELECT generation FROM read_models.active_sessions WHERE session_id = %s"
)
USER_ROLE = "SELECT role FROM read_models.users WHERE id = %s"


@dataclass(frozen=True)
class Freshness:
    """Per run: p50 and p99 (ms) of commit → visible in the lagging read models;
    over all runs: commands visible in the consistent ones when they returned."""

    p50: Figure
    p99: Figure
    consistent_visible: int
    commands: int


class Positions:
    """While open, record the last position this process's recorder appended."""

    def __init__(self, services: Services) -> None:
        self.recorder = services.recorder
        self.position = 0
        self.first = 0  # the first position of that append

    def __enter__(self) -> Positions:
        insert = self.recorder.insert_events

        def recorded(stored_events: Sequence[Any], **kwargs: Any) -> Any:
            ids = insert(stored_events, **kwargs)
            self.position, self.first = max(ids or [0]), min(ids or [0])
            return ids

        self.recorder.insert_events = recorded  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        del self.recorder.insert_events  # the class's method again


def _lagging_query(services: Services) -> sql.Composed:
    """True once login_history has the row and mail_outbox has passed it."""
    outbox = services.read_models.live_spec("mail_outbox")
    if outbox is None:
        raise RuntimeError("no live mail_outbox")
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM read_models.login_history"
        " WHERE position BETWEEN %s AND %s)"
        " AND coalesce((SELECT notification_id FROM {tracking}"
        " WHERE application_name = %s), 0) >= %s"
    ).format(tracking=sql.Identifier(outbox.schema, "mail_outbox_tracking"))


def _wait_visible(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    app: str,
    appended: tuple[int, int],
    committed: float,
) -> float:
    """Seconds from `committed` until the command's append (its first and
    last position: a command may append more than the event shown) shows."""
    first, position = appended
    deadline = committed + TIMEOUT_S
    while True:
        row = conn.execute(query, (first, position, app, position)).fetchone()
        now = time.perf_counter()
        if row and row[0]:
            return now - committed
        if now > deadline:
            raise RuntimeError(f"lagging read models did not reach {position}")


class _Commands:
    """Alternately rotate one session's token and flip one user's role."""

    def __init__(self, services: Services, user_id: UUID, token: str) -> None:
        self.services, self.user_id, self.token = services, user_id, token
        self.generation, self.role, self.n = 0, Role.USER, 0

    def next(self, conn: psycopg.Connection[Any]) -> tuple[float, bool]:
        """Run the next command: when it returned, and whether the consistent
        read model showed it then."""
        app = self.services.app
        self.n += 1
        if self.n % 2:
            grant = app.refresh(self.token, CLIENT)
            returned = time.perf_counter()
            self.token, self.generation = grant.refresh_token, self.generation + 1
            row = conn.execute(SESSION_GENERATION, (grant.session_id,)).fetchone()
            return returned, bool(row and row[0] == self.generation)
        self.role = Role.ADMIN if self.role == Role.USER else Role.USER
        app.change_role(self.user_id, self.role, None)
        returned = time.perf_counter()
        row = conn.execute(USER_ROLE, (self.user_id,)).fetchone()
        return returned, bool(row and row[0] == self.role.value)


def measure(services: Services, runs: int, samples: int) -> Freshness:
    """Run `samples` commands per run, one at a time; see the module's doc."""
    query = _lagging_query(services)
    p50s, p99s, visible, total = [], [], 0, 0
    email = f"fresh-{secrets.token_hex(4)}@bench.example.com"
    (user_id, keeper) = seed.create_users(services, [email, f"keeper-{email}"])
    # Another admin throughout: the flipped user is never the last one.
    services.app.change_role(keeper, Role.ADMIN, None)
    with (
        psycopg.connect(services.database_url, autocommit=True) as conn,
        Positions(services) as positions,
    ):
        for _ in range(runs):
            (grant,) = seed.open_sessions(services, [user_id])
            seed.wait_caught_up(services)
            commands = _Commands(services, user_id, grant.refresh_token)
            delays = []
            for _ in range(samples):
                time.sleep(PAUSE_S)
                returned, shown = commands.next(conn)
                visible += shown
                total += 1
                lag = _wait_visible(
                    conn,
                    query,
                    services.app.name,
                    (positions.first, positions.position),
                    returned,
                )
                delays.append(lag * 1000)
            p50s.append(percentile(delays, 0.50))
            p99s.append(percentile(delays, 0.99))
    return Freshness(Figure.of(p50s), Figure.of(p99s), visible, total)
