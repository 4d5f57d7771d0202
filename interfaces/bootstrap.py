"""The composition root: the only place that wires settings, database and use cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from eventsourcing.postgres import PostgresAggregateRecorder

from application.account_mail import AccountMail
from application.auth import AuthApplication
from application.feed import EventFeed
from application.mfa import SecondFactor
from application.projections import (
    ActiveSessionsProjection,
    ActiveSessionsProjectionV1,
    LoginHistoryProjection,
    MailOutboxProjection,
    UserDirectoryProjection,
    UserDirectoryProjectionV1,
    UserDirectoryProjectionV2,
)
from application.signing_keys import SigningKeyRing
from application.store import AuthEventLog
from application.upgrades import (
    fold_email_claims,
    forget_legacy_streams,
    is_sealed,
    key_email_claims,
    legacy_streams_forgotten,
    seal_personal_data,
    start_admin_roster,
)
from application.webhooks import Webhooks
from infrastructure.data_keys import (
    SealingMapper,
    check_key_encryption_key,
    check_key_table,
    create_key_table,
    drop_stored_streams,
    postgres_sealing,
    seal_stored_personal_data,
)
from infrastructure.database import (
    EventTables,
    connect,
    database_url,
    eventsourcing_env,
    protect_event_log,
)
from infrastructure.db_roles import check_append_only, grant_app_role, owns_event_log
from infrastructure.event_store import AuthRecorder
from infrastructure.instruments import PrometheusMeter
from infrastructure.mail_tokens import HmacMailTokens
from infrastructure.mailer import FileSender, Mailer, MailSender, SmtpSender
from infrastructure.password_screen import ZxcvbnScreen
from infrastructure.passwords import BcryptPasswordHasher
from infrastructure.periodic import Periodic
from infrastructure.postgres_views import (
    PostgresActiveSessionsView,
    PostgresActiveSessionsViewV1,
    PostgresLoginHistoryView,
    PostgresMailOutboxView,
    PostgresUserDirectoryView,
    PostgresUserDirectoryViewV1,
    PostgresUserDirectoryViewV2,
)
from infrastructure.projection_runner import ReadModelSpec, build_view
from infrastructure.read_model_lifecycle import ProjectionWorker, ReadModels
from infrastructure.settings import (
    InsecureSettingsError,
    Secrets,
    Settings,
    derive_key,
    load_secrets,
)
from infrastructure.signing_keys import KeyCipher, LiveKeyRing, SealedKeyMaker
from infrastructure.tokens import LEEWAY_S, JwtTokens
from infrastructure.totp import Totp
from infrastructure.webhooks import (
    Destinations,
    RetryPolicy,
    SealedWebhookSecrets,
    WebhookDispatcher,
)

if TYPE_CHECKING:
    from application.ports import MapperFactory

# Expired sessions ended per sweep, and how often a process sweeps.
SWEEP_BATCH = 500
SWEEP_INTERVAL_S = 60.0
SETUP_LOCK = "authledger.setup"
# The connections of a process, by user (see request_connections).
PROBE_CONNECTIONS = 1
CALLER_CONNECTIONS = 2  # the authenticated requests' reads, on the event loop
SETUP_CONNECTIONS = 1
MAILER_CONNECTIONS = 1
WEBHOOK_CONNECTIONS = 3  # the dispatcher's lock, and its pool of two
PROJECTION_CONNECTIONS = 3
BUILD_CONNECTIONS = 3
REQUESTS_KEPT = 2
TLog = TypeVar("TLog", bound=AuthEventLog)

USER_DIRECTORY_V1 = ReadModelSpec.of(
    UserDirectoryProjectionV1, PostgresUserDirectoryViewV1
)
USER_DIRECTORY_V2 = ReadModelSpec.of(
    UserDirectoryProjectionV2, PostgresUserDirectoryViewV2
)
USER_DIRECTORY = ReadModelSpec.of(UserDirectoryProjection, PostgresUserDirectoryView)
ACTIVE_SESSIONS_V1 = ReadModelSpec.of(
    ActiveSessionsProjectionV1, PostgresActiveSessionsViewV1
)
ACTIVE_SESSIONS = ReadModelSpec.of(ActiveSessionsProjection, PostgresActiveSessionsView)
LOGIN_HISTORY = ReadModelSpec.of(LoginHistoryProjection, PostgresLoginHistoryView)
MAIL_OUTBOX = ReadModelSpec.of(MailOutboxProjection, PostgresMailOutboxView)
# Every version of each read model the code can build, oldest first. To change
# a read model, add its next version here and keep the previous one for one
# release: the new one is built beside it and switched to once caught up.
READ_MODELS: tuple[ReadModelSpec[Any], ...] = (
    USER_DIRECTORY_V1,
    USER_DIRECTORY_V2,
    USER_DIRECTORY,
    ACTIVE_SESSIONS_V1,
    ACTIVE_SESSIONS,
    LOGIN_HISTORY,
    MAIL_OUTBOX,
)


@dataclass
class Services:
    """Everything an interface needs, built once per process."""

    settings: Settings
    database_url: str
    app: AuthApplication
    recorder: AuthRecorder
    users: PostgresUserDirectoryView
    sessions: PostgresActiveSessionsView
    history: PostgresLoginHistoryView
    tokens: JwtTokens
    key_ring: SigningKeyRing
    mail: AccountMail
    mfa: SecondFactor
    feed: EventFeed
    webhooks: Webhooks
    read_models: ReadModels
    mailer: Mailer | None = None
    dispatcher: WebhookDispatcher | None = None
    workers: list[ProjectionWorker] = field(default_factory=list)
    sweeper: Periodic | None = None
    key_watch: Periodic | None = None

    def start_projections(self) -> None:
        """Start workers: the lagging read models, and newer versions to build."""
        started = self.read_models.workers()
        for worker in started:
            worker.start()
        self.workers.extend(started)

    def sweep_sessions(self) -> int:
        """End the sessions whose token ran out, a batch at a time; how many."""
        now = self.app.clock()
        return self.app.expire_sessions(self.sessions.expired(now, SWEEP_BATCH))

    def start_sweeper(self) -> None:
        """Sweep expired sessions every so often, from this process too."""
        self.sweeper = Periodic("session sweep", SWEEP_INTERVAL_S, self.sweep_sessions)
        self.sweeper.start()

    def watch_key_ring(self) -> None:
        """Read the key ring again as it changes, and rotate it on schedule."""
        self.key_watch = Periodic(
            "key ring", self.settings.key_ring_refresh_s, self._follow_key_ring
        )
        self.key_watch.start()

    def _follow_key_ring(self) -> None:
        days = self.settings.signing_key_rotation_days
        if days is not None:
            self.key_ring.rotate_if_due(
                timedelta(days=days),
                timedelta(seconds=self.settings.signing_key_prepublication_s),
            )
        self.tokens.keys.refresh()

    def start_mailer(self) -> None:
        """Send the outbox's mail from here, when no other process does."""
        self.mailer = Mailer(
            self.database_url,
            mail_sender(self.settings),
            self.mail.tokens,
            self.settings.mail_from,
            self.settings.public_url,
            self.mail.dispatch_resets,
        )
        self.mailer.start()

    def start_webhooks(self, secrets: SealedWebhookSecrets) -> None:
        """Deliver to the webhook endpoints from here, when no other process does."""
        settings = self.settings
        self.dispatcher = WebhookDispatcher(
            self.database_url,
            self.feed,
            self.webhooks,
            secrets,
            destinations(settings),
            RetryPolicy(
                settings.webhook_first_retry_s,
                settings.webhook_longest_retry_s,
                settings.webhook_failing_after_s,
            ),
            settings.webhook_timeout_s,
        )
        self.dispatcher.start()

    def close(self) -> None:
        for periodic in (self.sweeper, self.key_watch):
            if periodic:
                periodic.stop()
        if self.mailer:
            self.mailer.stop()
        if self.dispatcher:
            self.dispatcher.stop()
        for worker in self.workers:
            worker.stop(wait=False)
        for worker in self.workers:
            worker.stop()
        self.app.close()  # its pool is the views' too


