"""The read models' whole life: prepare, run, status, rebuild, switch and drop.

`serve`, `projections run|status|rebuild` and the tests all go through
ReadModels (ADR 14 says why each read model is of its kind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from infrastructure.database import connect, ensure_schema
from infrastructure.instruments import PROJECTION_FAILURES
from infrastructure.mailer import setup_deliveries
from infrastructure.projection_runner import (
    GroupRunner,
    InlineProjections,
    Member,
    ReadModelSpec,
    build_view,
    decode,
    version_of,
)
from infrastructure.read_model_registry import (
    LiveVersion,
    drop_schema,
    live_versions,
    position_in,
    row_count,
    schemas_of,
    setup_registry,
    switch_live,
)
from infrastructure.webhooks import setup_webhook_deliveries

if TYPE_CHECKING:
    import psycopg
    from eventsourcing.persistence import Mapper

    from application.ports import MapperFactory
    from infrastructure.event_store import AuthRecorder

log = logging.getLogger(__name__)

# Runners need few connections, and find their tables made by `prepare`.
RUNNER_ENV = {
    "POSTGRES_POOL_SIZE": "1",
    "POSTGRES_MAX_OVERFLOW": "1",
    "CREATE_TABLE": "n",
}
LAGGING_LOCK = "authledger.projection.lagging"
# How long a replaced version is kept after a switch, for its last readers.
DROP_GRACE_S = 3.0
# Lag is counted in events, up to this many (a count of millions costs seconds).
LAG_COUNT_LIMIT = 1_000_000
# How often the lagging group looks for a switched version.
CHECK_EVERY_S = 0.5


@dataclass(frozen=True)
class VersionStatus:
    name: str
    schema: str
    version: int
    kind: str
    state: str
    position: int
    lag: int
    rows: int


@dataclass
class BuildReport:
    """What a build applied: events per read model, and the time it spent on each."""

    seconds: float = 0.0
    events: int = 0
    per_model: dict[str, tuple[int, float]] = field(default_factory=dict)


class ReadModels:
    """Every version of every read model this code can build, in one database."""

    def __init__(
        self,
        url: str,
        specs: Sequence[ReadModelSpec[Any]],
        env: dict[str, str],
        mapper_of: MapperFactory,
    ) -> None:
        self.url = url
        self.specs = tuple(specs)
        self.mapper_of = mapper_of
        self.env = {**env, **RUNNER_ENV}

    def connect(self) -> psycopg.Connection[Any]:
        return connect(self.url, "authledger-projections")

    def newest(self) -> dict[str, ReadModelSpec[Any]]:
        """The newest version of each read model."""
        newest: dict[str, ReadModelSpec[Any]] = {}
        for spec in self.specs:
            if spec.name not in newest or spec.version > newest[spec.name].version:
                newest[spec.name] = spec
        return newest

    def live(self) -> dict[str, LiveVersion]:
        with self.connect() as conn:
            return live_versions(conn)

    def live_spec(
        self, name: str, live: dict[str, LiveVersion] | None = None
    ) -> ReadModelSpec[Any] | None:
        """The spec that writes the live schema of `name`, if this code has it."""
        version = (live if live is not None else self.live()).get(name)
        for spec in self.specs:
            if (
                version
                and spec.name == name
                and spec.version == version_of(version.schema)
            ):
                return replace(spec, schema=version.schema)
        return None

    def create_tables(self, spec: ReadModelSpec[Any]) -> None:
        ensure_schema(self.url, spec.schema)
        build_view(spec, {**self.env, "CREATE_TABLE": "y"}).datastore.close()

    # prepare ---------------------------------------------------------------

    def prepare(self) -> None:
        """Create what is missing and make every consistent read model inline.

        Call it holding the setup lock, before any command is served. On a
        fresh database the newest versions go live at once; a consistent
        version not yet written inline (a database of wave 1) first applies
        the log it missed, then is switched to inline under the events lock.
        """
        with self.connect() as conn:
            setup_registry(conn)
            setup_deliveries(conn)
            setup_webhook_deliveries(conn)
            live = live_versions(conn)
        for name, spec in self.newest().items():
            if name not in live:
                self.create_tables(spec)
                if not spec.consistent:
                    with self.connect() as conn:
                        switch_live(
                            conn, name, spec.view.table, spec.schema, inline=False
                        )
            elif spec.version > version_of(live[name].schema):
                self.create_tables(spec)  # built beside the live one by a worker
            current = spec if name not in live else self.live_spec(name, live)
            if spec.consistent and current and not live.get(name, _NOT_INLINE).inline:
                self.build([current])

    def inline_projections(
        self, mapper: Mapper[Any], app_name: str
    ) -> InlineProjections:
        """What the recorder applies in every insert transaction."""
        return InlineProjections(self.specs, self.env, mapper, app_name)

    # run -------------------------------------------------------------------

    def workers(self) -> list[ProjectionWorker]:
        """One worker for the live lagging read models, and one that builds
        every newer version in one pass: its connections are budgeted once."""
        live = self.live()
        started: list[ProjectionWorker] = [LaggingWorker(self)]
        newer = [
            newest
            for name, newest in self.newest().items()
            if (current := self.live_spec(name, live)) is None
            or newest.version > current.version
        ]
        if newer:
            started.append(BuildWorker(self, newer))
        return started

    def lagging_group(
        self, live: dict[str, LiveVersion] | None = None
    ) -> list[ReadModelSpec[Any]]:
        live = self.live() if live is None else live
        specs = (self.live_spec(name, live) for name in self.newest())
        return [s for s in specs if s is not None and not s.consistent]

    # switch and drop -------------------------------------------------------

    def switch(
        self, runner: GroupRunner, member: Member, conn: psycopg.Connection[Any]
    ) -> str | None:
        """Make `member`'s version live; return the schema it replaces.

        A lagging one switches at once. A consistent one must not miss what
        commands write meanwhile: under the events table's EXCLUSIVE lock no
        append is in flight, so it applies the rest of the log, and the
        switch commits before the next append, which then writes it inline.
        """
        spec = member.spec
        if not spec.consistent:
            return switch_live(
                conn, spec.name, spec.view.table, spec.schema, inline=False
            )
        with conn.transaction(), conn.cursor(row_factory=dict_row) as curs:
            runner.recorder.lock_appends(curs)
            tail = runner.recorder.select_all_after(curs, member.position)
            runner.apply(
                curs, decode(runner.app.mapper, runner.app.name, tail), [member]
            )
            replaced = switch_live(
                conn, spec.name, spec.view.table, spec.schema, inline=True
            )
        if tail:
            member.position = tail[-1].id
        return replaced

    # status and rebuild ----------------------------------------------------

    def status(self, recorder: AuthRecorder, app_name: str) -> list[VersionStatus]:
        """Every version of every read model in the database, and how far along."""
        head = recorder.max_notification_id() or 0
        statuses = []
        with self.connect() as conn:
            live = live_versions(conn)
            for name, newest in self.newest().items():
                for schema in schemas_of(conn, name):
                    version = live.get(name)
                    is_live = version is not None and version.schema == schema
                    state = "live" if is_live else "building"
                    if not is_live and version_of(schema) < newest.version:
                        state = "retired"
                    inline = is_live and version is not None and version.inline
                    position = (
                        head if inline else position_in(conn, schema, name, app_name)
                    )
                    lag = (
                        0 if inline else recorder.count_after(position, LAG_COUNT_LIMIT)
                    )
                    statuses.append(
                        VersionStatus(
                            name=name,
                            schema=schema,
                            version=version_of(schema),
                            kind="consistent" if newest.consistent else "lagging",
                            state=state,
                            position=position,
                            lag=lag,
                            rows=row_count(conn, schema, newest.view.table),
                        )
                    )
        return statuses

    def lag(self, recorder: AuthRecorder, app_name: str, at_most: int) -> int:
        """The most events any live lagging read model has still to apply,
        asked on a request connection: held to the caller's deadline."""
        with recorder.datastore.get_connection() as conn:
            live = live_versions(conn)
            positions = [
                position_in(conn, s.schema, s.name, app_name)
                for s in self.lagging_group(live)
            ]
        return max((recorder.count_after(p, at_most) for p in positions), default=0)

    def rebuild_targets(self, names: Sequence[str]) -> list[ReadModelSpec[Any]]:
        """Fresh schemas beside the live ones, with their tables made."""
        live = self.live()
        newest = self.newest()
        targets = []
        for name in names:
            if name not in newest:
                raise KeyError(name)
            current = self.live_spec(name, live) or newest[name]
            target = current.rebuild_target(live[name].schema if name in live else "")
            self.create_tables(target)
            targets.append(target)
        return targets

    def build(
        self,
        targets: Sequence[ReadModelSpec[Any]],
        progress: Callable[[GroupRunner], None] | None = None,
    ) -> BuildReport:
        """Build these versions from the log in one pass, switch each live, drop
        what they replace. Interrupted, it resumes from their positions."""
        worker = BuildWorker(self, targets, progress=progress)
        started = time.monotonic()
        worker.run_here()
        worker.report.seconds = time.monotonic() - started
        return worker.report


