"""The composition root: the only place that wires settings, database and use cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from application.auth import AuthApplication
from application.projections import (
    ActiveSessionsProjection,
    LoginHistoryProjection,
    UserDirectoryProjection,
)
from infrastructure.database import database_url, ensure_schema, eventsourcing_env
from infrastructure.passwords import BcryptPasswordHasher
from infrastructure.postgres_views import (
    PostgresActiveSessionsView,
    PostgresLoginHistoryView,
    PostgresReadModel,
    PostgresUserDirectoryView,
)
from infrastructure.projection_runner import (
    ProjectionWorker,
    ReadModelSpec,
    View,
    advisory_lock,
)
from infrastructure.settings import Settings, load_secrets
from infrastructure.tokens import JwtTokens

USER_DIRECTORY = ReadModelSpec(UserDirectoryProjection, PostgresUserDirectoryView)
ACTIVE_SESSIONS = ReadModelSpec(ActiveSessionsProjection, PostgresActiveSessionsView)
LOGIN_HISTORY = ReadModelSpec(LoginHistoryProjection, PostgresLoginHistoryView)
READ_MODELS: tuple[ReadModelSpec[Any], ...] = (
    USER_DIRECTORY,
    ACTIVE_SESSIONS,
    LOGIN_HISTORY,
)

# Runners need few connections (a subscription and a writer each), and find
# their tables made by build_services under the setup lock, not racing for it.
RUNNER_ENV = {
    "POSTGRES_POOL_SIZE": "1",
    "POSTGRES_MAX_OVERFLOW": "2",
    "CREATE_TABLE": "n",
}


@dataclass
class Services:
    """Everything an interface needs, built once per process."""

    settings: Settings
    database_url: str
    app: AuthApplication
    users: PostgresUserDirectoryView
    sessions: PostgresActiveSessionsView
    history: PostgresLoginHistoryView
    tokens: JwtTokens
    workers: list[ProjectionWorker] = field(default_factory=list)

    @property
    def views(self) -> tuple[PostgresReadModel, ...]:
        return (self.users, self.sessions, self.history)

    def start_projections(self) -> None:
        """Start a standby-or-run worker per projection in this process."""
        env = {**eventsourcing_env(self.database_url, 1, 2), **RUNNER_ENV}
        self.workers = [
            ProjectionWorker(spec, self.database_url, env) for spec in READ_MODELS
        ]
        for worker in self.workers:
            worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()
        for view in self.views:
            view.datastore.close()


def build_view(spec: ReadModelSpec[View], env: dict[str, str]) -> View:
    """Construct a projection's view as its runner does: same schema, same table."""
    factory = InfrastructureFactory[View].construct(
        Environment(spec.projection.name, spec.env(env))
    )
    view = factory.tracking_recorder(spec.view)
    if not isinstance(view, spec.view):
        raise TypeError(f"{spec.projection.name}: expected a {spec.view.__name__}")
    return view


def build_services(settings: Settings) -> Services:
    """Connect to the database (embedded by default), create tables, wire use cases."""
    url = database_url(settings)
    secrets = load_secrets(settings)
    env = eventsourcing_env(url, settings.db_pool_size, settings.db_max_overflow)
    # Each view has its own pool; reads are short, so one kept connection each.
    view_env = {**env, "POSTGRES_POOL_SIZE": "1"}
    # Concurrent CREATE TABLE IF NOT EXISTS can still collide: one process at a time.
    with advisory_lock(url, "authledger.setup"):
        for spec in READ_MODELS:
            ensure_schema(url, spec.schema)
        users = build_view(USER_DIRECTORY, view_env)
        sessions = build_view(ACTIVE_SESSIONS, view_env)
        history = build_view(LOGIN_HISTORY, view_env)
        app = AuthApplication(
            env,
            passwords=BcryptPasswordHasher(
                secrets.password_pepper, settings.bcrypt_rounds
            ),
            read_models=(users, sessions, history),
            sessions=sessions,
            policy=settings.auth_policy(),
        )
    tokens = JwtTokens(
        secrets.jwt_secret,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl_s,
    )
    services = Services(settings, url, app, users, sessions, history, tokens)
    if settings.run_projections:
        services.start_projections()
    return services