def build_services(
    settings: Settings, read_models: tuple[ReadModelSpec[Any], ...] = READ_MODELS
) -> Services:
    """Connect to the database (embedded by default), create tables, wire use cases."""
    url = database_url(settings)
    secrets = load_secrets(settings)
    mapper_of = postgres_sealing(secrets.key_encryption_key)
    env = eventsourcing_env(
        url,
        REQUESTS_KEPT,
        request_connections(settings) - REQUESTS_KEPT,
        purpose="authledger-requests",
        statement_timeout_s=settings.request_deadline_s,
    )
    models = ReadModels(
        url,
        read_models,
        eventsourcing_env(url, 1, 1, purpose="authledger-projections"),
        mapper_of,
    )
    # Concurrent CREATE TABLE IF NOT EXISTS can still collide: one process at a time.
    with advisory_lock(url, SETUP_LOCK):
        app = open_event_log(
            auth_application(settings, secrets, mapper_of), url, env, secrets
        )
        recorder = app.recorder
        if not isinstance(recorder, AuthRecorder):
            raise TypeError("authledger keeps its events in PostgreSQL")
        models.prepare()
        recorder.inline = models.inline_projections(app.mapper, app.name)
        upgrade_stored_data(app, url)
        cipher = KeyCipher(secrets.key_encryption_key)
        key_ring = SigningKeyRing(
            app,
            SealedKeyMaker(cipher),
            settings.signing_algorithm,
            # The longest life of a token it signed, and the time the
            # slowest replica may take to see the rotation.
            timedelta(
                seconds=settings.access_token_ttl_s
                + LEEWAY_S
                + settings.key_ring_refresh_s
            ),
            app.clock,
        )
        key_ring.start("setup")
    # Views here only query read_models.<table>, whichever schema is live,
    # through the requests' pool: one budget of connections.
    query_env = {**env, "CREATE_TABLE": "n"}
    users = build_view(USER_DIRECTORY, query_env, recorder.datastore)
    sessions = build_view(ACTIVE_SESSIONS, query_env, recorder.datastore)
    history = build_view(LOGIN_HISTORY, query_env, recorder.datastore)
    tokens = JwtTokens(
        LiveKeyRing(key_ring, cipher, app.clock),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl_s,
    )
    # Every key opens, or nothing starts: a process that cannot read the
    # ring would follow no rotation, and a key sealed now would open nowhere.
    tokens.keys.refresh()
    webhook_secrets = SealedWebhookSecrets(secrets.key_encryption_key)
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
        recorder,
        users,
        sessions,
        history,
        tokens,
        key_ring,
        mail,
        SecondFactor(app, Totp()),
        EventFeed(app),
        Webhooks(app, webhook_secrets, destinations(settings), app.clock),
        models,
    )
    services.watch_key_ring()
    if settings.run_projections:
        services.start_projections()
        services.start_sweeper()
    if settings.run_mailer:
        services.start_mailer()
    if settings.run_webhooks:
        services.start_webhooks(webhook_secrets)
    return services


