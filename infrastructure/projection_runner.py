"""Apply the log to read models: many read models per pass, one transaction a batch."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import Environment

from application.ports import PersonalData
from application.store import AuthEventLog
from infrastructure.event_store import AuthRecorder
from infrastructure.instruments import CAUGHT_UP
from infrastructure.tracing import TRACER

if TYPE_CHECKING:
    from eventsourcing.persistence import Mapper, Notification
    from psycopg import Cursor
    from psycopg.rows import DictRow

    from application.ports import MapperFactory
    from application.projections import ReadModelProjection
    from infrastructure.postgres_views import PostgresReadModel

log = logging.getLogger(__name__)

View = TypeVar("View", bound="PostgresReadModel")
CATCH_UP_BATCH = 1000
# Polling, not LISTEN: the pause bounds the lag of an idle runner, lets a
# batch gather what arrives meanwhile, and keeps polls off bcrypt's cores.
POLL_S = 0.01


@dataclass(frozen=True)
class ReadModelSpec(Generic[View]):
    """A projection version, the view it writes, and the schema it writes into."""

    projection: type[ReadModelProjection[Any]]
    view: type[View]
    schema: str

    @classmethod
    def of(
        cls, projection: type[ReadModelProjection[Any]], view: type[View]
    ) -> ReadModelSpec[View]:
        """The spec of a projection version in its own schema, `<name>_v<version>`."""
        return cls(projection, view, f"{projection.name}_v{projection.version}")

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def version(self) -> int:
        return self.projection.version

    @property
    def consistent(self) -> bool:
        return self.projection.consistent

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


def build_view(
    spec: ReadModelSpec[View],
    env: dict[str, str],
    pool_of: PostgresDatastore | None = None,
) -> View:
    """Construct a projection's view on its schema (opening no connection yet);
    with `pool_of`, it connects through that datastore's pool."""
    factory = InfrastructureFactory[View].construct(
        Environment(spec.projection.name, spec.env(env))
    )
    view = factory.tracking_recorder(spec.view)
    if not isinstance(view, spec.view):
        raise TypeError(f"{spec.projection.name}: expected a {spec.view.__name__}")
    if pool_of is not None:
        view.datastore = PoolShare(pool_of, view.datastore.schema)
    return view


class PoolShare(PostgresDatastore):
    """A datastore's pool (and connection policy) under another schema.

    Every view of a process draws on one pool instead of keeping its own:
    one budget of connections. Closing a share leaves the pool to its owner.
    """

    def __init__(self, owner: PostgresDatastore, schema: str) -> None:
        self.__dict__.update(owner.__dict__)
        self.schema = schema

    def close(self) -> None:
        """The pool is its owner's to close."""


def decode(
    mapper: Mapper[Any],
    app_name: str,
    notifications: Sequence[Notification],
    *,
    fresh: bool = True,
) -> list[tuple[Any, Tracking]]:
    """Domain events and their positions, decoded once for every read model.

    Their data keys are read afresh, unless `fresh` is False: inline, in the
    transaction of the command that just sealed them with the same keys.
    """
    if fresh:
        if not isinstance(mapper, PersonalData):
            raise TypeError("read models read through a mapper of personal data")
        events = mapper.decode_all(notifications)
    else:
        events = [mapper.to_domain_event(n) for n in notifications]
    return [
        (e, Tracking(app_name, n.id))
        for e, n in zip(events, notifications, strict=True)
    ]


class InlineProjections:
    """The consistent read models, applied inside each command's insert transaction.

    Each one is written into its live version, read from the registry after
    the insert: a switch holds the events table's lock, so an insert waits
    for it and then sees the new version. A live version this process has no
    code for refuses the command (a process of an older release, after the
    switch): nothing is stored, and the client may retry elsewhere. Inline
    writes track no position: a version goes live only after it has applied
    every event before the switch (ADR 14).
    """

    LIVE = "SELECT name, live_schema FROM authledger.read_model_versions WHERE inline"

    def __init__(
        self,
        specs: Sequence[ReadModelSpec[Any]],
        env: dict[str, str],
        mapper: Mapper[Any],
        app_name: str,
    ) -> None:
        self._specs = [s for s in specs if s.consistent]
        self._env = {**env, "CREATE_TABLE": "n"}
        self._mapper = mapper
        self._app_name = app_name
        self._projections: dict[str, ReadModelProjection[Any]] = {}

    def __call__(
        self, curs: Cursor[DictRow], notifications: Sequence[Notification]
    ) -> None:
        with TRACER.start_as_current_span("read_models.inline"):
            curs.execute(self.LIVE, prepare=True)
            live = {row["name"]: row["live_schema"] for row in curs.fetchall()}
            events = decode(self._mapper, self._app_name, notifications, fresh=False)
            for name in dict.fromkeys(s.name for s in self._specs):
                if name not in live:
                    continue  # not inline yet: its catch-up applies these events
                projection = self._projection(name, live[name])
                with projection.view.writing(curs, track=False):
                    for event, tracking in events:
                        projection.process_event(event, tracking)

    def _projection(self, name: str, schema: str) -> ReadModelProjection[Any]:
        if schema not in self._projections:
            version = version_of(schema)
            spec = next(
                (s for s in self._specs if s.name == name and s.version == version),
                None,
            )
            if spec is None:
                raise LookupError(f"{schema} is live: this release cannot write it")
            view = build_view(replace(spec, schema=schema), self._env)
            self._projections[schema] = spec.projection(view=view)
        return self._projections[schema]


