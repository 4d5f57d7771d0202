"""The scrape: every worker process's instruments summed, and what the
database says of the read models."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg.sql import SQL, Composable

from infrastructure.database import connect
from infrastructure.event_store import HORIZON
from infrastructure.instruments import CAUGHT_UP_NAME
from infrastructure.read_model_registry import live_versions, position_in

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

# Events counted past a read model's position: past this, "at least".
LAG_COUNTED = 100_000


class ReadModelCollector:
    """Each live read model's position and lag, read from the database at
    scrape time: true even when the process running it has died.

    Lag in seconds is 0 when nothing is pending, else the time since the
    read model was last caught up (an upper bound on the oldest pending
    event's age, which grows while a runner is stuck).
    """

    def __init__(
        self,
        url: str,
        events_table: Composable,
        app_name: str,
        caught_up: Callable[[], dict[str, float]],
    ) -> None:
        self._url = url
        self._app = app_name
        self._caught_up = caught_up
        readable = (events_table, SQL(HORIZON))
        self._head = SQL(
            "SELECT max(notification_id) FROM {0} WHERE notification_id < {1}"
        ).format(*readable)
        self._pending = SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {0} WHERE notification_id > %s"
            " AND notification_id < {1} LIMIT {2}) AS pending"
        ).format(*readable, LAG_COUNTED)

    def collect(self) -> Iterator[Metric]:
        position = GaugeMetricFamily(
            "authledger_read_model_position",
            "The log position each read model has applied.",
            labels=("read_model",),
        )
        lag = GaugeMetricFamily(
            "authledger_read_model_lag_events",
            "Committed events a read model has still to apply.",
            labels=("read_model",),
        )
        lag_s = GaugeMetricFamily(
            "authledger_read_model_lag_seconds",
            "0 when caught up, else the time since it last was (NaN: unknown).",
            labels=("read_model",),
        )
        caught_up = self._caught_up()
        now = time.time()
        with connect(self._url, "authledger-metrics") as conn:
            head_row = conn.execute(self._head).fetchone()
            head = int(head_row[0]) if head_row and head_row[0] is not None else 0
            for name, live in sorted(live_versions(conn).items()):
                at = (
                    head
                    if live.inline
                    else position_in(conn, live.schema, name, self._app)
                )
                pending = 0 if live.inline else self._count_after(conn, at)
                position.add_metric((name,), at)
                lag.add_metric((name,), pending)
                lag_s.add_metric(
                    (name,), lag_seconds(pending, caught_up.get(live.schema), now)
                )
        yield from (position, lag, lag_s)

    def _count_after(self, conn: psycopg.Connection[Any], position: int) -> int:
        row = conn.execute(self._pending, (position,)).fetchone()
        return int(row[0]) if row else 0


def lag_seconds(pending: int, caught_up_at: float | None, now: float) -> float:
    """0 with nothing pending; else the time since the read model was last
    caught up; NaN (unknown) if no process running it has been since it started."""
    if not pending:
        return 0.0
    if caught_up_at is None:
        return math.nan
    return max(now - caught_up_at, 0.0)


def caught_up_times(path: str) -> Callable[[], dict[str, float]]:
    """Read every process's caught-up gauge from the multiprocess files."""

    def read() -> dict[str, float]:
        registry = CollectorRegistry()
        times: dict[str, float] = {}
        collector = MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        for family in collector.collect():  # type: ignore[no-untyped-call]
            if family.name == CAUGHT_UP_NAME:
                for sample in family.samples:
                    schema = sample.labels["schema"]
                    times[schema] = max(times.get(schema, 0.0), sample.value)
        return times

    return read


def scrape(path: str) -> bytes:
    """Every process's instruments, summed."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def read_model_metrics(collector: ReadModelCollector) -> bytes:
    """The read models' positions and lags (raises if the database does not answer)."""
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry)
