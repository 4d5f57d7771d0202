"""Run each projection in at most one process at a time, guarded by an advisory lock."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from eventsourcing.projection import Projection, ProjectionRunner

from application.auth import AuthEventLog

if TYPE_CHECKING:
    from collections.abc import Iterator

    from infrastructure.postgres_views import PostgresReadModel

log = logging.getLogger(__name__)


View = TypeVar("View", bound="PostgresReadModel")


@dataclass(frozen=True)
class ReadModelSpec(Generic[View]):
    """A projection, the view it writes, and the schema of its current version."""

    projection: type[Projection[Any]]
    view: type[View]

    @property
    def schema(self) -> str:
        version: int = getattr(self.projection, "version", 1)
        return f"{self.projection.name}_v{version}"

    def env(self, base_env: dict[str, str]) -> dict[str, str]:
        """Point this projection's view (only) at its versioned schema."""
        return {
            **base_env,
            f"{self.projection.name.upper()}_POSTGRES_SCHEMA": self.schema,
        }


@contextmanager
def advisory_lock(url: str, key: str) -> Iterator[None]:
    """Hold a session-level advisory lock while the block runs (waits for it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield


class ProjectionWorker:
    """Keep one projection running here while this process holds its lock.

    Every API process starts a worker per projection; the one that takes the
    advisory lock runs the projection, the others stand by and take over
    within `retry_s` if it dies. An error stops the runner, is kept for
    status and readiness, and the runner restarts from its tracked position.
    """

    def __init__(
        self,
        spec: ReadModelSpec[Any],
        url: str,
        env: dict[str, str],
        retry_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self._url = url
        self._env = spec.env(env)
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"projection-{spec.projection.name}", daemon=True
        )
        self.is_running = False
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as lock_conn:
                    if self._try_lock(lock_conn):
                        self._run_while_locked(lock_conn)
                    else:  # standing by is healthy: another process runs it
                        self.last_error = None
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("projection %s stopped", self.spec.projection.name)
            finally:
                self.is_running = False
            self._stopping.wait(self._retry_s)

    def _try_lock(self, conn: psycopg.Connection[Any]) -> bool:
        key = f"authledger.projection.{self.spec.schema}"
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchone()
        return bool(row and row[0])

    def _run_while_locked(self, lock_conn: psycopg.Connection[Any]) -> None:
        with ProjectionRunner(
            application_class=AuthEventLog,
            projection_class=self.spec.projection,
            view_class=self.spec.view,
            env=self._env,
        ) as runner:
            self.is_running = True
            while not self._stopping.is_set() and not runner.is_interrupted.is_set():
                runner.run_forever(timeout=0.5)
                self.last_error = None
                # Losing the lock connection loses the lock: stop before another
                # process starts a second runner on the same tables.
                lock_conn.execute("SELECT 1")
