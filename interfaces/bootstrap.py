"""The composition root: the only place that wires settings, database and use cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import Environment

from application.account_mail import AccountMail
from application.auth import AuthApplication
from application.projections import (
    ActiveSessionsProjection,
    LoginHistoryProjection,
    MailOutboxProjection,
    UserDirectoryProjection,
)
from infrastructure.database import (
    database_url,
    ensure_schema,
    eventsourcing_env,
    protect_event_log,
)
from infrastructure.mail_tokens import HmacMailTokens
from infrastructure.mailer import (
    FileSender,
    Mailer,
    MailSender,
    SmtpSender,
    setup_deliveries,
)
from infrastructure.passwords import BcryptPasswordHasher
from infrastructure.postgres_views import (
    LivePositions,
    PostgresActiveSessionsView,
    PostgresLoginHistoryView,
    PostgresMailOutboxView,
    PostgresReadModel,
    PostgresUserDirectoryView,
)
from infrastructure.projection_runner import (
    ProjectionWorker,
    ReadModelSpec,
    View,
    advisory_lock,
    version_of,
)
from infrastructure.read_model_registry import live_schemas, setup_registry, switch_live
from infrastructure.settings import InsecureSettingsError, Settings, load_secrets
from infrastructure.tokens import JwtTokens

USER_DIRECTORY = ReadModelSpec.of(UserDirectoryProjection, PostgresUserDirectoryView)
ACTIVE_SESSIONS = ReadModelSpec.of(ActiveSessionsProjection, PostgresActiveSessionsView)
LOGIN_HISTORY = ReadModelSpec.of(LoginHistoryProjection, PostgresLoginHistoryView)
MAIL_OUTBOX = ReadModelSpec.of(MailOutboxProjection, PostgresMailOutboxView)
# Every version of each read model the code can build, oldest first. To change
# a read model, add its next version here and keep the previous one for one
# release: the new one is built beside it and switched to once caught up.
READ_MODELS: tuple[ReadModelSpec[Any], ...] = (
    USER_DIRECTORY,
    ACTIVE_SESSIONS,
    LOGIN_HISTORY,
    MAIL_OUTBOX,
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
    positions: LivePositions
    tokens: JwtTokens
    mail: AccountMail
    read_models: tuple[ReadModelSpec[Any], ...] = READ_MODELS
    mailer: Mailer | None = None
    workers: list[ProjectionWorker] = field(default_factory=list)

    @property
    def views(self) -> tuple[PostgresReadModel, ...]:
        return (self.users, self.sessions, self.history)

    def live_spec(self, name: str) -> ReadModelSpec[Any] | None:
        """The spec that writes the live schema of `name`, if this code has it."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            live = live_schemas(conn).get(name)
        for spec in self.read_models:
            if live and spec.name == name and spec.version == version_of(live):
                return replace(spec, schema=live)
        return None

    def start_projections(self) -> None:
        """Start workers: one per live read model, one per newer version to build."""
        env = {**eventsourcing_env(self.database_url, 1, 2), **RUNNER_ENV}
        url = self.database_url
        started = []
        for name, newest in newest_versions(self.read_models).items():
            started.append(ProjectionWorker(partial(self.live_spec, name), url, env))
            live = self.live_spec(name)
            if live is None or newest.version > live.version:
                started.append(ProjectionWorker.building(newest, url, env))
        for worker in started:
            worker.start()
        self.workers.extend(started)

    def start_mailer(self) -> None:
        """Send the outbox's mail from here, when no other process does."""
        self.mailer = Mailer(
            self.database_url,
            mail_sender(self.settings),
            self.mail.tokens,
            self.settings.mail_from,
            self.settings.public_url,
        )
        self.mailer.start()

    def close(self) -> None:
        if self.mailer:
            self.mailer.stop()
        for worker in self.workers:
            worker.stop(wait=False)
        for worker in self.workers:
            worker.stop()
        self.app.close()
        for view in self.views:
            view.datastore.close()