_NOT_INLINE = LiveVersion(schema="", inline=False)


class ProjectionWorker:
    """Keep a group of read models running here while this process holds its lock.

    Every API process starts workers; the one that takes a group's advisory
    lock runs it, the others stand by and take over within `retry_s` if it
    dies. An error stops the runner, is kept for status and readiness, and
    the runner restarts from its tracked positions.
    """

    kind = "projection"  # a label of the failures' metric

    def __init__(self, models: ReadModels, retry_s: float = 1.0) -> None:
        self.models = models
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.is_running = False
        self.is_done = False
        self.last_error: str | None = None
        self.label = ""
        self.on_batch: Callable[[GroupRunner], None] | None = None

    def lock_key(self) -> str:
        raise NotImplementedError

    def group(self, live: dict[str, LiveVersion]) -> list[ReadModelSpec[Any]]:
        """What to run, given the live versions (read on the lock's connection:
        a worker opens no connection beyond its budget)."""
        raise NotImplementedError

    def checkpoint(
        self, runner: GroupRunner, lock_conn: psycopg.Connection[Any]
    ) -> bool:
        """Called when caught up; True stops this run (to restart, or for good)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Ask the worker to stop; with `wait`, return once it has."""
        self._stopping.set()
        if wait and self._thread.is_alive():
            self._thread.join()

    def run_here(self) -> None:
        """Run in the calling thread until done (a build), or stopped."""
        self._loop()
        if self.last_error and not self.is_done:
            raise RuntimeError(self.last_error)

    def _loop(self) -> None:
        while not self._stopping.is_set() and not self.is_done:
            try:
                self._run_if_leader()
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                PROJECTION_FAILURES.labels(self.kind).inc()
                log.exception("read models %s stopped", self.label)
                if threading.current_thread() is not self._thread:
                    return
            finally:
                self.is_running = False
            if not self.is_done:
                self._stopping.wait(self._retry_s)

    def _run_if_leader(self) -> None:
        with self.models.connect() as lock_conn:
            row = lock_conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                (self.lock_key(),),
            ).fetchone()
            if not (row and row[0]):
                self.last_error = None  # standing by is healthy: another runs it
                return
            specs = self.group(live_versions(lock_conn))
            self.label = ", ".join(s.schema for s in specs)
            if not specs:
                if not self.is_done:
                    self._stopping.wait(self._retry_s)
                return
            runner = GroupRunner(
                specs, self.models.url, self.models.env, self.models.mapper_of
            )
            runner.on_batch = self.on_batch
            try:
                self.is_running = True
                runner.follow(
                    self._stopping, lambda: self._checkpoint(runner, lock_conn)
                )
            finally:
                runner.close()

    def _checkpoint(
        self, runner: GroupRunner, lock_conn: psycopg.Connection[Any]
    ) -> bool:
        self.last_error = None  # whatever failed before, the backlog is applied
        return self.checkpoint(runner, lock_conn)


