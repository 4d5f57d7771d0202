"""Webhook delivery to one local receiver: events/s from a backlog, and the
lag from a command's commit to the receiver getting its event.

The receiver is an HTTP server in this process that answers 204 at once.
- throughput: a backlog of events (token rotations, one event each) is written
  first, then a replay from its first event sends it: events / (last arrival
  - first arrival). Baseline: the same bodies POSTed by a plain loop on one
  kept-alive connection from this process (what one ordered sender could
  reach without the service's reads and records).
- lag: token rotations one at a time, a pause between them; from the command's
  return (its commit) to the receiver's arrival of that position.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from bench import freshness, seed
from bench.freshness import Positions
from bench.stats import Figure, percentile

if TYPE_CHECKING:
    from bench.options import Options
    from interfaces.bootstrap import Services

TIMEOUT_S = 60.0
PAUSE_S = 0.02


@dataclass(frozen=True)
class Delivery:
    rate: Figure  # events/s delivered from a backlog
    raw_rate: Figure  # events/s of a plain POST loop to the same receiver
    p50: Figure  # ms, commit → arrival
    p99: Figure


class _Receiver:
    """Notes when each event (by its cursor) first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                cursor = int(json.loads(body)["data"]["cursor"])
                receiver.arrived.setdefault(cursor, time.perf_counter())
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, cursors: list[int]) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not all(c in self.arrived for c in cursors):
            if time.monotonic() > deadline:
                raise RuntimeError("webhook deliveries did not arrive")
            time.sleep(0.001)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Rotations:
    """Rotate one session's refresh token: one event, no bcrypt."""

    def __init__(self, services: Services, positions: Positions) -> None:
        (user_id,) = seed.create_users(
            services, [f"hooks-{time.time_ns()}@bench.example"]
        )
        (grant,) = seed.open_sessions(services, [user_id])
        self.services, self.positions = services, positions
        self.token = grant.refresh_token

    def next(self) -> int:
        """Rotate once; the position of its event (committed on return)."""
        self.token = self.services.app.refresh(
            self.token, freshness.CLIENT
        ).refresh_token
        return self.positions.position


def _raw_rate(port: int, body: bytes, count: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    started = time.perf_counter()
    for n in range(count):
        one = body.replace(b'"cursor": "0"', f'"cursor": "{n + 1}"'.encode())
        conn.request("POST", "/", one, {"content-type": "application/json"})
        conn.getresponse().read()
    conn.close()
    return count / (time.perf_counter() - started)


def measure(services: Services, opts: Options) -> Delivery:
    print("webhook delivery to a local receiver", file=sys.stderr, flush=True)
    receiver = _Receiver()
    try:
        return _measure(
            services, receiver, opts.runs, opts.webhook_backlog, opts.webhook_samples
        )
    finally:
        receiver.close()


def _measure(
    services: Services, receiver: _Receiver, runs: int, backlog: int, samples: int
) -> Delivery:
    webhooks = services.webhooks
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    endpoint, _ = webhooks.add(url, ["session.token_rotated"], "bench")
    body = json.dumps(
        {"type": "session.token_rotated", "timestamp": "", "data": {"cursor": "0"}}
    ).encode()
    rates, raws, p50s, p99s = [], [], [], []
    with Positions(services) as positions:
        rotations = _Rotations(services, positions)
        for _ in range(runs):
            written = [rotations.next() for _ in range(backlog)]
            receiver.wait_for(written)  # delivered as they came, first
            receiver.arrived.clear()
            webhooks.replay(endpoint.id, written[0], "bench")
            receiver.wait_for(written)
            arrivals = [receiver.arrived[c] for c in written]
            rates.append((backlog - 1) / (max(arrivals) - min(arrivals)))
            raws.append(_raw_rate(receiver.port, body, backlog))
            delays = []
            for _ in range(samples):
                time.sleep(PAUSE_S)
                position = rotations.next()
                committed = time.perf_counter()
                receiver.wait_for([position])
                delays.append((receiver.arrived[position] - committed) * 1000)
            p50s.append(percentile(delays, 0.50))
            p99s.append(percentile(delays, 0.99))
    webhooks.remove(endpoint.id, "bench")
    return Delivery(Figure.of(rates), Figure.of(raws), Figure.of(p50s), Figure.of(p99s))
