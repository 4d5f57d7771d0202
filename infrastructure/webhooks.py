"""Webhook delivery: Standard Webhooks requests, at least once and in log
order per endpoint, to addresses checked against SSRF at every connection.

Delivery state lives in `authledger.webhook_deliveries` and every attempt's
outcome in `authledger.webhook_attempts`, beside the log and outside the
rebuildable read models (as the mail outbox's sends are): rebuilding must
never send an event again, and an attempt is not a fact of the domain.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import logging
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool
from pydantic_core import to_json

from application.errors import UnsafeWebhookUrlError
from infrastructure.database import connect
from infrastructure.periodic import Periodic
from infrastructure.secret_box import SecretBox

if TYPE_CHECKING:
    from application.feed import EventFeed, FeedEvent
    from application.webhooks import Webhooks
    from domain.webhooks import WebhookEndpoint

log = logging.getLogger(__name__)

SETUP = (
    "CREATE SCHEMA IF NOT EXISTS authledger",
    "CREATE TABLE IF NOT EXISTS authledger.webhook_deliveries ("
    " endpoint_id uuid PRIMARY KEY,"
    " position bigint NOT NULL,"  # every event up to here was delivered
    " replays integer NOT NULL DEFAULT 0,"  # replays applied
    " delivered bigint NOT NULL DEFAULT 0,"
    " attempts integer NOT NULL DEFAULT 0,"  # failed in a row
    " next_attempt_at timestamptz NOT NULL DEFAULT now(),"
    " failing_since timestamptz, failing boolean NOT NULL DEFAULT false,"
    " last_error text, last_delivered_at timestamptz)",
    "CREATE TABLE IF NOT EXISTS authledger.webhook_attempts ("
    " id bigserial PRIMARY KEY, endpoint_id uuid NOT NULL,"
    " position bigint NOT NULL, webhook_id text NOT NULL,"
    " attempted_at timestamptz NOT NULL DEFAULT now(), duration_ms integer,"
    " status integer, error text)",
    "CREATE INDEX IF NOT EXISTS webhook_attempts_by_endpoint"
    " ON authledger.webhook_attempts (endpoint_id, id)",
)
STATE = (
    "SELECT position, replays,"
    " greatest(extract(epoch FROM next_attempt_at - now()), 0)"
    " FROM authledger.webhook_deliveries WHERE endpoint_id = %s"
)
# No replay applied yet: one asked for before the first round still counts.
BEGIN = (
    "INSERT INTO authledger.webhook_deliveries (endpoint_id, position, replays)"
    " VALUES (%s, %s, 0) ON CONFLICT DO NOTHING"
)
FORGET = "DELETE FROM authledger.webhook_deliveries WHERE endpoint_id = ANY(%s)"
# When the lock is taken: endpoints removed while no process delivered.
FORGET_OTHERS = "DELETE FROM authledger.webhook_deliveries WHERE endpoint_id <> ALL(%s)"
MOVED = (
    "UPDATE authledger.webhook_deliveries SET position = %s, replays = %s,"
    " attempts = 0, next_attempt_at = now() WHERE endpoint_id = %s"
)
ATTEMPTED = (
    "INSERT INTO authledger.webhook_attempts"
    " (endpoint_id, position, webhook_id, duration_ms, status, error)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
DELIVERED = (
    "UPDATE authledger.webhook_deliveries SET position = %s,"
    " delivered = delivered + %s, attempts = 0, next_attempt_at = now(),"
    " failing_since = NULL, failing = false, last_delivered_at = now()"
    " WHERE endpoint_id = %s"
)
# The wait doubles with each failure in a row, up to the longest.
FAILED = (
    "UPDATE authledger.webhook_deliveries SET attempts = attempts + 1,"
    " next_attempt_at = now() + least(%(first)s * power(2, least(attempts, 40)),"
    "   %(longest)s) * interval '1 second',"
    " failing_since = coalesce(failing_since, now()),"
    " failing = now() - coalesce(failing_since, now())"
    "   >= %(failing_after)s * interval '1 second',"
    " last_error = %(error)s WHERE endpoint_id = %(endpoint)s"
)
STATUS = (
    "SELECT endpoint_id, position, delivered, attempts, next_attempt_at,"
    " failing_since, failing, last_error, last_delivered_at"
    " FROM authledger.webhook_deliveries"
)
ATTEMPTS = (
    "SELECT position, webhook_id, attempted_at, duration_ms, status, error"
    " FROM authledger.webhook_attempts WHERE endpoint_id = %s"
    " ORDER BY id DESC LIMIT %s"
)
# Attempts are kept this long (what an operator looks back on); pruned by
# the delivering process as it reads the endpoints again.
PRUNE = (
    "DELETE FROM authledger.webhook_attempts"
    " WHERE attempted_at < now() - interval '30 days'"
)
LOCK = "SELECT pg_try_advisory_lock(hashtextextended('authledger.webhooks', 0))"
BATCH = 500
# Deliveries recorded per transaction: a crash sends at most this many again.
RECORD_EVERY = 50
MAX_RESPONSE_BYTES = 64 * 1024
SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
# Endpoints delivered to at once (a receiver that answers slowly holds one
# sender per POST for up to the timeout), and the connections their records
# use (beside the lock's own).
SENDERS = 32
POOL_CONNECTIONS = 2
READERS = 2
ENDPOINTS_REFRESH_S = 1.0
PRUNE_EVERY_S = 3600


def setup_webhook_deliveries(conn: psycopg.Connection[Any]) -> None:
    for statement in SETUP:
        conn.execute(statement)


# Destinations ---------------------------------------------------------------


# IPv6 ranges that carry an IPv4 address in their last 32 bits (NAT64).
# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64's
# well-known prefix, IPv4-compatible, SIIT.
CARRIERS = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")
)
# Local-use NAT64 (RFC 8215) and the old site-local: private by definition.
NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))
# What a request line cannot carry as it is (RFC 3986).
UNSAFE_URL_CHARACTERS = frozenset(' "<>\\^`{|}')


def _is_public(address: str) -> bool:
    """A global unicast address, also as the IPv4 address an IPv6 one
    carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in n for n in NOT_PUBLIC):
            return False
        carried = ip.ipv4_mapped or ip.sixtofour
        if carried is None and any(ip in n for n in CARRIERS):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None:
            return _is_public(str(carried))
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Destinations:
    """Where the service may send: http(s) URLs without credentials whose
    host resolves to public addresses only (unless private ones are
    allowed); https only in production."""

    allow_private: bool
    https_only: bool

    def check(self, url: str) -> None:
        self.resolve(url)

    def resolve(self, url: str) -> list[str]:
        """The addresses to connect to for `url`, each checked."""
        if (
            not url.isascii()
            or not url.isprintable()
            or set(url) & UNSAFE_URL_CHARACTERS
        ):
            raise UnsafeWebhookUrlError(
                "the URL must be ASCII without spaces (percent-encode them)"
            )
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UnsafeWebhookUrlError("the URL is malformed") from None
        schemes = ("https",) if self.https_only else ("http", "https")
        if parts.scheme not in schemes:
            raise UnsafeWebhookUrlError(f"the URL must be {' or '.join(schemes)}")
        if not parts.hostname or parts.username or parts.password:
            raise UnsafeWebhookUrlError("the URL needs a host and no credentials")
        try:
            found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError):
            raise UnsafeWebhookUrlError("the URL's host does not resolve") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not self.allow_private and not all(map(_is_public, addresses)):
            raise UnsafeWebhookUrlError(
                "the URL's host is a loopback, private, link-local or reserved"
                " address (AUTHLEDGER_WEBHOOK_ALLOW_PRIVATE allows them)"
            )
        return addresses


