"""Concurrent appends with rollbacks and slow commits: every reader sees each once."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    Notification,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.utils import Environment
from psycopg.sql import SQL

from application.errors import ReadModelFailedError
from infrastructure import event_store
from infrastructure.database import EventTables, eventsourcing_env, protect_event_log
from infrastructure.event_store import AuthRecorder

if TYPE_CHECKING:
    from psycopg import Cursor
    from psycopg.rows import DictRow

pytestmark = pytest.mark.postgres

TOPIC = "tests.integration.test_append_ordering:Appended"
# No horizon: a reader may pass positions that a running transaction fills later.
NO_HORIZON = "9223372036854775807"

Outcome = Literal["committed", "conflict", "rolled back"]


@dataclass(frozen=True)
class Plan:
    """How one scenario's writers behave; the same for threads and processes."""

    seconds: float
    threads: int
    shared: tuple[uuid.UUID, ...]
    seed: int
    shared_share: float = 0.4  # transactions appending to a shared aggregate
    fail_share: float = 0.15  # transactions whose inline writer raises
    slow_every: int = 10  # every n-th transaction of a writer sleeps slow_s
    slow_s: float = 0.25


@dataclass(frozen=True)
class Attempt:
    """One insert_events call: what it tried, what it was told."""

    tokens: tuple[str, ...]
    meant_to_fail: bool
    slow: bool
    shared: bool
    outcome: Outcome
    ids: tuple[int, ...]
    process: int
    inline: bool  # False: a one-statement append, nothing written beside it


@dataclass
class Run:
    """What the writers did and what each reader saw."""

    attempts: list[Attempt]
    subscriber: Reader
    catch_up: Reader


def make_recorder(
    url: str, pool_size: int, *, create_table: bool, inline: bool = True
) -> AuthRecorder:
    """The service's recorder on this database, with the test's inline writer
    (or, not `inline`, with none: each append is one statement)."""
    env = eventsourcing_env(url, pool_size, 2)
    if not create_table:
        env["CREATE_TABLE"] = "n"
    factory = InfrastructureFactory.construct(Environment("Auth", env))
    recorder = factory.application_recorder()
    if create_table:
        factory.aggregate_recorder("snapshots")  # protected beside the events
    assert isinstance(recorder, AuthRecorder)
    recorder.inline = sleep_or_fail if inline else None
    return recorder


def sleep_or_fail(curs: Cursor[DictRow], notifications: Sequence[Notification]) -> None:
    """Hold the transaction open as its first event asks, then maybe roll it back."""
    del curs  # writes nothing: only holds the transaction open, or fails it
    order = json.loads(notifications[0].state)
    time.sleep(float(order["sleep"]))
    if order["fail"]:
        raise RuntimeError("this transaction is rolled back on purpose")


def event(
    originator_id: uuid.UUID, version: int, *, sleep: float = 0.0, fail: bool = False
) -> StoredEvent:
    """An event carrying a unique token and its transaction's orders."""
    state = {"token": uuid.uuid4().hex, "sleep": sleep, "fail": fail}
    return StoredEvent(originator_id, version, TOPIC, json.dumps(state).encode())


def token(state: bytes) -> str:
    return str(json.loads(state)["token"])


def append(recorder: AuthRecorder, events: list[StoredEvent], **kind: bool) -> Attempt:
    """Insert the events in one transaction and record how it ended."""
    order = json.loads(events[0].state)
    outcome: Outcome = "committed"
    ids: Sequence[int] = ()
    try:
        ids = recorder.insert_events(events) or ()
    except IntegrityError:
        outcome = "conflict"
    except ReadModelFailedError:
        outcome = "rolled back"
    return Attempt(
        tokens=tuple(token(e.state) for e in events),
        meant_to_fail=bool(order["fail"]),
        slow=kind.get("slow", False),
        shared=kind.get("shared", False),
        outcome=outcome,
        ids=tuple(ids),
        process=os.getpid(),
        inline=recorder.inline is not None,
    )


