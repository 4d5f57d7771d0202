"""`make chaos`: mixed traffic while PostgreSQL and the API are killed, then a check.

Loopback only, bounded in time. Clients sign up, refresh, read their account
and end with a logout everywhere; meanwhile PostgreSQL (every process of it)
and the API (every worker) are SIGKILLed in turn and started again. At the
end: every acknowledged signup is in the log and in the read model, every
acknowledged logout left no live session, every session still held answers
a refresh, and the users read model equals the log. Prints the counts; exits
1 on any violation or any 5xx other than a 503.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
import psycopg

from bench.setup import Service, Stack, start_service

PASSWORD = "chaos test passphrase"
REFRESHES = 5
# A client retries an unanswered refresh this long (the reuse interval is 10 s).
RETRY_WITHIN_S = 8.0


@dataclass
class Seen:
    """What the service acknowledged, as a client saw it."""

    statuses: Counter[int] = field(default_factory=Counter)
    signups: set[str] = field(default_factory=set)
    logouts: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # user id -> refresh token
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


class Target:
    """Where the service listens now (it moves when restarted)."""

    def __init__(self, service: Service) -> None:
        self.service = service


def client(target: Target, seen: Seen, stop: threading.Event) -> None:
    """Accounts one after another: sign up, refresh, read, log out everywhere."""
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):
                account(http, target, seen, stop)


def account(
    http: httpx.Client, target: Target, seen: Seen, stop: threading.Event
) -> None:
    email = f"chaos-{random.getrandbits(48):x}@example.com"
    signed = http.post(
        f"{target.service.base_url}/api/auth/signup",
        json={"email": email, "password": PASSWORD},
    )
    seen.answer(signed.status_code)
    if signed.status_code != 201:
        return
    tokens = signed.json()
    user_id = tokens["user"]["id"]
    seen.signups.add(user_id)
    seen.held[user_id] = tokens["refresh_token"]
    for _ in range(REFRESHES):
        if stop.is_set():
            return
        refreshed = definite(
            lambda: http.post(
                f"{target.service.base_url}/api/auth/refresh",
                json={"refresh_token": seen.held[user_id]},
            ),
            seen,
        )
        if refreshed is None:  # never answered: not acknowledged, nor held
            del seen.held[user_id]
            return
        if refreshed.status_code == 200:
            tokens = refreshed.json()
            seen.held[user_id] = tokens["refresh_token"]
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        seen.answer(
            http.get(
                f"{target.service.base_url}/api/auth/me", headers=headers
            ).status_code
        )
    out = definite(
        lambda: http.post(
            f"{target.service.base_url}/api/auth/logout",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        ),
        seen,
    )
    if out is None or out.status_code == 200:  # ended, or perhaps: not held
        del seen.held[user_id]
    if out is not None and out.status_code == 200:
        seen.logouts.add(user_id)


def definite(call: Callable[[], httpx.Response], seen: Seen) -> httpx.Response | None:
    """Call until the answer is not a 503 or a dropped connection, as a client
    should: the same refresh token, again, within the reuse interval."""
    give_up = time.monotonic() + RETRY_WITHIN_S
    while time.monotonic() < give_up:
        try:
            answer = call()
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        seen.answer(answer.status_code)
        if answer.status_code != 503:
            return answer
        time.sleep(0.2)
    return None


def kill_postgres(stack: Stack) -> None:
    """SIGKILL the postmaster and every backend, then start it again."""
    for proc in stack.postgres_processes():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(stack.postgres_processes(), timeout=10)
    stack.server.start()


def kill_api(stack: Stack, target: Target, workers: int) -> None:
    """SIGKILL the API's every process, then serve again."""
    for proc in target.service.process.tree():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    target.service.process.popen.wait()
    target.service = start_service(
        stack, target.service.database_url, workers, AUTHLEDGER_BCRYPT_ROUNDS="10"
    )


def verify(url: str, base_url: str, seen: Seen) -> dict[str, int]:
    """Count what holds and what does not; every violation is a nonzero count."""
    with psycopg.connect(url) as conn:
        registered = {
            str(r[0])
            for r in conn.execute(
                "SELECT originator_id FROM auth_events"
                " WHERE topic = 'authledger:User.Registered'"
            )
        }
        users = {str(r[0]) for r in conn.execute("SELECT id FROM read_models.users")}
        live = {
            str(r[0])
            for r in conn.execute("SELECT user_id FROM read_models.active_sessions")
        }
        row = conn.execute(
            "SELECT count(*) FROM auth_events WHERE topic ="
            " 'authledger:Session.Revoked' AND convert_from(state, 'UTF8')"
            " LIKE '%reuse_detected%'"
        ).fetchone()
        reuse_revocations = row[0] if row else 0
    dead_sessions = 0
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for token in seen.held.values():
            answer = http.post("/api/auth/refresh", json={"refresh_token": token})
            dead_sessions += answer.status_code != 200
    return {
        "acknowledged signups": len(seen.signups),
        "acknowledged logouts": len(seen.logouts),
        "sessions held at the end": len(seen.held),
        "signups missing from the log": len(seen.signups - registered),
        "users read model != log": len(users ^ registered),
        "logged-out users with a live session": len(seen.logouts & live),
        "held sessions that no longer refresh": dead_sessions,
        "sessions revoked by reuse detection": reuse_revocations,
        "5xx other than 503": sum(
            n for status, n in seen.statuses.items() if status >= 500 and status != 503
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kills", type=int, default=3, help="of each, in turn")
    parser.add_argument("--every", type=float, default=12.0, help="seconds apart")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    stack = Stack()
    stop = threading.Event()
    seen = Seen()
    clients: list[threading.Thread] = []
    try:
        url = stack.create_database("chaos")
        target = Target(
            start_service(stack, url, args.workers, AUTHLEDGER_BCRYPT_ROUNDS="10")
        )
        clients = [
            threading.Thread(target=client, args=(target, seen, stop))
            for _ in range(args.clients)
        ]
        for thread in clients:
            thread.start()
        for _ in range(args.kills):
            time.sleep(args.every)
            kill_postgres(stack)
            time.sleep(args.every)
            kill_api(stack, target, args.workers)
        time.sleep(args.every)
        stop.set()
        for thread in clients:
            thread.join()
        counts = verify(url, target.service.base_url, seen)
        target.service.stop()
    finally:
        stop.set()
        stack.close()
    print(f"kills: PostgreSQL {args.kills}, API {args.kills}")
    print(
        "answers: " + ", ".join(f"{s}: {n}" for s, n in sorted(seen.statuses.items()))
    )
    for name, count in counts.items():
        print(f"{name}: {count}")
    violations = sum(list(counts.values())[3:])
    print("OK" if not violations else f"VIOLATIONS: {violations}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