# Secrets and signatures -----------------------------------------------------


class SealedWebhookSecrets:
    """Signing secrets as Standard Webhooks writes them (`whsec_` and base64
    of 32 random bytes), stored only sealed, bound to their endpoint."""

    def __init__(self, key_encryption_key: bytes) -> None:
        self._box = SecretBox(key_encryption_key, "webhook-secrets", "webhook secrets")

    def make(self, endpoint_id: UUID) -> tuple[str, str]:
        raw = secrets.token_bytes(SECRET_BYTES)
        shown = SECRET_PREFIX + base64.b64encode(raw).decode()
        return shown, self._box.seal(raw, endpoint_id.bytes)

    def open(self, endpoint_id: UUID, sealed: str) -> bytes:
        return self._box.open(sealed, endpoint_id.bytes)


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value (Standard Webhooks, v1)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message(event: FeedEvent) -> tuple[str, bytes]:
    """An event as a Standard Webhooks message: its id (the same on every
    attempt and replay: receivers fold duplicates by it) and its body, in
    the JSON the feed answers with."""
    body = {"type": event.type, "timestamp": event.time, "data": feed_record(event)}
    return f"evt_{event.position}", to_json(body)


def feed_record(event: FeedEvent) -> dict[str, Any]:
    """An event as the feed and the webhooks show it (cursors are strings:
    positions exceed what a JSON number holds exactly)."""
    return {
        "cursor": str(event.position),
        "type": event.type,
        "aggregate_id": str(event.aggregate_id),
        "version": event.version,
        "time": event.time,
        "payload": event.payload,
    }