def write(recorder: AuthRecorder, plan: Plan, seed: int) -> list[Attempt]:
    """Append for plan.seconds: new aggregates, shared ones, some slow, some failing."""
    rng = random.Random(seed)
    attempts: list[Attempt] = []
    deadline = time.monotonic() + plan.seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
        # Slow ones always commit, and only to new aggregates: nothing waits on them.
        slow = count % plan.slow_every == 0
        shared = not slow and rng.random() < plan.shared_share
        # Only an inline writer can fail (or sleep in) its transaction.
        fail = (
            recorder.inline is not None and not slow and rng.random() < plan.fail_share
        )
        sleep = plan.slow_s if slow else rng.uniform(0, 0.02)
        if shared:
            originator_id = rng.choice(plan.shared)
            last = recorder.select_events(originator_id, desc=True, limit=1)
            versions = [last[0].originator_version + 1]
        else:
            originator_id = uuid.uuid4()
            versions = list(range(1, rng.randint(1, 3) + 1))
        events = [event(originator_id, v, sleep=sleep, fail=fail) for v in versions]
        attempts.append(append(recorder, events, slow=slow, shared=shared))
        time.sleep(rng.uniform(0, 0.002))
    return attempts


def write_in_threads(recorder: AuthRecorder, plan: Plan) -> list[Attempt]:
    with ThreadPoolExecutor(plan.threads) as pool:
        futures = [
            pool.submit(write, recorder, plan, plan.seed * 100 + n)
            for n in range(plan.threads)
        ]
        return [attempt for future in futures for attempt in future.result()]


def write_in_process(url: str, plan: Plan, *, inline: bool) -> list[Attempt]:
    """A writer process: its own recorder and pool, its own threads."""
    recorder = make_recorder(url, plan.threads + 1, create_table=False, inline=inline)
    try:
        return write_in_threads(recorder, plan)
    finally:
        recorder.datastore.close()


def committed_after(recorder: AuthRecorder, position: int) -> bool:
    """Whether any committed event lies after `position`, past the horizon too."""
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(
            SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE notification_id > %s)").format(
                recorder.table
            ),
            (position,),
        ).fetchone()
    return bool(row and next(iter(row.values())))


class Reader:
    """Follow the log like a runner: poll after the last position seen."""

    def __init__(
        self,
        recorder: AuthRecorder,
        *,
        page: int,
        start_after_s: float = 0.0,
        idle_s: float = 0.001,
        pause_every: int = 0,
        pause_s: float = 0.0,
    ) -> None:
        self.recorder = recorder
        self.page = page
        self.start_after_s = start_after_s
        self.idle_s = idle_s
        self.pause_every = pause_every
        self.pause_s = pause_s
        self.seen: list[Notification] = []
        self.seen_live = 0  # before the writers were done

    def run(self, writers_done: threading.Event) -> None:
        """Read until the writers are done and nothing lies after the last seen."""
        time.sleep(self.start_after_s)
        last = 0
        pages = 0
        drain_deadline: float | None = None
        while True:
            found = self.recorder.select_notifications(
                start=last, limit=self.page, inclusive_of_start=False
            )
            self.seen.extend(found)
            if not writers_done.is_set():
                self.seen_live += len(found)
            if found:
                last = found[-1].id
                pages += 1
                if self.pause_every and pages % self.pause_every == 0:
                    time.sleep(self.pause_s)
                continue
            if writers_done.is_set():
                # Past the horizon too: nothing committed lies after what was read.
                if not committed_after(self.recorder, last):
                    return
                drain_deadline = drain_deadline or time.monotonic() + 10
                assert time.monotonic() < drain_deadline, "the final drain is stuck"
            time.sleep(self.idle_s)


