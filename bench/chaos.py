"""`make chaos`: mixed traffic while PostgreSQL and the API are killed, then a check.

Loopback only, bounded in time. Each client lives accounts one after another:
sign up, refresh, log in again, log that session out, change the password,
reset it through the mailed link, log in, refresh, and end with a logout
everywhere (or keep the last session). Meanwhile PostgreSQL (every process
of it) and the API (every worker) are SIGKILLed in turn and started again.
Clients retry as they should: a 503 or a dropped connection is sent again,
with the same token or Idempotency-Key.

Then, through the API and in the log: every acknowledged signup, session and
rotation is stored, no session the client never got was opened, every
session the client ended is refused (refresh and access token alike), every
one it holds refreshes, the last acknowledged password logs in, the users
read model equals the log. Prints the counts; exits 1 on any violation: any
of those, a command never answered within RETRY_WITHIN_S, an answer later
than the deadline + 1 s, a refusal a true answer would not give, a 5xx other
than a 503, a client that crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import psycopg
from aiosmtpd.controller import Controller

from bench.setup import Service, Stack, free_port, start_service

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

PASSWORDS = (
    "chaos test passphrase",
    "a changed chaos passphrase",
    "reset chaos phrase",
)
REFRESHES = 3
# A client retries an unanswered command this long (the reuse interval is 10 s).
RETRY_WITHIN_S = 8.0
MAIL_WAIT_S = 30.0
ANSWER_WITHIN_S = 6.0  # the default request deadline + 1 s
INFORMATIVE = 4  # the first counts describe the run; every later one is a fault
TOKEN = re.compile(rb"token=([\w.-]+)")


class Inbox:
    """A loopback SMTP server's mailbox: the newest link's token per address."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, _: SMTP, __: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        mail = message_from_bytes(raw)
        payload = mail.get_payload(decode=True)
        found = TOKEN.search(payload if isinstance(payload, bytes) else b"")
        if found:
            with self.lock:
                self.tokens[str(mail["To"])] = found[1].decode()
        return "250 OK"

    def wait_for(self, address: str, timeout: float) -> str | None:
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            with self.lock:
                if address in self.tokens:
                    return self.tokens[address]
            time.sleep(0.2)
        return None


@dataclass
class Held:
    """One session as its client knows it."""

    refresh_token: str
    access_token: str
    alive: bool = True
    rotations: int = 0


@dataclass
class Account:
    email: str
    password: str
    user_id: str = ""
    sessions: dict[str, Held] = field(default_factory=dict)  # session id -> held
    complete: bool = True  # every session-opening command was answered


@dataclass
class Seen:
    """What the service acknowledged, as clients saw it."""

    statuses: Counter[int] = field(default_factory=Counter)
    accounts: list[Account] = field(default_factory=list)
    unanswered: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)  # answered on a retry
    false_refusals: Counter[str] = field(default_factory=Counter)
    asks_without_mail: int = 0
    slow: int = 0  # answers later than the deadline + 1 s
    crashed: int = 0  # client threads ended by an error of their own
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


class Target:
    """Where the service listens now (it moves when restarted)."""

    def __init__(self, service: Service) -> None:
        self.service = service


class UnansweredError(Exception):
    """A command got no definite answer within RETRY_WITHIN_S."""


class RefusedError(Exception):
    """A command got an answer a true service would not give here."""


def session_of(tokens: dict[str, Any]) -> str:
    return str(uuid.UUID(hex=str(tokens["refresh_token"]).partition(".")[0]))


