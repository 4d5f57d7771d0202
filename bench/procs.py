"""What bounds a run: CPU per process group, and what database backends wait on."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

CORES = os.cpu_count() or 1
# Counted as saturated: the machine's cores this busy, in total.
SATURATED = 0.85
# A backend that flushed its statistics less than 1 s ago keeps its counts
# until it next ends a transaction a second later, or for up to
# PGSTAT_IDLE_INTERVAL (10 s) once idle: pg_stat_database is only exact
# after that long without new work. Counting transactions waits this long
# before the first reading and after the run before the last.
STATS_SETTLE_S = 10.5

Group = Callable[[], list[psutil.Process]]


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds of each process, plus those of its children it has reaped.

    A postgres backend that ends during a run is no longer listed at its end,
    but the postmaster has reaped it: its time is then in the postmaster's.
    """
    seconds = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            seconds[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return seconds


def _machine_busy() -> tuple[float, float]:
    """CPU seconds of all cores since boot: busy in all, and in interrupts.

    Interrupt time (loopback TCP is mostly softirq) belongs to no process.
    """
    times = psutil.cpu_times()
    irq = getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    return sum(times) - times.idle - getattr(times, "iowait", 0.0), irq


# Before a run: until the machine is about idle (what a previous run left in
# flight, such as queued bcrypt hashes, is done), at most this long.
SETTLED_BELOW_CORES = 0.5
SETTLE_MAX_S = 20.0


def settle() -> None:
    """Wait until the machine's busy cores over half a second fall below
    SETTLED_BELOW_CORES: a server still hashing the logins a killed wrk left
    queued would take the cores of the next run's server."""
    ends = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < ends:
        before = _machine_busy()[0]
        time.sleep(0.5)
        if (_machine_busy()[0] - before) / 0.5 < SETTLED_BELOW_CORES:
            return


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Load:
    """Cores used by each group during a run, and database wait samples."""

    cores: dict[str, float] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    # Transactions each database committed or rolled back during the run,
    # less its idle rate (background polling) when one was given.
    transactions: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the window the transactions were counted in

    @classmethod
    def mean(cls, loads: list[Load]) -> Load:
        """The average load over several runs."""
        if not loads:
            return cls()
        names = {name for load in loads for name in load.cores}
        kinds = {kind for load in loads for kind in load.waits}
        databases = {db for load in loads for db in load.connections}
        return cls(
            {n: sum(x.cores.get(n, 0.0) for x in loads) / len(loads) for n in names},
            {k: sum(x.waits.get(k, 0.0) for x in loads) / len(loads) for k in kinds},
            {d: max(x.connections.get(d, 0) for x in loads) for d in databases},
        )

    def verdict(self, hint: str = "", one_thread: str = "") -> str:
        """Say which resource bounds the run, with the numbers behind it.

        `one_thread` names a group that runs one Python thread: near one core,
        that thread is the bound even with cores to spare.
        """
        busy = sorted(self.cores.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {used:.2f}" for name, used in busy if used >= 0.05)
        total = sum(self.cores.values())
        waits = ", ".join(
            f"{kind} {n:.1f}" for kind, n in self.waits.items() if n >= 0.05
        )
        single = self.cores.get(one_thread, 0.0)
        if one_thread and single >= SATURATED:
            head = f"one core: {one_thread}'s thread ({single:.2f} cores)"
        elif total >= SATURATED * CORES:
            head = f"CPU ({total:.2f}/{CORES} cores): {busy[0][0]}"
        else:
            head = f"not CPU ({total:.2f}/{CORES} cores busy): waiting"
        parts = [head + (f" — {hint}" if hint else ""), f"cores: {shown}"]
        if waits:
            parts.append(f"pg backends waiting (avg): {waits}")
        if self.connections:
            peaks = ", ".join(f"{db} {n}" for db, n in sorted(self.connections.items()))
            parts.append(f"pg connections (peak): {peaks}")
        return "; ".join(parts)


def idle_rates(
    groups: dict[str, Group], database_url: str, seconds: float = 5.0
) -> dict[str, float]:
    """Transactions per second each database runs with no load (pollers).

    The window is `seconds` plus the settling wait after it, all idle.
    """
    with Meter(groups, database_url, count_transactions=True) as meter:
        time.sleep(seconds)
    return {db: n / meter.load.seconds for db, n in meter.load.transactions.items()}


class Meter:
    """Measure the cores each group uses and what postgres backends wait on.

    Use as a context manager around one run. Child processes reaped meanwhile
    (wrk, pgbench, a CLI command) count as "loadgen". With
    `count_transactions`, also the transactions each database ran, less
    `idle_rates`: it then waits STATS_SETTLE_S before and after the run.
    """

    def __init__(
        self,
        groups: dict[str, Group],
        database_url: str | None,
        idle_rates: dict[str, float] | None = None,
        *,
        count_transactions: bool = False,
    ) -> None:
        self.groups = groups
        self.database_url = database_url
        self.idle_rates = idle_rates or {}
        self.count_transactions = bool(count_transactions and database_url)
        self.load = Load()
        self._stop = threading.Event()
        self._waits: Counter[str] = Counter()
        self._connections: Counter[str] = Counter()
        self._samples = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _transactions(self) -> dict[str, int]:
        if not self.count_transactions or not self.database_url:
            return {}
        time.sleep(STATS_SETTLE_S)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname IS NOT NULL"
            ).fetchall()
        return {str(name): int(n) for name, n in rows}

    def __enter__(self) -> Meter:
        self._transactions_before = self._transactions()
        self._counted = time.monotonic()
        self._start = time.monotonic()
        self._children = _children_cpu()
        self._self = time.process_time()
        self._machine = _machine_busy()
        self._before = {name: _cpu_seconds(g()) for name, g in self.groups.items()}
        if self.database_url:
            self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        wall = max(time.monotonic() - self._start, 1e-6)
        for name, group in self.groups.items():
            before = self._before[name]
            after = _cpu_seconds(group())
            used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
            self.load.cores[name] = max(used, 0.0) / wall
        self.load.cores["loadgen"] = (_children_cpu() - self._children) / wall
        self.load.cores["bench"] = (time.process_time() - self._self) / wall
        busy, irq = (
            (now - then) / wall
            for now, then in zip(_machine_busy(), self._machine, strict=True)
        )
        self.load.cores["irq"] = irq
        rest = busy - sum(self.load.cores.values())
        self.load.cores["other"] = max(rest, 0.0)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        counts = self._transactions()
        seconds = time.monotonic() - self._counted
        self.load.transactions = {
            db: n
            - self._transactions_before.get(db, 0)
            - self.idle_rates.get(db, 0.0) * seconds
            for db, n in counts.items()
        }
        samples = max(self._samples, 1)
        self.load.waits = {k: n / samples for k, n in self._waits.most_common(3)}
        self.load.seconds = seconds
        self.load.connections = dict(self._connections)

    def _sample(self) -> None:
        """Every 50 ms: how many active backends wait, and on what (Lock, IO…)."""
        query = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')"
            " FROM pg_stat_activity"
            " WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        count = (
            "SELECT datname, count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " GROUP BY datname"
        )
        assert self.database_url
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                kinds = [row[0] for row in conn.execute(query).fetchall()]
                self._waits.update(k for k in kinds if k != "CPU")
                for database, n in conn.execute(count).fetchall():
                    if database is None:
                        continue
                    key = str(database)
                    self._connections[key] = max(self._connections[key], int(n))
                self._samples += 1
