"""Webhooks on a real server, to a real receiver that checks every delivery
with the `standardwebhooks` library (not the service's signing code): a
scripted session arrives in order; a receiver that is down loses nothing;
a SIGKILL of the service mid-delivery loses nothing either, and duplicates
carry the same webhook-id; SSRF refusals; admin routes and CLI."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4 as new_uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from tests.cli import run_cli
from tests.conftest import fresh_database
from tests.http.conftest import free_port, start_server, stop_server
from tests.http.helpers import bearer, eventually, login, new_email, signup
from tests.http.test_admin_and_audit import ADMIN_PASSWORD, cli

pytestmark = [pytest.mark.http, pytest.mark.postgres]

FAST_RETRIES = {
    "AUTHLEDGER_WEBHOOK_ALLOW_PRIVATE": "true",
    "AUTHLEDGER_WEBHOOK_FIRST_RETRY_S": "0.4",
    "AUTHLEDGER_WEBHOOK_LONGEST_RETRY_S": "1.6",
    "AUTHLEDGER_WEBHOOK_FAILING_AFTER_S": "3",
    "AUTHLEDGER_WEBHOOK_TIMEOUT_S": "1",
}


class Receiver:
    """An HTTP server that keeps each delivery it can verify, in arrival order."""

    def __init__(
        self, port: int, delay_s: float = 0, keep_alive_s: float | None = None
    ) -> None:
        """`keep_alive_s`: answer in HTTP/1.1 and close a connection idle so
        long (as nginx does after 75 s); else HTTP/1.0, closing each."""
        self.port = port
        self.keep_alive_s = keep_alive_s
        self.url = f"http://127.0.0.1:{port}/hooks/authledger"
        self.delay_s = delay_s
        self.secret: str | None = None
        self.received: list[dict[str, Any]] = []  # webhook-id, and the message
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            if receiver.keep_alive_s is not None:
                protocol_version = "HTTP/1.1"
                timeout = receiver.keep_alive_s

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    assert receiver.secret is not None
                    message = Webhook(receiver.secret).verify(body, dict(self.headers))
                except Exception:  # noqa: BLE001  (any failure refuses it)
                    receiver.refused += 1
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                time.sleep(receiver.delay_s)
                receiver.received.append(
                    {"webhook_id": self.headers["webhook-id"], **message}
                )
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def cursors(self) -> list[int]:
        return [int(m["data"]["cursor"]) for m in self.received]


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def server(module_database_url: str, server_data_dir: Path) -> Any:
    metrics = {**FAST_RETRIES, "AUTHLEDGER_METRICS_PORT": str(METRICS_PORT)}
    process, base_url = start_server(
        module_database_url, server_data_dir, settings=metrics
    )
    yield base_url
    stop_server(process)


def failing(endpoint_id: str) -> float:
    """The endpoint's `failing` gauge, as Prometheus's own parser reads it."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return samples[("authledger_webhook_failing", (("endpoint", endpoint_id),))]


@pytest.fixture
def receiver() -> Any:
    started = Receiver(free_port()).start()
    yield started
    started.stop()


def add_webhook(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver, **body: Any
) -> dict[str, Any]:
    added = client.post(
        "/api/admin/webhooks", json={"url": receiver.url, **body}, headers=admin
    )
    assert added.status_code == 201, added.text
    webhook: dict[str, Any] = added.json()
    assert webhook["secret"].startswith("whsec_")
    receiver.secret = webhook["secret"]
    return webhook


def feed_after(
    client: httpx.Client, admin: dict[str, str], after: int, types: list[str]
) -> list[int]:
    """The cursors the pull API lists after `after`, of `types` (all if none)."""
    cursors: list[int] = []
    cursor = str(after)
    while True:
        query: dict[str, Any] = {"after": cursor, "limit": 1000, "type": types}
        body = client.get("/api/admin/events", params=query, headers=admin).json()
        cursors.extend(int(e["cursor"]) for e in body["events"])
        cursor = body["next"]
        if body["at_head"]:
            return cursors


def scripted_session(client: httpx.Client) -> str:
    """Sign up, fail a login, log in, refresh, log out; the user's id."""
    email = new_email()
    tokens = signup(client, email)
    login(client, email, "not the password")
    second = login(client, email).json()
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    ended = client.post("/api/auth/logout", headers=bearer(tokens))
    assert ended.status_code == 200, ended.text
    return str(tokens["user"]["id"])