class LaggingWorker(ProjectionWorker):
    """The live lagging read models, all in one group."""

    kind = "lagging"

    def lock_key(self) -> str:
        return LAGGING_LOCK

    def group(self, live: dict[str, LiveVersion]) -> list[ReadModelSpec[Any]]:
        return self.models.lagging_group(live)

    def __init__(self, models: ReadModels) -> None:
        super().__init__(models)
        self._checked_at = 0.0

    def checkpoint(
        self, runner: GroupRunner, lock_conn: psycopg.Connection[Any]
    ) -> bool:
        if time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return False
        self._checked_at = time.monotonic()
        # Also proves the lock's connection alive: losing it loses the lock.
        live = live_versions(lock_conn)
        running = {m.spec.name: m.spec.schema for m in runner.members}
        return any(
            live.get(name, _NOT_INLINE).schema != s for name, s in running.items()
        ) or (len(running) != len(self.group(live)))


class BuildWorker(ProjectionWorker):
    """Build versions from the log, switch each live once caught up, drop the old."""

    kind = "build"

    def __init__(
        self,
        models: ReadModels,
        targets: Sequence[ReadModelSpec[Any]],
        progress: Callable[[GroupRunner], None] | None = None,
    ) -> None:
        super().__init__(models)
        self.targets = list(targets)
        self.on_batch = progress
        self._switched: set[str] = set()
        self._replaced: list[str] = []
        self.report = BuildReport()

    def lock_key(self) -> str:
        return "authledger.projection.build." + ",".join(t.schema for t in self.targets)

    def group(self, live: dict[str, LiveVersion]) -> list[ReadModelSpec[Any]]:
        """What is left to build: not switched here, nor live already.

        A standby that takes the lock after another process switched a
        version must not build it again: a consistent one is written inline
        from the switch on, and tracks no position past it.
        """

        def switched(target: ReadModelSpec[Any]) -> bool:
            version = live.get(target.name, _NOT_INLINE)
            return version.schema == target.schema and (
                version.inline or not target.consistent
            )

        left = [
            t
            for t in self.targets
            if t.schema not in self._switched and not switched(t)
        ]
        if not left:
            self.is_done = True
        return left

    def checkpoint(
        self, runner: GroupRunner, lock_conn: psycopg.Connection[Any]
    ) -> bool:
        for member in runner.members:
            replaced = self.models.switch(runner, member, lock_conn)
            log.warning(
                "read model %s now served from %s", member.spec.name, member.spec.schema
            )
            self._switched.add(member.spec.schema)
            if replaced and replaced != member.spec.schema:
                self._replaced.append(replaced)
            self.report.per_model[member.spec.name] = (member.applied, member.busy_s)
            self.report.events = max(self.report.events, member.applied)
        # Let the old versions' runners and readers notice the switch first.
        if self._replaced:
            self._stopping.wait(DROP_GRACE_S)
        for schema in self._replaced:
            drop_schema(lock_conn, schema)
        self.is_done = True
        return True
