"""Event-store appends/s: one event per transaction, 1, 8 and 32 writer processes.

Two recorders, each on its own database of the bench's server, with the
service's eventsourcing settings (`eventsourcing_env`, pre-ping included):

- locked: the library's stock PostgresApplicationRecorder (no
  APPLICATION_RECORDER_TOPIC), which takes `LOCK TABLE ... IN EXCLUSIVE MODE`
  on the events table for every insert;
- AuthRecorder: the service's own, positions from the transaction id, no lock.

Each writer is a process of its own (the machine's cores, not one GIL): it
constructs its recorder (the parent made the table; CREATE_TABLE=n), appends
one event to warm up, says `ready`, then waits for a line `start end` (wall
clock), appends `StoredEvent(uuid4(), 1, "bench", b"{}")` with
`recorder.insert_events` until `end`, prints its count and waits for the next
line. Beside them, pgbench inserts one row per transaction into a table of the
same shape at the same concurrency (bench.database.PgbenchInsert).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import uuid4

import psutil
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import Environment

from bench.database import PgbenchInsert
from bench.procs import Group, Load, Meter
from bench.report import Row, all_met, at_least
from bench.setup import REPO
from bench.stats import Figure, ratio
from infrastructure.database import eventsourcing_env
from infrastructure.event_store import AuthRecorder

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO

    from bench.options import Options
    from bench.setup import Stack

APP = "Bench"  # its events table: bench_events
LOCKED, AUTH = "locked", "authrecorder"
DATABASES = {LOCKED: "appends_locked", AUTH: "appends_authrecorder"}
# Writers start together this long after the parent says so.
START_MARGIN_S = 0.2
GOAL_WRITERS = 8
GOAL_OVER_LOCKED_1 = 4.0
GOAL_OVER_PGBENCH = 0.5


def recorder(url: str, kind: str, *, create: bool) -> PostgresApplicationRecorder:
    """The recorder of `kind` on `url`, as the service's settings construct it."""
    env = eventsourcing_env(url, 1, 0)
    if kind == LOCKED:
        del env["APPLICATION_RECORDER_TOPIC"]
    env["CREATE_TABLE"] = "y" if create else "n"
    factory = InfrastructureFactory.construct(Environment(APP, env))
    made = factory.application_recorder()
    expected = PostgresApplicationRecorder if kind == LOCKED else AuthRecorder
    if type(made) is not expected:
        raise TypeError(f"{kind}: got a {type(made).__name__}")
    return made


def _append(rec: PostgresApplicationRecorder) -> None:
    rec.insert_events([StoredEvent(uuid4(), 1, "bench", b"{}")])


def child(kind: str, url: str) -> None:
    """One writer: ready, then one count per `start end` line read."""
    rec = recorder(url, kind, create=False)
    _append(rec)
    print("ready", flush=True)
    for line in sys.stdin:
        start, end = map(float, line.split())
        time.sleep(max(0.0, start - time.time()))
        count = 0
        while time.time() < end:
            _append(rec)
            count += 1
        print(count, flush=True)


class Writers:
    """N writer processes of one recorder kind, kept for all the runs."""

    def __init__(self, stack: Stack, kind: str, url: str, count: int) -> None:
        self.log = stack.tmp / f"writers-{kind}-{count}.log"
        argv = [sys.executable, "-m", "bench.appends", kind, url]
        self.procs: list[subprocess.Popen[str]] = []
        with self.log.open("a") as log:
            for _ in range(count):
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                    )
                )
        try:
            for proc in self.procs:
                self._expect(proc, "ready")
        except BaseException:
            self.close()
            raise

    def _expect(self, proc: subprocess.Popen[str], what: str) -> str:
        assert proc.stdout
        line = proc.stdout.readline().strip()
        if not line or (what and line != what):
            raise RuntimeError(
                f"writer said {line!r}, not {what or 'a count'}:\n"
                f"{self.log.read_text()[-3000:]}"
            )
        return line

    def tree(self) -> list[psutil.Process]:
        found = []
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(proc.pid))
        return found

    def run(self, seconds: float, meter: Meter) -> tuple[float, Load]:
        """All writers for `seconds`, started together: appends/s, and the load."""
        with meter:
            start = time.time() + START_MARGIN_S
            for proc in self.procs:
                _say(proc.stdin, f"{start} {start + seconds}")
            counts = [int(self._expect(proc, "")) for proc in self.procs]
        return sum(counts) / seconds, meter.load

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _say(pipe: IO[str] | None, line: str) -> None:
    assert pipe
    pipe.write(line + "\n")
    pipe.flush()