def test_every_event_of_a_session_arrives_in_order_and_verified(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver
) -> None:
    # Given a webhook for the account and session events
    types = ["user.registered", "user.login_failed", "user.logged_in"]
    types += ["session.opened", "session.token_rotated", "user.sessions_revoked"]
    webhook = add_webhook(client, admin, receiver, event_types=types)

    # When a user goes through a session
    user_id = scripted_session(client)

    # Then the receiver gets each of its events, in log order, each verified
    expected = [
        "user.registered",
        "user.logged_in",
        "session.opened",
        "user.login_failed",
        "user.logged_in",
        "session.opened",
        "session.token_rotated",
        "user.sessions_revoked",
    ]
    eventually(lambda: receiver.received, lambda got: len(got) >= len(expected))
    got = [m for m in receiver.received if m["type"] in types]
    assert receiver.refused == 0
    assert [m["type"] for m in got] == expected
    assert got[0]["data"]["aggregate_id"] == user_id
    assert receiver.cursors() == sorted(set(receiver.cursors()))
    assert {m["webhook_id"] for m in got} == {f"evt_{m['data']['cursor']}" for m in got}
    # And exactly what the pull API lists for those types since it was added
    first = receiver.cursors()[0]
    assert receiver.cursors() == feed_after(client, admin, first - 1, types)
    # And the admin API shows it delivered
    shown = client.get(f"/api/admin/webhooks/{webhook['id']}", headers=admin).json()
    assert shown["state"] == "active"
    assert shown["delivered"] == len(expected)
    assert "secret" not in shown
    assert {a["status"] for a in shown["recent_attempts"]} == {204}


def test_a_receiver_that_is_down_loses_nothing_and_resumes_in_order(
    client: httpx.Client,
    admin: dict[str, str],
    receiver: Receiver,
    module_database_url: str,
    server_data_dir: Path,
) -> None:
    # Given a webhook for every event, delivered so far
    webhook = add_webhook(client, admin, receiver)
    scripted_session(client)
    eventually(lambda: receiver.received, lambda got: len(got) >= 10)

    # When the receiver is down for a while events keep being written
    receiver.stop()
    for _ in range(3):
        scripted_session(client)
    down = eventually(
        lambda: client.get(
            f"/api/admin/webhooks/{webhook['id']}", headers=admin
        ).json(),
        lambda shown: shown["state"] == "failing",
    )
    assert down["last_error"]
    assert down["failed_attempts"] >= 2
    assert None in {a["status"] for a in down["recent_attempts"]}
    assert failing(webhook["id"]) == 1
    assert client.get("/metrics").status_code == 404  # not on the API's port
    listed = run_cli(module_database_url, server_data_dir, "webhooks", "list", "--json")
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    assert next(e for e in shown if e["id"] == webhook["id"])["state"] == "failing"
    # And the waits between failed attempts doubled, up to the longest
    failed = sorted(
        datetime.fromisoformat(a["attempted_at"])
        for a in down["recent_attempts"]
        if a["status"] is None
    )
    waits = [(b - a).total_seconds() for a, b in itertools.pairwise(failed)]
    assert waits[0] >= 0.4
    assert waits[1] >= 1.5 * waits[0] or waits[1] >= 1.6, waits

    # Then, once it is back, delivery resumes where it stopped, in order
    Receiver.start(receiver)
    first = receiver.cursors()[0]
    expected = feed_after(client, admin, first - 1, [])
    eventually(
        receiver.cursors,
        lambda got: set(expected) <= set(got),
        timeout=30,
    )
    assert receiver.cursors()[: len(expected)] == expected
    assert (
        client.get(f"/api/admin/webhooks/{webhook['id']}", headers=admin).json()[
            "state"
        ]
        == "active"
    )
    assert failing(webhook["id"]) == 0


