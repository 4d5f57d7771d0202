"""`make load`: minutes of mixed traffic; fails on any 5xx, lag or growing memory.

Loopback only, bounded in time, stops by itself. Virtual users sign up, then
loop over /me, refresh and an occasional logout + login, while a sampler
records the service's RSS and the read models' lag each second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from application.store import AuthEventLog
from bench.setup import Stack, start_service
from infrastructure.data_keys import postgres_sealing
from infrastructure.database import eventsourcing_env
from infrastructure.event_store import AuthRecorder
from infrastructure.read_model_lifecycle import ReadModels
from interfaces.bootstrap import READ_MODELS

PASSWORD = "load test password"
MAX_END_LAG = 1000  # events the read models may trail by when traffic stops
MAX_RSS_GROWTH = 1.25  # last sample over the mid-run sample
LAG_LIMIT = 100_000  # lag is counted up to this many events


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    lags: list[int] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)


async def user(http: httpx.AsyncClient, n: int, deadline: float, tally: Tally) -> None:
    email = f"load-{n}-{random.getrandbits(32):x}@example.com"
    answer = await http.post(
        "/api/auth/signup", json={"email": email, "password": PASSWORD}
    )
    tally.statuses[answer.status_code] += 1
    if answer.status_code != 201:
        return
    tokens = answer.json()
    while time.monotonic() < deadline:
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for _ in range(5):
            tally.statuses[
                (await http.get("/api/auth/me", headers=headers)).status_code
            ] += 1
        refreshed = await http.post(
            "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        tally.statuses[refreshed.status_code] += 1
        if refreshed.status_code == 200:
            tokens = refreshed.json()
        if random.random() < 0.05:
            out = await http.post("/api/auth/logout", headers=headers)
            again = await http.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            tally.statuses[out.status_code] += 1
            tally.statuses[again.status_code] += 1
            if again.status_code == 200:
                tokens = again.json()


async def sample(service: object, url: str, deadline: float, tally: Tally) -> None:
    """Each second: the lagging read models' lag in events, and the service's RSS.

    The consistent read models commit with the events: they never lag.
    """
    env = {**eventsourcing_env(url, 1, 2), "CREATE_TABLE": "n"}
    # It counts positions and opens no event: any key-encryption key will do.
    mapper_of = postgres_sealing(secrets.token_bytes(32))
    log = AuthEventLog(env, mapper_of=mapper_of)
    models = ReadModels(url, READ_MODELS, env, mapper_of)
    recorder = log.recorder
    if not isinstance(recorder, AuthRecorder):
        raise TypeError("the service keeps its events with the AuthRecorder")
    try:
        while time.monotonic() < deadline:
            lag = await asyncio.to_thread(models.lag, recorder, log.name, LAG_LIMIT)
            tally.lags.append(lag)
            tally.rss.append(sum(service.process.rss_mib()))  # type: ignore[attr-defined]
            await asyncio.sleep(1)
    finally:
        log.close()


async def drive(
    base_url: str, service: object, url: str, seconds: float, users: int
) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=users)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        await asyncio.gather(
            sample(service, url, deadline, tally),
            *(user(http, n, deadline, tally) for n in range(users)),
        )
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--users", type=int, default=16)
    args = parser.parse_args()
    stack = Stack()
    try:
        url = stack.create_database("load")
        service = start_service(stack, url)
        try:
            started = time.monotonic()
            tally = asyncio.run(
                drive(service.base_url, service, url, args.seconds, args.users)
            )
            elapsed = time.monotonic() - started
        finally:
            service.stop()
    finally:
        stack.close()
    sys.exit(report(tally, elapsed))


def report(tally: Tally, elapsed: float) -> int:
    total = sum(tally.statuses.values())
    errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    middle = tally.rss[len(tally.rss) // 2] if tally.rss else 0.0
    growth = tally.rss[-1] / middle if middle else 1.0
    end_lag = tally.lags[-1] if tally.lags else 0
    print(f"requests        {total} in {elapsed:.0f} s ({total / elapsed:.0f}/s)")
    print(f"statuses        {dict(sorted(tally.statuses.items()))}")
    print(f"5xx             {errors}   (must be 0)")
    print(
        f"read-model lag  max {max(tally.lags, default=0)}, at the end {end_lag} events"
        f"   (end must be <= {MAX_END_LAG})"
    )
    first, last = (tally.rss[0], tally.rss[-1]) if tally.rss else (0.0, 0.0)
    print(
        f"service RSS     first {first:.0f} MiB, mid {middle:.0f}, last {last:.0f}"
        f"   (last/mid must be <= {MAX_RSS_GROWTH})"
    )
    failed = errors > 0 or end_lag > MAX_END_LAG or growth > MAX_RSS_GROWTH
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    main()