def destinations(settings: Settings) -> Destinations:
    """Where webhooks may go: public addresses unless allowed, https in production."""
    return Destinations(
        allow_private=settings.webhook_allow_private,
        https_only=settings.env == "production",
    )


def sealing(settings: Settings) -> MapperFactory:
    """The event store's mapper for these settings' key-encryption key."""
    return postgres_sealing(load_secrets(settings).key_encryption_key)


def request_connections(settings: Settings) -> int:
    """What the request pool may open: the process's budget less the rest.

    Beside requests (commands, queries, the session sweep), a process holds
    two connections for the session checks of authenticated requests, one
    for its readiness probe and one for setup and registry lookups; the
    mailer one; the webhook dispatcher its lock and a pool of two; the
    projection worker its lock and a pool of two, and three more for the
    build of new read-model versions (one build at a time builds them all).
    """
    background = CALLER_CONNECTIONS + PROBE_CONNECTIONS + SETUP_CONNECTIONS
    if settings.run_mailer:
        background += MAILER_CONNECTIONS
    if settings.run_webhooks:
        background += WEBHOOK_CONNECTIONS
    if settings.run_projections:
        background += PROJECTION_CONNECTIONS + BUILD_CONNECTIONS
    return settings.connection_budget() - background


class UnsealedLogError(RuntimeError):
    """The log still holds personal data in clear, and this role may not seal it."""


def auth_application(
    settings: Settings, secrets: Secrets, mapper_of: MapperFactory
) -> Callable[[dict[str, str]], AuthApplication]:
    """How to make the use cases' application over an eventsourcing env."""
    return lambda app_env: AuthApplication(
        app_env,
        mapper_of=mapper_of,
        passwords=BcryptPasswordHasher(
            secrets.password_pepper,
            settings.bcrypt_rounds,
            concurrency=settings.hash_concurrency(),
            niceness=settings.hash_niceness,
        ),
        screen=ZxcvbnScreen(),
        refresh_key=derive_key(secrets.jwt_secret, "refresh-tokens"),
        address_key=address_key(secrets),
        # From the pepper, which never changes (password hashes need it
        # too): claims named by it must stay findable.
        lookup_key=derive_key(secrets.password_pepper, "lookups"),
        policy=settings.auth_policy(),
        meter=PrometheusMeter(),
    )