# Sending --------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address checked, not to what a second lookup says."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        # Headers and body go in two writes: without this, each waits for a
        # delayed ACK (40 ms on Linux).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = 443

    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


class DeliveryError(Exception):
    """The receiver did not take the message (the reason, without its body)."""


class Receiver:
    """One endpoint's connection, checked against SSRF when opened and kept
    open between messages; redirects are failures, as is any status but 2xx."""

    def __init__(self, url: str, destinations: Destinations, timeout_s: float) -> None:
        self.url = urlsplit(url)
        self.destinations = destinations
        self.timeout_s = timeout_s
        self._conn: _PinnedHTTPConnection | None = None

    def post(self, headers: dict[str, str], body: bytes) -> int:
        """POST once; on a kept-alive connection the receiver closed while
        it was idle (as servers do after a few seconds), once more on a new
        one. The status, or DeliveryError."""
        reused = self._conn is not None and self._conn.sock is not None
        try:
            status = self._post(headers, body)
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.close()
            if not (reused and isinstance(error, PEER_CLOSED)):
                raise DeliveryError(type(error).__name__) from None
            try:
                status = self._post(headers, body)
            except (OSError, http.client.HTTPException, ValueError) as again:
                self.close()
                raise DeliveryError(type(again).__name__) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")
        return status

    def _post(self, headers: dict[str, str], body: bytes) -> int:
        conn = self._conn or self._connect()
        path = self.url.path or "/"
        if self.url.query:
            path += "?" + self.url.query
        conn.request(
            "POST", path, body, {**headers, "content-type": "application/json"}
        )
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)  # the rest is never read
        if not response.isclosed():
            self.close()
        return response.status

    def _connect(self) -> _PinnedHTTPConnection:
        try:
            address = self.destinations.resolve(self.url.geturl())[0]
        except UnsafeWebhookUrlError as refused:
            raise DeliveryError(f"refused: {refused}") from None
        kind = (
            _PinnedHTTPSConnection
            if self.url.scheme == "https"
            else _PinnedHTTPConnection
        )
        port = self.url.port or kind.default_port
        self._conn = kind(self.url.hostname or "", port, address, self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# A kept-alive connection the receiver had closed: the request never reached it.
PEER_CLOSED = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)

# Delivering -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    first_s: float
    longest_s: float
    failing_after_s: float


@dataclass(frozen=True)
class Attempt:
    """One POST of one event, as recorded (in the attempts table's order)."""

    position: int
    webhook_id: str
    duration_ms: int
    status: int | None
    error: str | None