class Member:
    """One read model version of a group: its projection, and how far it is."""

    def __init__(
        self,
        spec: ReadModelSpec[Any],
        env: dict[str, str],
        app: str,
        pool_of: PostgresDatastore,
    ) -> None:
        self.spec = spec
        self.view: PostgresReadModel = build_view(spec, env, pool_of)
        self.projection = spec.projection(view=self.view)
        self.position = self.view.max_tracking_id(app) or 0
        self.applied = 0
        self.busy_s = 0.0


class GroupRunner:
    """Apply the log to a group of read models: one read, one transaction a batch.

    The batch is whatever is readable, up to `batch_size`: one event when
    idle, a thousand while catching up. Each read model's rows and position
    commit together, so a crash replays the batch: exactly once.
    """

    def __init__(
        self,
        specs: Sequence[ReadModelSpec[Any]],
        url: str,
        env: dict[str, str],
        mapper_of: MapperFactory,
        batch_size: int = CATCH_UP_BATCH,
    ) -> None:
        self.url = url
        self.app = AuthEventLog(env, mapper_of=mapper_of)
        recorder = self.app.recorder
        if not isinstance(recorder, AuthRecorder):
            raise TypeError("the runners read through the AuthRecorder")
        self.recorder = recorder
        self.members = [
            Member(spec, env, self.app.name, recorder.datastore) for spec in specs
        ]
        self.batch_size = batch_size
        self.on_batch: Callable[[GroupRunner], None] | None = None

    @property
    def position(self) -> int:
        return min((m.position for m in self.members), default=0)

    def close(self) -> None:
        self.app.close()

    def step(self) -> int:
        """Apply the next batch to every member; return how many events it held."""
        # One transaction reads the batch and writes it: one commit a batch.
        read_at = time.time()
        with self.recorder.one_transaction():
            page = self.recorder.select_notifications(
                start=self.position, limit=self.batch_size, inclusive_of_start=False
            )
            if page:
                events = decode(self.app.mapper, self.app.name, page)
                with (
                    TRACER.start_as_current_span("read_models.apply") as span,
                    self.recorder.datastore.transaction(commit=True) as curs,
                    curs.connection.pipeline(),
                ):
                    span.set_attribute("authledger.events", len(page))
                    # Safe: rows and positions are lost together, and replayed.
                    curs.execute("SET LOCAL synchronous_commit TO OFF")
                    self.apply(curs, events)
        if len(page) < self.batch_size:  # what had committed when read is applied
            for member in self.members:
                CAUGHT_UP.labels(member.spec.schema).set(read_at)
        if not page:
            return 0
        for member in self.members:
            member.position = max(member.position, page[-1].id)
        if self.on_batch:
            self.on_batch(self)
        return len(page)

    def apply(
        self,
        curs: Cursor[DictRow],
        events: list[tuple[Any, Tracking]],
        members: Sequence[Member] | None = None,
    ) -> None:
        """Apply events each member has not yet applied, through `curs`."""
        for member in self.members if members is None else members:
            started = time.perf_counter()
            with member.view.writing(curs, track=True):
                for event, tracking in events:
                    if tracking.notification_id > member.position:
                        member.projection.process_event(event, tracking)
                        member.applied += 1
            member.busy_s += time.perf_counter() - started

    def follow(self, stopping: threading.Event, checkpoint: Callable[[], bool]) -> None:
        """Apply events as they commit until `stopping`, or `checkpoint()` says stop.

        It polls every POLL_S (appends send no NOTIFY: its lock is held
        through commit). Committed events waiting behind a transaction still
        running are picked up by a later poll. `checkpoint` runs after every
        batch that was not full.
        """
        while not stopping.is_set():
            applied = self.step()
            if applied == self.batch_size:
                continue  # more to read at once
            if checkpoint():
                return
            stopping.wait(POLL_S)