def run_scenario(url: str, plan: Plan, processes: int) -> Run:
    """Writers in threads and in spawned processes, a subscriber, a catch-up reader.

    The last process appends without an inline writer: one statement each.
    """
    recorder = make_recorder(url, plan.threads + 4, create_table=True)
    try:
        tables = EventTables(
            recorder.datastore.schema, recorder.events_table_name, "auth_snapshots"
        )
        protect_event_log(url, tables)
        attempts = [append(recorder, [event(agg, 1)]) for agg in plan.shared]
        subscriber = Reader(recorder, page=100)
        catch_up = Reader(
            recorder,
            page=50,
            start_after_s=1.0,
            idle_s=0.005,
            pause_every=5,
            pause_s=0.1,
        )
        writers_done = threading.Event()
        spawn = multiprocessing.get_context("spawn")
        with (
            ThreadPoolExecutor(2) as readers,
            ProcessPoolExecutor(max(processes, 1), mp_context=spawn) as remote,
        ):
            reading = [
                readers.submit(r.run, writers_done) for r in (subscriber, catch_up)
            ]
            elsewhere: list[Future[list[Attempt]]] = [
                remote.submit(
                    write_in_process,
                    url,
                    replace(plan, seed=plan.seed + n),
                    inline=n < processes,
                )
                for n in range(1, processes + 1)
            ]
            try:
                attempts += write_in_threads(recorder, plan)
                for future in elsewhere:
                    attempts += future.result(timeout=60)
            finally:
                writers_done.set()
            for reader in reading:
                reader.result(timeout=30)
        return Run(attempts, subscriber, catch_up)
    finally:
        recorder.datastore.close()


def committed_by_id(attempts: list[Attempt]) -> dict[int, str]:
    """Each committed event's token by the position insert_events returned."""
    committed: dict[int, str] = {}
    for attempt in attempts:
        if attempt.outcome == "committed":
            assert len(attempt.ids) == len(attempt.tokens)
            committed.update(zip(attempt.ids, attempt.tokens, strict=True))
    return committed


def assert_saw_each_committed_event_once_in_order(
    seen: list[Notification], attempts: list[Attempt]
) -> None:
    ids = [n.id for n in seen]
    assert all(a < b for a, b in itertools.pairwise(ids)), "not increasing"
    assert {n.id: token(n.state) for n in seen} == committed_by_id(attempts)
    failed = {t for a in attempts if a.outcome != "committed" for t in a.tokens}
    assert not failed & {token(n.state) for n in seen}
    versions: defaultdict[uuid.UUID, list[int]] = defaultdict(list)
    for notification in seen:
        versions[uuid.UUID(str(notification.originator_id))].append(
            notification.originator_version
        )
    # Every aggregate's versions in position order: 1, 2, 3… without a gap.
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def test_concurrent_appends_reach_every_reader_once_in_order(
    database_url: str,
) -> None:
    # Given: writers in this process and in two others, on new and shared
    # aggregates, holding transactions open 0-20 ms (some 250 ms), 15 % rolled
    # back; one of the other processes appends without an inline writer
    plan = Plan(
        seconds=10.0,
        threads=4,
        shared=tuple(uuid.uuid4() for _ in range(3)),
        seed=random.randrange(10**6),
    )

    # When: they append while a subscriber and a catch-up reader follow the log
    run = run_scenario(database_url, plan, processes=2)

    # Then: the scenario really had conflicts, rollbacks and slow commits, from
    # three processes, while the readers were following
    kinds = Counter(
        (a.outcome, a.shared, a.slow, a.meant_to_fail) for a in run.attempts
    )
    assert kinds["conflict", True, False, False] > 0
    assert kinds["rolled back", True, False, True] > 0
    assert kinds["rolled back", False, False, True] > 0
    assert kinds["committed", True, False, False] > 0
    assert kinds["committed", False, True, False] > 0
    plain = Counter((a.outcome, a.shared) for a in run.attempts if not a.inline)
    assert plain["committed", False] > 0
    assert plain["committed", True] > 0
    assert plain["conflict", True] > 0
    assert not any(a.meant_to_fail and a.outcome == "committed" for a in run.attempts)
    assert not any(
        not a.meant_to_fail and a.outcome == "rolled back" for a in run.attempts
    )
    committed = committed_by_id(run.attempts)
    assert len(committed) > 1000
    assert len({a.process for a in run.attempts if a.outcome == "committed"}) == 3
    assert run.subscriber.seen_live > len(committed) // 2
    assert run.catch_up.seen_live > 0
    # And: each reader saw every committed event once, in order, and nothing else
    assert_saw_each_committed_event_once_in_order(run.subscriber.seen, run.attempts)
    assert_saw_each_committed_event_once_in_order(run.catch_up.seen, run.attempts)
    outcomes = Counter(a.outcome for a in run.attempts)
    print(f"{len(committed)} events committed; transactions: {dict(outcomes)}")