class EndpointDelivery:
    """Delivers one endpoint's events in log order; one round at a time."""

    def __init__(
        self, dispatcher: WebhookDispatcher, endpoint: WebhookEndpoint
    ) -> None:
        self.dispatcher = dispatcher
        self.endpoint = endpoint
        self.receiver = Receiver(
            endpoint.url, dispatcher.destinations, dispatcher.timeout_s
        )
        self._secret = dispatcher.secrets.open(endpoint.id, endpoint.sealed_secret)
        self.stopped = threading.Event()  # removed, or this process stops
        # The head this endpoint was wholly delivered up to, and with which
        # replays: a round is due again only when either moves.
        self.reached: tuple[int, int] | None = None
        self.retry_at = 0.0  # monotonic time of the next attempt after a failure
        self._replays = 0  # what retry_at was read with

    def due(self, head: int) -> bool:
        if self.endpoint.replays != self._replays:
            return True
        if time.monotonic() < self.retry_at:
            return False
        return self.reached != (head, self.endpoint.replays)

    def round(self, head: int) -> None:
        """Deliver what is due, up to a batch; stop at the first failure."""
        endpoint = self.endpoint
        if self.stopped.is_set():
            return
        with self.dispatcher.pool.connection() as conn:
            conn.execute(BEGIN, (endpoint.id, endpoint.start_after))
            row = conn.execute(STATE, (endpoint.id,)).fetchone()
            assert row is not None  # noqa: S101  (inserted above)
            position, replays, wait_s = int(row[0]), int(row[1]), float(row[2])
            self._replays = endpoint.replays
            if endpoint.replays > replays and endpoint.replay_from is not None:
                # A replay only goes back (to before the first position).
                position = max(min(position, endpoint.replay_from - 1), 0)
                wait_s = 0
                conn.execute(MOVED, (position, endpoint.replays, endpoint.id))
        self.retry_at = time.monotonic() + wait_s
        if wait_s > 0:
            return
        with self.dispatcher.reading:
            page = self.dispatcher.feed.page(position, BATCH, endpoint.event_types)
        delivered: list[Attempt] = []
        for event in page.events:
            if self.stopped.is_set():
                self._record(delivered)
                return
            attempt = self._attempt(event)
            if attempt.error is not None:
                self._record(delivered, attempt)
                return
            delivered.append(attempt)
            if len(delivered) == RECORD_EVERY:
                self._record(delivered)
                delivered = []
        self._record(delivered)
        if page.next > (page.events[-1].position if page.events else position):
            with self.dispatcher.pool.connection() as conn:
                conn.execute(MOVED, (page.next, endpoint.replays, endpoint.id))
        if page.at_head and page.next >= head:
            self.reached = (head, endpoint.replays)

    def _attempt(self, event: FeedEvent) -> Attempt:
        webhook_id, body = message(event)
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(self._secret, webhook_id, timestamp, body),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self.receiver.post(headers, body)
        except DeliveryError as failed:
            error = str(failed)
            log.warning(
                "webhook %s: %s not delivered: %s", self.endpoint.id, webhook_id, error
            )
        took_ms = int((time.monotonic() - started) * 1000)
        return Attempt(event.position, webhook_id, took_ms, status, error)

    def _record(self, delivered: list[Attempt], failed: Attempt | None = None) -> None:
        """Record attempts in one transaction: the delivered ones and the
        position past them, then a failure and its backoff."""
        if not delivered and failed is None:
            return
        endpoint_id = self.endpoint.id
        with self.dispatcher.pool.connection() as conn, conn.transaction():
            with conn.cursor() as cursor:
                cursor.executemany(
                    ATTEMPTED,
                    [
                        (
                            endpoint_id,
                            a.position,
                            a.webhook_id,
                            a.duration_ms,
                            a.status,
                            a.error,
                        )
                        for a in [*delivered, failed]
                        if a
                    ],
                )
            if delivered:
                conn.execute(
                    DELIVERED, (delivered[-1].position, len(delivered), endpoint_id)
                )
            if failed is not None:
                retry = self.dispatcher.retry
                conn.execute(
                    FAILED,
                    {
                        "first": retry.first_s,
                        "longest": retry.longest_s,
                        "failing_after": retry.failing_after_s,
                        "error": failed.error,
                        "endpoint": endpoint_id,
                    },
                )

    def closed_after(self, _: Future[None] | None = None) -> None:
        self.receiver.close()