class Client:
    """One well-behaved client: retries what was not answered, as it must."""

    def __init__(self, target: Target, seen: Seen, inbox: Inbox) -> None:
        self.target, self.seen, self.inbox = target, seen, inbox
        self.http = httpx.Client(timeout=30)

    def send(
        self, what: str, method: str, path: str, expect: set[int], **kw: Any
    ) -> tuple[httpx.Response, bool]:
        """The first definite answer, and whether an earlier try went unanswered."""
        retried = False
        give_up = time.monotonic() + RETRY_WITHIN_S
        while time.monotonic() < give_up:
            sent = time.monotonic()
            try:
                answer = self.http.request(
                    method, self.target.service.base_url + path, **kw
                )
            except httpx.TransportError:
                self.timed(sent)  # a hang cut by a kill was slow too
                retried = True
                time.sleep(0.2)
                continue
            self.timed(sent)
            self.seen.answer(answer.status_code)
            if answer.status_code != 503:
                if answer.status_code not in expect:
                    self.seen.false_refusals[f"{what}: {answer.status_code}"] += 1
                    raise RefusedError(what)
                if retried:
                    self.seen.retried[what] += 1
                return answer, retried
            retried = True
            time.sleep(0.2)
        self.seen.unanswered[what] += 1
        raise UnansweredError(what)

    def timed(self, sent: float) -> None:
        if time.monotonic() - sent > ANSWER_WITHIN_S:
            with self.seen.lock:
                self.seen.slow += 1

    def live(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                email = f"chaos-{random.getrandbits(48):x}@example.com"
                with contextlib.suppress(UnansweredError, RefusedError):
                    self.account(Account(email, ""), stop)
        except Exception:
            with self.seen.lock:
                self.seen.crashed += 1
            raise

    def open_session(self, account: Account, path: str, password: str) -> str:
        """Sign up or log in under a fresh Idempotency-Key; the session's id."""
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"email": account.email, "password": password}
        try:
            answer, _ = self.send(
                path, "POST", path, {200, 201}, json=body, headers=key
            )
        except UnansweredError:
            account.complete = False  # a session may exist that nobody got
            raise
        tokens = answer.json()
        account.user_id = tokens["user"]["id"]
        account.password = password
        session_id = session_of(tokens)
        account.sessions[session_id] = Held(
            tokens["refresh_token"], tokens["access_token"]
        )
        return session_id

    def refresh(self, held: Held) -> None:
        answer, _ = self.send(
            "refresh",
            "POST",
            "/api/auth/refresh",
            {200},
            json={"refresh_token": held.refresh_token},
        )
        tokens = answer.json()
        held.refresh_token, held.access_token = (
            tokens["refresh_token"],
            tokens["access_token"],
        )
        held.rotations += 1

    def bearer(self, held: Held) -> dict[str, str]:
        return {"Authorization": f"Bearer {held.access_token}"}

    def account(self, account: Account, stop: threading.Event) -> None:
        first = self.open_session(account, "/api/auth/signup", PASSWORDS[0])
        self.seen.accounts.append(account)
        held = account.sessions[first]
        for _ in range(REFRESHES):
            self.refresh(held)
        if stop.is_set():
            return
        # A second session, ended by itself: a retry may find it ended (401).
        second = account.sessions[
            self.open_session(account, "/api/auth/login", account.password)
        ]
        self.log_out("logout current", "/api/auth/logout?scope=current", second)
        second.alive = False
        # A new password keeps this session and ends the others.
        self.send(
            "password change",
            "POST",
            "/api/auth/password",
            {200},
            json={"current_password": account.password, "new_password": PASSWORDS[1]},
            headers=self.bearer(held),
        )
        account.password = PASSWORDS[1]
        self.refresh(held)
        if stop.is_set():
            return
        self.reset(account)
        last = account.sessions[
            self.open_session(account, "/api/auth/login", account.password)
        ]
        self.refresh(last)
        if random.random() < 0.5:
            self.log_out("logout everywhere", "/api/auth/logout", last)
            for session in account.sessions.values():
                session.alive = False

    def log_out(self, what: str, path: str, held: Held) -> None:
        """Log out; a retry may find the session ended by the try it repeats
        (401), which only a retry may."""
        answer, retried = self.send(
            what, "POST", path, {200, 401}, headers=self.bearer(held)
        )
        if answer.status_code == 401 and not retried:
            self.seen.false_refusals[f"{what}: 401"] += 1
            raise RefusedError(what)

    def reset(self, account: Account) -> None:
        """Ask for a link, follow it: every session ends."""
        self.send(
            "forgot",
            "POST",
            "/api/auth/password/forgot",
            {202},
            json={"email": account.email},
        )
        token = self.inbox.wait_for(account.email, MAIL_WAIT_S)
        if token is None:
            with self.seen.lock:
                self.seen.asks_without_mail += 1
            raise UnansweredError("reset mail")
        self.send(
            "reset",
            "POST",
            "/api/auth/password/reset",
            {200},
            json={"token": token, "new_password": PASSWORDS[2]},
        )
        account.password = PASSWORDS[2]
        for session in account.sessions.values():
            session.alive = False


def kill_postgres(stack: Stack) -> None:
    """SIGKILL the postmaster and every backend, then start it again."""
    for proc in stack.postgres_processes():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(stack.postgres_processes(), timeout=10)
    stack.server.start()


def kill_api(stack: Stack, target: Target, env: dict[str, str], workers: int) -> None:
    """SIGKILL the API's every process, then serve again."""
    for proc in target.service.process.tree():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    target.service.process.popen.wait()
    target.service = start_service(stack, target.service.database_url, workers, **env)