# An append with inline writes (a pipelined transaction), and a lone one
# (one statement through libpq).
PATHS = pytest.mark.parametrize("inline", [True, False], ids=["inline", "lone"])


@PATHS
def test_appending_a_stale_version_still_fails_and_stores_nothing(
    database_url: str, inline: bool
) -> None:
    recorder = make_recorder(database_url, 2, create_table=True, inline=inline)
    try:
        aggregate = uuid.uuid4()
        for version in (1, 2, 3):
            recorder.insert_events([event(aggregate, version)])

        for stale in (event(aggregate, 3), event(aggregate, 2)):
            with pytest.raises(IntegrityError):
                recorder.insert_events([stale, event(aggregate, 4)])

        stored = recorder.select_events(aggregate)
        assert [e.originator_version for e in stored] == [1, 2, 3]
    finally:
        recorder.datastore.close()


def test_without_the_horizon_a_subscriber_skips_slow_commits(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: readers that pass any committed position, running transactions or not
    monkeypatch.setattr(event_store, "HORIZON", NO_HORIZON)
    plan = Plan(
        seconds=3.0,
        threads=6,
        shared=tuple(uuid.uuid4() for _ in range(3)),
        seed=random.randrange(10**6),
    )

    # When: the same scenario runs (in this process only: the readers' horizon is
    # patched here, and the writers' positions do not depend on it)
    run = run_scenario(database_url, plan, processes=0)

    # Then: the subscriber missed committed events, for good: it is past them
    committed = committed_by_id(run.attempts)
    seen = {n.id for n in run.subscriber.seen}
    missed = set(committed) - seen
    assert missed
    assert all(position < run.subscriber.seen[-1].id for position in missed)
    # And: among them, slow transactions': others began later and committed first
    slow = {
        i for a in run.attempts if a.slow and a.outcome == "committed" for i in a.ids
    }
    assert missed & slow
    print(
        f"without the horizon: subscriber missed {len(missed)} of {len(committed)},"
        f" {len(missed & slow)} of {len(slow)} from slow transactions; catch-up"
        f" reader missed {len(set(committed) - {n.id for n in run.catch_up.seen})}"
    )


@PATHS
def test_the_largest_append_is_stored_and_a_larger_one_refused_unsent(
    database_url: str, inline: bool
) -> None:
    recorder = make_recorder(database_url, 1, create_table=True, inline=inline)
    try:
        aggregate = uuid.uuid4()
        events = [event(aggregate, v) for v in range(1, event_store.MAX_EVENTS + 2)]

        with pytest.raises(ProgrammingError):
            recorder.insert_events(events)
        assert recorder.select_events(aggregate) == []

        ids = recorder.insert_events(events[:-1]) or ()
        assert len(ids) == event_store.MAX_EVENTS
        stored = recorder.select_events(aggregate)
        assert [e.state for e in stored] == [e.state for e in events[:-1]]
        assert [n.id for n in recorder.select_notifications(0, 2)] == sorted(ids)[:2]
    finally:
        recorder.datastore.close()


def test_an_event_of_megabytes_is_appended_with_its_inline_writes(
    database_url: str,
) -> None:
    # A request this large once stalled the pipeline for ever (unsent at sync).
    recorder = make_recorder(database_url, 1, create_table=True)
    try:
        aggregate = uuid.uuid4()
        state = json.dumps(
            {"token": "big", "sleep": 0, "fail": False, "pad": "x" * 4_000_000}
        )
        done = ThreadPoolExecutor(1).submit(
            recorder.insert_events, [StoredEvent(aggregate, 1, TOPIC, state.encode())]
        )

        assert len(done.result(timeout=20) or ()) == 1
        assert [len(e.state) for e in recorder.select_events(aggregate)] == [len(state)]
    finally:
        recorder.datastore.close()
