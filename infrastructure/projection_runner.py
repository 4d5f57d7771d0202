"""Run each projection in at most one process at a time, guarded by an advisory lock."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from application.store import AuthEventLog
from infrastructure.read_model_registry import drop_schema, live_schemas, switch_live

if TYPE_CHECKING:
    from infrastructure.postgres_views import PostgresReadModel

log = logging.getLogger(__name__)

View = TypeVar("View", bound="PostgresReadModel")
CATCH_UP_BATCH = 1000


@dataclass(frozen=True)
class ReadModelSpec(Generic[View]):
    """A projection version, the view it writes, and the schema it writes into."""

    projection: type[Projection[Any]]
    view: type[View]
    schema: str

    @classmethod
    def of(
        cls, projection: type[Projection[Any]], view: type[View]
    ) -> ReadModelSpec[View]:
        """The spec of a projection version in its own schema, `<name>_v<version>`."""
        version: int = getattr(projection, "version", 1)
        return cls(projection, view, f"{projection.name}_v{version}")

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def version(self) -> int:
        return int(getattr(self.projection, "version", 1))

    def rebuild_target(self, live: str) -> ReadModelSpec[View]:
        """A schema other than the live one to rebuild into; the same name every
        time for the same live schema, so a crashed rebuild resumes."""
        base = f"{self.name}_v{self.version}"
        return replace(self, schema=base if live != base else f"{base}_b")

    def env(self, base_env: dict[str, str]) -> dict[str, str]:
        """Point this projection's view (only) at its schema."""
        return {**base_env, f"{self.name.upper()}_POSTGRES_SCHEMA": self.schema}


def version_of(schema: str) -> int:
    """Read the projection version out of a schema name like `users_v2_b`."""
    found = re.search(r"_v(\d+)", schema)
    return int(found.group(1)) if found else 1


@contextmanager
def advisory_lock(url: str, key: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold a session-level advisory lock while the block runs (waits for it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield conn


class ProjectionWorker:
    """Keep one projection running here while this process holds its lock.

    Every API process starts workers; the one that takes a schema's advisory
    lock runs its projection, the others stand by and take over within
    `retry_s` if it dies. An error stops the runner, is kept for status and
    readiness, and the runner restarts from its tracked position.

    `target` says what to run each time the worker (re)starts: the live
    schema, which a switch may change, or a fixed schema being built. A
    worker building a schema switches it live once it has caught up.
    """

    def __init__(
        self,
        target: Callable[[], ReadModelSpec[Any] | None],
        url: str,
        env: dict[str, str],
        *,
        builds: bool = False,
        retry_s: float = 1.0,
        batch_size: int = CATCH_UP_BATCH,
    ) -> None:
        self._target = target
        self._url = url
        self._env = env
        self._builds = builds
        self._retry_s = retry_s
        self._batch_size = batch_size
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.spec: ReadModelSpec[Any] | None = None
        self.is_running = False
        self.last_error: str | None = None

    @classmethod
    def building(
        cls, spec: ReadModelSpec[Any], url: str, env: dict[str, str]
    ) -> ProjectionWorker:
        """A worker that builds `spec`'s schema and switches it live when caught up."""
        return cls(lambda: spec, url, env, builds=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Ask the worker to stop; with `wait`, return once it has."""
        self._stopping.set()
        if wait and self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.spec = self._target()
                if self.spec is not None:
                    self._run_if_leader(self.spec)
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("projection %s stopped", self.spec and self.spec.schema)
            finally:
                self.is_running = False
            self._stopping.wait(self._retry_s)

    def _run_if_leader(self, spec: ReadModelSpec[Any]) -> None:
        key = f"authledger.projection.{spec.schema}"
        with psycopg.connect(self._url, autocommit=True) as lock_conn:
            row = lock_conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
            ).fetchone()
            if row and row[0]:
                self._run(spec, lock_conn)
            else:  # standing by is healthy: another process runs it
                self.last_error = None

    def _run(
        self, spec: ReadModelSpec[Any], lock_conn: psycopg.Connection[Any]
    ) -> None:
        self.is_running = True
        catch_up_in_batches(spec, spec.env(self._env), self._stopping, self._batch_size)
        self.last_error = None  # whatever failed before, the backlog is applied
        with ProjectionRunner(
            application_class=AuthEventLog,
            projection_class=spec.projection,
            view_class=spec.view,
            env=spec.env(self._env),
        ) as runner:
            while not self._stopping.is_set() and not runner.is_interrupted.is_set():
                runner.run_forever(timeout=0.5)
                self.last_error = None
                # Losing the lock connection loses the lock: stop before another
                # process starts a second runner on the same tables.
                live = live_schemas(lock_conn).get(spec.name)
                caught_up = _caught_up(runner)
                if not caught_up:
                    _nudge(runner, lock_conn)
                if self._builds and live != spec.schema and caught_up:
                    self._switch(spec, lock_conn)
                elif not self._builds and live != spec.schema:
                    return  # switched away: restart on the new live schema

    def _switch(self, spec: ReadModelSpec[Any], conn: psycopg.Connection[Any]) -> None:
        replaced = switch_live(conn, spec.name, spec.view.table, spec.schema)
        log.warning("read model %s now served from %s", spec.name, spec.schema)
        if replaced and replaced != spec.schema:
            # Let the old schema's runner notice the switch and stop first.
            self._stopping.wait(self._retry_s * 3)
            drop_schema(conn, replaced)


def catch_up_in_batches(
    spec: ReadModelSpec[Any],
    env: dict[str, str],
    stopping: threading.Event,
    batch_size: int = CATCH_UP_BATCH,
) -> None:
    """Apply the log up to its current head, many events per transaction.

    The live runner applies one event per transaction, which is right for a
    trickle and slow for a backlog (a rebuild, a long outage): this reads the
    backlog page by page and commits each page with its last position.
    """
    app = AuthEventLog(env)
    view = (
        InfrastructureFactory[Any]
        .construct(Environment(spec.name, env))
        .tracking_recorder(spec.view)
    )
    try:
        projection = spec.projection(view=view)
        position = view.max_tracking_id(app.name) or 0
        while not stopping.is_set():
            page = app.recorder.select_notifications(
                start=position + 1, limit=batch_size
            )
            if not page:
                return
            with view.batch():
                for notification in page:
                    projection.process_event(
                        app.mapper.to_domain_event(notification),
                        Tracking(app.name, notification.id),
                    )
            position = page[-1].id
    finally:
        view.datastore.close()
        app.close()


def _nudge(runner: ProjectionRunner[Any, Any], conn: psycopg.Connection[Any]) -> None:
    """Wake the runner's subscription with a NOTIFY of our own.

    eventsourcing 9.5.6 starts LISTEN in one thread while another pulls what
    is already stored; an event committed between the two is never notified,
    and the runner would wait for the next write. Behind the head, we notify.
    """
    channel = runner.app.recorder.channel_name
    conn.execute(SQL("NOTIFY {}").format(Identifier(channel)))


def _caught_up(runner: ProjectionRunner[Any, Any]) -> bool:
    head = runner.app.recorder.max_notification_id() or 0
    position = runner.view.max_tracking_id(runner.app.name) or 0
    return position >= head