@dataclass
class Series:
    """Appends/s of one contender at each writer count, over the runs."""

    rates: dict[int, list[float]] = field(default_factory=dict)
    loads: dict[int, list[Load]] = field(default_factory=dict)

    def add(self, writers: int, rate: float, load: Load) -> None:
        self.rates.setdefault(writers, []).append(rate)
        self.loads.setdefault(writers, []).append(load)

    def at(self, writers: int) -> Figure:
        return Figure.of(self.rates.get(writers, []))

    def load(self, writers: int) -> Load:
        return Load.mean(self.loads.get(writers, []))


def measure(opts: Options, stack: Stack) -> list[Row]:
    """The rows: AuthRecorder at each writer count, against locked and pgbench."""
    urls = {kind: stack.create_database(name) for kind, name in DATABASES.items()}
    for kind, url in urls.items():
        # The table, made once here; the writers only open it.
        recorder(url, kind, create=True).datastore.close()
    pgbench = PgbenchInsert(stack)
    series = {LOCKED: Series(), AUTH: Series()}
    inserts = Series()
    seconds = opts.append_seconds
    for count in opts.append_writers:
        for kind, url in urls.items():
            writers = Writers(stack, kind, url, count)
            groups: dict[str, Group] = {
                "postgres": stack.postgres_processes,
                "writers": writers.tree,
            }
            try:
                for _ in range(opts.runs):
                    meter = Meter(groups, stack.server_url)
                    series[kind].add(count, *writers.run(seconds, meter))
            finally:
                writers.close()
        for _ in range(opts.runs):
            meter = Meter({"postgres": stack.postgres_processes}, stack.server_url)
            inserts.add(count, *pgbench.run(count, seconds, meter))
    return [
        _row(count, series[AUTH], series[LOCKED], inserts, opts)
        for count in opts.append_writers
    ]


def _row(
    count: int, auth: Series, locked: Series, inserts: Series, opts: Options
) -> Row:
    ours, stock, bound = auth.at(count), locked.at(count), inserts.at(count)
    over_stock, over_bound = ratio(ours, stock), ratio(ours, bound)
    ratios = [
        f"{over_stock.show('x')} of locked at {count}",
        f"{over_bound.show('x')} of pgbench at {count}",
    ]
    goal, met = "—", None
    if count == GOAL_WRITERS and 1 in opts.append_writers:
        over_locked_1 = ratio(ours, locked.at(1))
        ratios.insert(0, f"{over_locked_1.show('x')} of locked at 1 writer")
        goal = (
            f"≥ {GOAL_OVER_LOCKED_1:.0f}x locked recorder at 1 writer,"
            f" ≥ {GOAL_OVER_PGBENCH}x pgbench at {count} (medians)"
        )
        met = all_met(
            at_least(over_locked_1.median, GOAL_OVER_LOCKED_1),
            at_least(over_bound.median, GOAL_OVER_PGBENCH),
        )
    plural = "writer process" if count == 1 else "writer processes"
    return Row(
        f"event-store appends/s, {count} {plural} (AuthRecorder, 1 event per txn,"
        f" {opts.append_seconds} s runs)",
        ours.show("/s"),
        f"locked (stock recorder, LOCK TABLE per insert): {stock.show('/s')};"
        f" pgbench INSERT 1 row per txn, -c {count} -j {count}:"
        f" {bound.show('txn/s')}",
        "; ".join(ratios),
        _bounds(count, auth, locked, inserts),
        goal,
        met,
    )


def _bounds(count: int, auth: Series, locked: Series, inserts: Series) -> str:
    parts: Sequence[tuple[str, Series]] = (
        ("AuthRecorder", auth),
        ("locked", locked),
        ("pgbench", inserts),
    )
    return " | ".join(
        f"{name}: {series.load(count).verdict()}" for name, series in parts
    )


def main(argv: list[str]) -> None:
    kind, url = argv
    child(kind, url)


if __name__ == "__main__":
    main(sys.argv[1:])