def in_log(url: str) -> tuple[set[str], set[str], Counter[str], Counter[str], int]:
    """Registered users, users read model, sessions per user, rotations per
    session, and revocations for reuse, as stored."""
    with psycopg.connect(url) as conn:
        registered = {
            str(r[0])
            for r in conn.execute(
                "SELECT originator_id FROM auth_events"
                " WHERE topic = 'authledger:User.Registered'"
            )
        }
        users = {str(r[0]) for r in conn.execute("SELECT id FROM read_models.users")}
        opened = Counter(
            str(r[0])
            for r in conn.execute(
                "SELECT originator_id FROM auth_events"
                " WHERE topic = 'authledger:User.LoggedIn'"
            )
        )
        rotated = Counter(
            str(r[0])
            for r in conn.execute(
                "SELECT originator_id FROM auth_events"
                " WHERE topic = 'authledger:Session.TokenRotated'"
            )
        )
        row = conn.execute(
            "SELECT count(*) FROM auth_events WHERE topic ="
            " 'authledger:Session.Revoked' AND convert_from(state, 'UTF8')"
            " LIKE '%reuse_detected%'"
        ).fetchone()
    return registered, users, opened, rotated, row[0] if row else 0


def verify(url: str, base_url: str, seen: Seen) -> dict[str, int]:
    """Count what holds and what does not; every violation is a nonzero count."""
    registered, users, opened, rotated, reuse = in_log(url)
    sessions = [s for a in seen.accounts for s in a.sessions.items()]
    faults: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for _, held in sessions:
            me = http.get(
                "/api/auth/me", headers={"Authorization": f"Bearer {held.access_token}"}
            )
            again = http.post(
                "/api/auth/refresh", json={"refresh_token": held.refresh_token}
            )
            if held.alive:
                faults["held sessions whose access token is refused"] += (
                    me.status_code != 200
                )
                faults["held sessions that no longer refresh"] += (
                    again.status_code != 200
                )
            else:
                faults["ended sessions still refreshing"] += again.status_code != 401
                faults["ended sessions whose access token works"] += (
                    me.status_code != 401
                )
        for account in seen.accounts:
            login = http.post(
                "/api/auth/login",
                json={"email": account.email, "password": account.password},
            )
            faults["acknowledged passwords that do not log in"] += (
                login.status_code != 200
            )
    return {
        "accounts": len(seen.accounts),
        "sessions acknowledged": len(sessions),
        "rotations acknowledged": sum(h.rotations for _, h in sessions),
        "commands answered only on a retry": sum(seen.retried.values()),
        "signups missing from the log": sum(
            a.user_id not in registered for a in seen.accounts
        ),
        "users read model != log": len(users ^ registered),
        "acknowledged rotations missing from the log": sum(
            h.rotations > rotated[sid] for sid, h in sessions
        ),
        "sessions in the log no client got": sum(
            opened[a.user_id] != len(a.sessions) for a in seen.accounts if a.complete
        ),
        **faults,
        "sessions revoked by reuse detection": reuse,
        "commands never answered": sum(seen.unanswered.values()),
        "refusals a true answer would not give": sum(seen.false_refusals.values()),
        "reset asks whose mail never came": seen.asks_without_mail,
        "answers later than the deadline + 1 s": seen.slow,
        "client threads that crashed": seen.crashed,
        "5xx other than 503": sum(
            n for status, n in seen.statuses.items() if status >= 500 and status != 503
        ),
    }


@contextlib.contextmanager
def smtp(inbox: Inbox) -> Iterator[int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def run(args: argparse.Namespace, stack: Stack, seen: Seen) -> dict[str, int]:
    inbox = Inbox()
    stop = threading.Event()
    with smtp(inbox) as port:
        env = {
            "AUTHLEDGER_BCRYPT_ROUNDS": "10",
            "AUTHLEDGER_SMTP_HOST": "127.0.0.1",
            "AUTHLEDGER_SMTP_PORT": str(port),
            "AUTHLEDGER_SMTP_TLS": "none",
        }
        url = stack.create_database("chaos")
        target = Target(start_service(stack, url, args.workers, **env))
        clients = [Client(target, seen, inbox) for _ in range(args.clients)]
        threads = [threading.Thread(target=c.live, args=(stop,)) for c in clients]
        for thread in threads:
            thread.start()
        try:
            for _ in range(args.kills):
                time.sleep(args.every)
                kill_postgres(stack)
                time.sleep(args.every)
                kill_api(stack, target, env, args.workers)
            time.sleep(args.every)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        counts = verify(url, target.service.base_url, seen)
        target.service.stop()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kills", type=int, default=3, help="of each, in turn")
    parser.add_argument("--every", type=float, default=12.0, help="seconds apart")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    stack = Stack()
    seen = Seen()
    try:
        counts = run(args, stack, seen)
    finally:
        stack.close()
    print(f"kills: PostgreSQL {args.kills}, API {args.kills}")
    print(
        "answers: " + ", ".join(f"{s}: {n}" for s, n in sorted(seen.statuses.items()))
    )
    for name, count in counts.items():
        print(f"{name}: {count}")
    for kind in (seen.retried, seen.unanswered, seen.false_refusals):
        for what, n in sorted(kind.items()):
            print(f"  {what}: {n}")
    violations = sum(list(counts.values())[INFORMATIVE:])
    print("OK" if not violations else f"VIOLATIONS: {violations}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