def test_a_sigkill_mid_delivery_loses_nothing_and_repeats_with_the_same_id(
    database_url: str, tmp_path: Path
) -> None:
    # Given a service delivering to a slow receiver
    receiver = Receiver(free_port(), delay_s=0.05).start()
    process, base_url = start_server(database_url, tmp_path, settings=FAST_RETRIES)
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            email = new_email()
            cli(database_url, tmp_path, "users", "create-admin", email)
            admin = bearer(login(client, email, ADMIN_PASSWORD).json())
            add_webhook(client, admin, receiver)
            for _ in range(6):
                scripted_session(client)
            written = feed_after(client, admin, 0, [])

        # When the service is killed while deliveries are under way
        eventually(lambda: receiver.received, lambda got: len(got) >= 5)
        process.kill()
        process.wait()
        expected = [c for c in written if c >= receiver.cursors()[0]]
        assert len(expected) > 50
        assert len(set(receiver.cursors())) < len(expected)  # it was mid-way

        # Then, restarted, it delivers every event at least once
        process, base_url = start_server(database_url, tmp_path, settings=FAST_RETRIES)
        eventually(
            receiver.cursors,
            lambda got: set(expected) <= set(got),
            timeout=30,
        )
        assert set(expected) <= set(receiver.cursors())
        # And what it sent but had not recorded came again, as the same
        # message under the same webhook-id
        assert len(receiver.received) > len(set(receiver.cursors()))
        by_id: dict[str, str] = {}
        for message in receiver.received:
            body = json.dumps(message["data"], sort_keys=True)
            assert by_id.setdefault(message["webhook_id"], body) == body
        # And first arrivals came in log order
        firsts = list(dict.fromkeys(receiver.cursors()))
        assert firsts == sorted(firsts)
    finally:
        stop_server(process)
        receiver.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",  # a hostname that resolves to loopback
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://100.64.0.1/hook",  # shared address space
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fd00:ec2::254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
        "http://[64:ff9b:1::a00:1]/",
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of it
        "http://[::127.0.0.1]/",  # IPv4-compatible
        "http://[::ffff:0:7f00:1]/",  # SIIT
        "http://[64:ff9b:1:7f00:0:100:808:808]/",  # local-use NAT64
        "http://[fec0::1]/",  # site-local
        "http://example.com/a b",  # what no request line can carry
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://0x7f.1/hook",
        "http://224.0.0.1/hook",
        "ftp://93.184.216.34/hook",
        "http://user:secret@93.184.216.34/hook",
        "http://no-such-host.invalid/hook",
    ],
)
def test_a_webhook_to_a_private_address_is_refused_when_not_allowed(
    url: str, private_refused: tuple[httpx.Client, dict[str, str]]
) -> None:
    client, admin = private_refused
    refused = client.post("/api/admin/webhooks", json={"url": url}, headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (
        422,
        "unsafe_webhook_url",
    ), url
    assert client.get("/api/admin/webhooks", headers=admin).json() == []


def test_a_public_address_is_accepted(
    private_refused: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, admin = private_refused
    added = client.post(
        "/api/admin/webhooks", json={"url": "https://93.184.216.34/hook"}, headers=admin
    )
    assert added.status_code == 201, added.text
    removed = client.delete(f"/api/admin/webhooks/{added.json()['id']}", headers=admin)
    assert removed.status_code == 200


@pytest.fixture(scope="module")
def private_refused(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A server of its own, with private destinations refused (the default)."""
    with fresh_database(postgres_server_url) as database_url:
        data_dir = tmp_path_factory.mktemp("private-refused")
        process, base_url = start_server(database_url, data_dir)
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                email = new_email()
                cli(database_url, data_dir, "users", "create-admin", email)
                yield client, bearer(login(client, email, ADMIN_PASSWORD).json())
        finally:
            stop_server(process)


def test_an_address_allowed_once_is_checked_again_at_delivery(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # Given a webhook to a loopback receiver, added while that was allowed
    process, base_url = start_server(database_url, tmp_path, settings=FAST_RETRIES)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        email = new_email()
        cli(database_url, tmp_path, "users", "create-admin", email)
        admin = bearer(login(client, email, ADMIN_PASSWORD).json())
        webhook = add_webhook(client, admin, receiver)
    stop_server(process)
    sent_before = len(receiver.received)  # what that server got out in time

    # When the service runs with private addresses refused, and events happen
    strict = {**FAST_RETRIES, "AUTHLEDGER_WEBHOOK_ALLOW_PRIVATE": "false"}
    process, base_url = start_server(database_url, tmp_path, settings=strict)
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            admin = bearer(login(client, email, ADMIN_PASSWORD).json())
            shown = eventually(
                lambda: client.get(
                    f"/api/admin/webhooks/{webhook['id']}", headers=admin
                ).json(),
                lambda shown: shown["failed_attempts"] >= 2,
            )
    finally:
        stop_server(process)

    # Then nothing more reaches the receiver, and each attempt says why
    assert len(receiver.received) == sent_before
    assert shown["state"] in {"retrying", "failing"}
    latest = shown["recent_attempts"][:2]
    assert [a["status"] for a in latest] == [None, None]
    assert all(a["error"].startswith("refused") for a in latest)


def test_a_replay_sends_again_from_a_cursor_in_order_under_the_same_ids(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver
) -> None:
    webhook = add_webhook(client, admin, receiver, event_types=["user.registered"])
    for _ in range(3):
        signup(client, new_email())
    eventually(lambda: receiver.received, lambda got: len(got) >= 3)
    first = list(receiver.received)

    replayed = client.post(
        f"/api/admin/webhooks/{webhook['id']}/replay",
        json={"from": first[1]["data"]["cursor"]},
        headers=admin,
    )

    assert replayed.status_code == 202, replayed.text
    eventually(lambda: receiver.received, lambda got: len(got) >= 5)
    assert [m["webhook_id"] for m in receiver.received] == [
        m["webhook_id"] for m in (*first, *first[1:])
    ]
    unknown = client.post(
        f"/api/admin/webhooks/{new_uuid()}/replay", json={"from": "0"}, headers=admin
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "webhook_not_found")


def test_webhooks_from_the_cli(
    module_database_url: str, server_data_dir: Path, receiver: Receiver
) -> None:
    def webhooks(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            module_database_url, server_data_dir, "webhooks", *args, check=False, **env
        )

    refused = webhooks("add", "http://127.0.0.1:9/hook")
    assert refused.returncode == 1
    assert "refused" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = {"AUTHLEDGER_WEBHOOK_ALLOW_PRIVATE": "true"}
    added = webhooks("add", receiver.url, "--type", "user.registered", **allowed)
    assert added.returncode == 0, added.stderr
    endpoint_id = added.stdout.split()[2]
    assert "whsec_" in added.stdout
    listed = [
        json.loads(line) for line in webhooks("list", "--json").stdout.splitlines()
    ]
    mine = next(e for e in listed if e["id"] == endpoint_id)
    assert (mine["url"], mine["event_types"]) == (receiver.url, ["user.registered"])
    assert "secret" not in json.dumps(listed)
    assert endpoint_id in webhooks("list").stdout
    secret = added.stdout.split("signing secret (shown once): ")[1].strip()
    exported = run_cli(module_database_url, server_data_dir, "audit", "export").stdout
    assert "EndpointAdded" in exported
    assert secret not in exported
    assert "sealed_secret" not in exported
    assert webhooks("replay", endpoint_id, "--from", "0").returncode == 0
    assert webhooks("remove", endpoint_id).returncode == 0
    assert webhooks("remove", endpoint_id).returncode == 1
    assert endpoint_id not in webhooks("list").stdout


def test_a_connection_the_receiver_closed_while_idle_costs_no_failed_attempt(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    receiver = Receiver(free_port(), keep_alive_s=0.3).start()
    try:
        webhook = add_webhook(client, admin, receiver, event_types=["user.registered"])
        for count in (1, 2, 3):
            signup(client, new_email())
            wait_s = time.monotonic() + 10
            while len(receiver.received) < count and time.monotonic() < wait_s:
                time.sleep(0.02)
            time.sleep(0.6)  # the receiver closes the idle connection
        shown = client.get(f"/api/admin/webhooks/{webhook['id']}", headers=admin)
    finally:
        receiver.stop()
    assert len(receiver.received) == 3
    assert {a["status"] for a in shown.json()["recent_attempts"]} == {204}
    assert shown.json()["failed_attempts"] == 0


def test_a_replay_asked_for_at_once_sends_the_history_before_the_endpoint(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver
) -> None:
    signup(client, new_email())
    webhook = add_webhook(client, admin, receiver, event_types=["user.registered"])
    replayed = client.post(
        f"/api/admin/webhooks/{webhook['id']}/replay",
        json={"from": "0"},
        headers=admin,
    )
    assert replayed.status_code == 202
    history = feed_after(client, admin, 0, ["user.registered"])
    eventually(receiver.cursors, lambda got: set(history) <= set(got))
    assert receiver.cursors()[: len(history)] == history
    assert history


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "http://[::1"}, "unsafe_webhook_url"),
        ({"url": "https://example.com/\u00e9t\u00e9"}, "unsafe_webhook_url"),
        (
            {"url": "https://example.com/", "event_types": ["user.nope"]},
            "unknown_event_type",
        ),
    ],
)
def test_a_malformed_webhook_is_refused_with_a_422(
    client: httpx.Client, admin: dict[str, str], body: dict[str, Any], code: str
) -> None:
    refused = client.post("/api/admin/webhooks", json=body, headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (422, code)


@pytest.mark.parametrize(
    ("cursor", "code"),
    [
        ("9999999999999999999", "validation_error"),
        ("999999999999999999", "cursor_beyond_log"),
    ],
)
def test_a_replay_cursor_beyond_the_log_is_refused(
    client: httpx.Client,
    admin: dict[str, str],
    receiver: Receiver,
    cursor: str,
    code: str,
) -> None:
    webhook = add_webhook(client, admin, receiver)
    refused = client.post(
        f"/api/admin/webhooks/{webhook['id']}/replay",
        json={"from": cursor},
        headers=admin,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, code)
    signup(client, new_email())  # and delivery goes on
    eventually(lambda: receiver.received, bool)
    assert receiver.received


def test_a_replay_from_zero_while_the_receiver_is_down_keeps_the_list_readable(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver
) -> None:
    webhook = add_webhook(client, admin, receiver)
    receiver.stop()
    replayed = client.post(
        f"/api/admin/webhooks/{webhook['id']}/replay", json={"from": "0"}, headers=admin
    )
    assert replayed.status_code == 202, replayed.text
    shown = eventually(
        lambda: client.get(f"/api/admin/webhooks/{webhook['id']}", headers=admin),
        lambda shown: shown.status_code != 200 or shown.json()["cursor"] == "0",
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["cursor"] == "0"
    assert client.get("/api/admin/webhooks", headers=admin).status_code == 200


def test_a_removed_endpoint_leaves_the_metrics(
    client: httpx.Client, admin: dict[str, str], receiver: Receiver
) -> None:
    webhook = add_webhook(client, admin, receiver)
    signup(client, new_email())
    eventually(lambda: receiver.received, bool)
    assert failing(webhook["id"]) == 0

    client.delete(f"/api/admin/webhooks/{webhook['id']}", headers=admin)

    def listed() -> bool:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics").text
        return webhook["id"] in text

    assert not eventually(listed, lambda shown: not shown)


class Misbehaving(BaseHTTPRequestHandler):
    """A receiver that redirects, stalls past the timeout, or answers a
    gigabyte (as long as the client reads)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("location", "/elsewhere")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(204)
            self.end_headers()
        else:  # /big
            self.send_response(200)
            self.send_header("content-length", str(1 << 30))
            self.end_headers()
            with contextlib.suppress(OSError):  # until the client hangs up
                for _ in range(1 << 14):
                    self.wfile.write(b"x" * (1 << 16))
                    time.sleep(0.001)

    def log_message(self, *_: Any) -> None:
        pass


def test_redirects_and_stalls_fail_and_a_huge_answer_is_cut_short(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        hooks = {
            path: client.post(
                "/api/admin/webhooks",
                json={"url": base + path, "event_types": ["user.registered"]},
                headers=admin,
            ).json()["id"]
            for path in ("/redirect", "/slow", "/big")
        }
        signup(client, new_email())

        def attempts(path: str) -> list[dict[str, Any]]:
            shown = client.get(f"/api/admin/webhooks/{hooks[path]}", headers=admin)
            found: list[dict[str, Any]] = shown.json()["recent_attempts"]
            return found

        redirected = eventually(lambda: attempts("/redirect"), bool)
        stalled = eventually(lambda: attempts("/slow"), bool)
        big = eventually(lambda: attempts("/big"), bool)
    finally:
        server.shutdown()
        server.server_close()

    # A redirect is a failure, never followed
    assert (redirected[-1]["status"], redirected[-1]["error"]) == (None, "HTTP 307")
    # A receiver that stalls past AUTHLEDGER_WEBHOOK_TIMEOUT_S (1 s) fails
    assert stalled[-1]["status"] is None
    assert stalled[-1]["error"] == "TimeoutError"
    assert stalled[-1]["duration_ms"] < 2500
    # A gigabyte answer is read only up to the cap: delivered at once
    assert big[-1]["status"] == 200
    assert big[-1]["duration_ms"] < 1000