def upgrade_stored_data(app: AuthApplication, url: str) -> None:
    """The one-off changes to stored data, in order (each once; call it
    holding the setup lock). The last, dropping the streams named by
    personal values, needs the log's owner: another role refuses to start
    until the owner has done it."""
    fold_email_claims(app)
    key_email_claims(app)
    start_admin_roster(app)
    tables = event_tables(app)
    if owns_event_log(url, tables):
        forget_legacy_streams(
            app, lambda streams: drop_stored_streams(url, tables, streams)
        )
    elif not legacy_streams_forgotten(app):
        raise UnsealedLogError(
            "the log holds streams named by personal data: start once as its"
            " owner (or run `authledger db setup-roles`) to drop them"
        )


def open_event_log(
    make: Callable[[dict[str, str]], TLog],
    url: str,
    env: dict[str, str],
    secrets: Secrets,
) -> TLog:
    """Open the event store: its owner creates and protects it, others check it.

    A role that owns the events table (or finds none) creates the tables, their
    triggers and the data keys' table, and seals what an older release stored
    in clear, as a single-role development database does. Any other role, such
    as the application role of `db setup-roles`, may not run that DDL: it
    starts only if both tables carry their enabled append-only triggers and
    the log is sealed. Both refuse a key-encryption key that does not unwrap
    the stored data keys. Call it holding the setup lock.
    """
    app = make({**env, "CREATE_TABLE": "n"})
    try:
        tables = event_tables(app)
        mapper = app.mapper
        if not isinstance(mapper, SealingMapper):
            raise TypeError("the event log seals personal data with its mapper")
        if owns_event_log(url, tables):
            for recorder in event_recorders(app):
                recorder.create_table()
            protect_event_log(url, tables)
            create_key_table(url)
            check_key_encryption_key(url, secrets.key_encryption_key)
            seal_personal_data(
                app,
                address_key(secrets),
                lambda shredded, dropped: seal_stored_personal_data(
                    mapper, url, tables, shredded, dropped
                ),
            )
        else:
            check_append_only(url, tables)
            check_key_table(url)
            check_key_encryption_key(url, secrets.key_encryption_key)
            if not is_sealed(app):
                raise UnsealedLogError(
                    "the log holds personal data from before sealing: start once"
                    " as its owner (or run `authledger db setup-roles`) to seal it"
                )
    except BaseException:
        app.close()
        raise
    return app


def event_recorders(
    app: AuthEventLog,
) -> tuple[PostgresAggregateRecorder, PostgresAggregateRecorder]:
    """The recorders of the app's events and of its snapshots."""
    events = app.recorder
    snapshots = app.snapshots.recorder if app.snapshots else None
    if not (
        isinstance(events, PostgresAggregateRecorder)
        and isinstance(snapshots, PostgresAggregateRecorder)
    ):
        raise TypeError("authledger keeps its events and snapshots in PostgreSQL")
    return events, snapshots


def address_key(secrets: Secrets) -> bytes:
    """The key naming an address's streams from before it had an account."""
    return derive_key(secrets.jwt_secret, "unknown-addresses")


def event_tables(app: AuthEventLog) -> EventTables:
    """Name the tables of the app's events and snapshots."""
    events, snapshots = event_recorders(app)
    return EventTables(
        events.datastore.schema, events.events_table_name, snapshots.events_table_name
    )


def set_up_roles(
    settings: Settings, app_role: str, password: str | None
) -> EventTables:
    """As the owner: create the event store, then the role that serves it."""
    url = database_url(settings)
    env = eventsourcing_env(url, 1, 1)
    secrets = load_secrets(settings)
    mapper_of = postgres_sealing(secrets.key_encryption_key)
    with advisory_lock(url, SETUP_LOCK):
        log = open_event_log(
            auth_application(settings, secrets, mapper_of), url, env, secrets
        )
        try:
            upgrade_stored_data(log, url)
        except BaseException:
            log.close()
            raise
    try:
        tables = event_tables(log)
        grant_app_role(url, tables, app_role, password)
    finally:
        log.close()
    return tables


@contextmanager
def advisory_lock(url: str, key: str) -> Iterator[None]:
    """Hold a session-level advisory lock while the block runs (waits for it)."""
    with connect(url, "authledger-setup") as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield


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