class WebhookDispatcher:
    """Delivers to every endpoint from the one process that holds the
    webhooks' lock; each endpoint's rounds run in a pool of senders, one
    round at a time each, so a slow or failing endpoint holds up no other.

    Attempts are recorded after them, up to RECORD_EVERY in one transaction
    with the position past them; the position moves only past delivered
    events. A crash before the record sends those events again (same
    `webhook-id`): at least once, never skipped.
    """

    def __init__(
        self,
        url: str,
        feed: EventFeed,
        webhooks: Webhooks,
        secrets: SealedWebhookSecrets,
        destinations: Destinations,
        retry: RetryPolicy,
        timeout_s: float,
        poll_s: float = 0.02,
    ) -> None:
        self.url = url
        self.feed = feed
        self.webhooks = webhooks
        self.secrets = secrets
        self.destinations = destinations
        self.retry = retry
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_CONNECTIONS,
            kwargs={"autocommit": True, "application_name": "authledger-webhooks"},
            open=False,
        )
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._deliveries: dict[UUID, EndpointDelivery] = {}
        self._running: dict[UUID, Future[None]] = {}
        self._checked_at = 0.0
        self._pruned_at = 0.0
        self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook")
        # Reads of the log go through the requests' pool: a few at a time.
        self.reading = threading.BoundedSemaphore(READERS)
        self._rounds = Periodic("webhooks", poll_s, self._round)

    def start(self) -> None:
        self.pool.open()
        self._rounds.start()

    def stop(self) -> None:
        """Stop after the POST each round is in (at most a timeout)."""
        self._rounds.stop()
        self._follow([])
        self._senders.shutdown(wait=True, cancel_futures=True)
        self._release()
        self.pool.close()

    def _round(self) -> None:
        if time.monotonic() - self._checked_at >= ENDPOINTS_REFRESH_S:
            self._checked_at = time.monotonic()
            was_holding = self._lock_conn is not None
            if not self._holds_lock():
                self._follow([])
                return
            endpoints = self.webhooks.endpoints()
            removed = self._follow(endpoints)
            with self.pool.connection() as conn:
                if was_holding:
                    conn.execute(FORGET, (removed,))
                else:
                    conn.execute(FORGET_OTHERS, ([e.id for e in endpoints],))
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    self._pruned_at = time.monotonic()
                    conn.execute(PRUNE)
        if not self._deliveries:
            return
        head = self.feed.head()
        for endpoint_id, delivery in list(self._deliveries.items()):
            running = self._running.get(endpoint_id)
            # One round at a time per endpoint, also across a lost lock.
            if (running is None or running.done()) and delivery.due(head):
                self._running[endpoint_id] = self._senders.submit(
                    self._guarded, delivery, head
                )

    def _holds_lock(self) -> bool:
        """Whether this process delivers: it holds the lock on a live connection."""
        try:
            if self._lock_conn is not None:
                self._lock_conn.execute("SELECT 1")
                return True
            with contextlib.ExitStack() as closing:
                conn = connect(self.url, "authledger-webhooks")
                closing.callback(conn.close)
                locked = conn.execute(LOCK).fetchone()
                if locked and locked[0]:
                    closing.pop_all()
                    self._lock_conn = conn
                    return True
        except psycopg.Error:
            self._release()
        return False

    def _release(self) -> None:
        if self._lock_conn is not None:
            self._lock_conn.close()
            self._lock_conn = None

    def _follow(self, endpoints: list[WebhookEndpoint]) -> list[UUID]:
        """Start delivering to new endpoints, stop for the others (removed,
        or all when the lock is lost), and take up changes (a replay) of the
        rest; the ids stopped."""
        wanted = {endpoint.id: endpoint for endpoint in endpoints}
        stopped = list(set(self._deliveries) - set(wanted))
        for endpoint_id in stopped:
            removed = self._deliveries.pop(endpoint_id)
            removed.stopped.set()  # its round ends after the POST it is in
            running = self._running.get(endpoint_id)
            if running is None:
                removed.closed_after()
            else:
                running.add_done_callback(removed.closed_after)
        for endpoint_id, endpoint in wanted.items():
            delivery = self._deliveries.get(endpoint_id)
            if delivery is None:
                self._deliveries[endpoint_id] = EndpointDelivery(self, endpoint)
            else:
                delivery.endpoint = endpoint
        for endpoint_id in stopped:
            running = self._running.get(endpoint_id)
            if running is None or running.done():
                self._running.pop(endpoint_id, None)
        return stopped

    @staticmethod
    def _guarded(delivery: EndpointDelivery, head: int) -> None:
        try:
            delivery.round(head)
        except Exception:
            # The database may be down: the next round starts from what
            # was recorded.
            log.exception("webhook %s: round failed", delivery.endpoint.id)
            delivery.receiver.close()