def newest_versions(
    specs: Sequence[ReadModelSpec[Any]],
) -> dict[str, ReadModelSpec[Any]]:
    """The newest version of each read model."""
    newest: dict[str, ReadModelSpec[Any]] = {}
    for spec in specs:
        if spec.name not in newest or spec.version > newest[spec.name].version:
            newest[spec.name] = spec
    return newest


def build_view(spec: ReadModelSpec[View], env: dict[str, str]) -> View:
    """Construct a projection's view as its runner does: same schema, same table."""
    factory = InfrastructureFactory[View].construct(
        Environment(spec.projection.name, spec.env(env))
    )
    view = factory.tracking_recorder(spec.view)
    if not isinstance(view, spec.view):
        raise TypeError(f"{spec.projection.name}: expected a {spec.view.__name__}")
    return view


def prepare_read_models(
    url: str, env: dict[str, str], specs: Sequence[ReadModelSpec[Any]]
) -> None:
    """Create the registry and the tables of each newest version.

    On a fresh database the newest versions go live at once; otherwise they
    are built beside the live ones by the workers. Call it holding the setup lock.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        setup_registry(conn)
        setup_deliveries(conn)
        live = live_schemas(conn)
        for spec in newest_versions(specs).values():
            if spec.name in live and spec.version <= version_of(live[spec.name]):
                continue
            ensure_schema(url, spec.schema)
            build_view(spec, env).datastore.close()
            if spec.name not in live:
                switch_live(conn, spec.name, spec.view.table, spec.schema)


def build_services(
    settings: Settings, read_models: tuple[ReadModelSpec[Any], ...] = READ_MODELS
) -> Services:
    """Connect to the database (embedded by default), create tables, wire use cases."""
    url = database_url(settings)
    secrets = load_secrets(settings)
    env = eventsourcing_env(url, settings.db_pool_size, settings.db_max_overflow)
    # Views here only query read_models.<table>, whichever schema is live.
    query_env = {**env, "POSTGRES_POOL_SIZE": "1", "CREATE_TABLE": "n"}
    users = build_view(USER_DIRECTORY, query_env)
    sessions = build_view(ACTIVE_SESSIONS, query_env)
    history = build_view(LOGIN_HISTORY, query_env)
    positions = LivePositions(users.datastore)
    # Concurrent CREATE TABLE IF NOT EXISTS can still collide: one process at a time.
    with advisory_lock(url, "authledger.setup"):
        prepare_read_models(url, env, read_models)
        app = AuthApplication(
            env,
            passwords=BcryptPasswordHasher(
                secrets.password_pepper, settings.bcrypt_rounds
            ),
            positions=positions,
            sessions=sessions,
            policy=settings.auth_policy(),
        )
        recorder = app.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            raise TypeError("authledger keeps its events in PostgreSQL")
        protect_event_log(url, recorder.datastore.schema, recorder.events_table_name)
    tokens = JwtTokens(
        secrets.jwt_secret,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl_s,
    )
    mail = AccountMail(
        app,
        HmacMailTokens(secrets.jwt_secret),
        settings.mail_policy(),
        settings.mail_throttle(),
    )
    services = Services(
        settings,
        url,
        app,
        users,
        sessions,
        history,
        positions,
        tokens,
        mail,
        read_models,
    )
    if settings.run_projections:
        services.start_projections()
    if settings.run_mailer:
        services.start_mailer()
    return services


def mail_sender(settings: Settings) -> MailSender:
    """SMTP when a host is set; else, outside production, .eml files in the data dir."""
    if settings.smtp_host:
        password = settings.smtp_password
        return SmtpSender(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_tls,
            settings.smtp_user,
            password.get_secret_value() if password else None,
        )
    if settings.env == "production":
        raise InsecureSettingsError("AUTHLEDGER_SMTP_HOST is required in production")
    return FileSender(settings.data_dir / "mail")