@dataclass(frozen=True)
class DeliveryState:
    """How delivery to one endpoint stands."""

    position: int
    delivered: int
    attempts: int
    next_attempt_at: datetime
    failing_since: datetime | None
    failing: bool
    last_error: str | None
    last_delivered_at: datetime | None

    @property
    def state(self) -> Literal["active", "retrying", "failing"]:
        if self.failing:
            return "failing"
        return "retrying" if self.attempts else "active"


def endpoint_status(
    endpoint: WebhookEndpoint, state: DeliveryState | None
) -> dict[str, Any]:
    """An endpoint and how its delivery stands, as the admin API and the
    CLI show it (never its secret)."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "added_at": endpoint.added_at,
        "added_by": endpoint.added_by,
        "state": state.state if state else "active",
        "cursor": str(state.position) if state else None,
        "delivered": state.delivered if state else 0,
        "failed_attempts": state.attempts if state else 0,
        "next_attempt_at": state.next_attempt_at if state else None,
        "failing_since": state.failing_since if state else None,
        "last_error": state.last_error if state else None,
        "last_delivered_at": state.last_delivered_at if state else None,
    }


def delivery_states(url: str) -> dict[UUID, DeliveryState]:
    with connect(url, "authledger-webhooks") as conn:
        return {
            row[0]: DeliveryState(int(row[1]), *row[2:])
            for row in conn.execute(STATUS).fetchall()
        }


def webhook_metrics(url: str) -> str:
    """Delivery as Prometheus text: endpoints by state, and per endpoint
    (labelled by its id, which an admin made) whether it is failing, what
    it was sent and how many attempts failed in a row."""
    states = delivery_states(url)
    lines = [
        "# HELP authledger_webhook_endpoints Webhook endpoints by delivery state.",
        "# TYPE authledger_webhook_endpoints gauge",
    ]
    by_state = [state.state for state in states.values()]
    for state in ("active", "retrying", "failing"):
        lines.append(
            f'authledger_webhook_endpoints{{state="{state}"}} {by_state.count(state)}'
        )
    per_endpoint = (
        (
            "failing",
            "gauge",
            "1 if the endpoint has failed for a day or more.",
            lambda s: int(s.failing),
        ),
        (
            "failed_attempts",
            "gauge",
            "Failed deliveries in a row.",
            lambda s: s.attempts,
        ),
        ("delivered_total", "counter", "Events delivered.", lambda s: s.delivered),
    )
    for name, kind, about, value in per_endpoint:
        lines += [
            f"# HELP authledger_webhook_{name} {about}",
            f"# TYPE authledger_webhook_{name} {kind}",
        ]
        lines += [
            f'authledger_webhook_{name}{{endpoint="{endpoint_id}"}} {value(state)}'
            for endpoint_id, state in states.items()
        ]
    return "\n".join(lines) + "\n"


def recent_attempts(url: str, endpoint_id: UUID, limit: int) -> list[dict[str, Any]]:
    names = ("position", "webhook_id", "attempted_at", "duration_ms", "status", "error")
    with connect(url, "authledger-webhooks") as conn:
        rows = conn.execute(ATTEMPTS, (endpoint_id, limit)).fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]
