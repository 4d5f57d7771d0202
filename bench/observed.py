"""The cost of being observed: /me with metrics and traces on, against the
same service with them off, runs alternating in one bench run."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx

from bench.drive import Runs
from bench.report import Row, at_least
from bench.setup import free_port, start_service
from bench.stats import ratio

if TYPE_CHECKING:
    from bench.drive import Driver, Target
    from bench.options import Options
    from bench.setup import Service, Stack

GOAL_OF_OFF = 0.9  # "under 10 % apart"
SCRAPE_S = 1.0  # a busy Prometheus's interval
ALWAYS = ("parentbased_always_on", "1.0")  # the SDK's default sampler
OBSERVED = "observed service"  # its processes' group in the bound column


class OtlpSink:
    """An OTLP/HTTP receiver that takes every export and keeps its size: the
    spans are made, batched, encoded and sent as to a real collector."""

    def __init__(self) -> None:
        self.received = 0
        sink = self

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                sink.received += len(self.rfile.read(length))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receive)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"

    def stop(self) -> None:
        self.server.shutdown()


class Scraper:
    """Scrape /metrics every SCRAPE_S while a run lasts, as Prometheus would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(SCRAPE_S):
            if httpx.get(self.url, timeout=5).status_code == 200:
                self.scrapes += 1

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def observed_rows(
    opts: Options, stack: Stack, service: Service, driver: Driver, ours: Target
) -> list[Row]:
    """/me at 32 connections on the bench's service (metrics listener off, no
    tracing) against a second one, same database and secrets, with the metrics
    listener scraped every second and traces exported to OTLP: every request
    traced, then one in ten (the SDK's standard ratio sampler)."""
    return [
        _observed(opts, stack, service, driver, ours, "every request traced", ALWAYS),
        _observed(
            opts,
            stack,
            service,
            driver,
            ours,
            "10 % of traces sampled",
            ("parentbased_traceidratio", "0.1"),
        ),
    ]


def _observed(
    opts: Options,
    stack: Stack,
    service: Service,
    driver: Driver,
    ours: Target,
    what: str,
    sampling: tuple[str, str],
) -> Row:
    sink = OtlpSink()
    metrics_port = free_port()
    on = start_service(
        stack,
        service.database_url,
        log_name="observed-service",
        AUTHLEDGER_METRICS_PORT=str(metrics_port),
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=sink.url,
        OTEL_SERVICE_NAME="authledger-bench",
        OTEL_TRACES_SAMPLER=sampling[0],
        OTEL_TRACES_SAMPLER_ARG=sampling[1],
    )
    scraper = Scraper(f"http://127.0.0.1:{metrics_port}/metrics")
    driver.groups[OBSERVED] = on.process.tree
    off_runs, on_runs = Runs(), Runs()
    pairs = ((service.base_url, off_runs), (on.base_url, on_runs))
    try:
        for _ in range(opts.runs):
            for base_url, runs in pairs:
                url = base_url + ours.me_path
                runs.add(*driver.run(url, ours.me(2), 2, 32))
    finally:
        del driver.groups[OBSERVED]
        scraper.stop()
        on.stop()
        sink.stop()
    of_off = ratio(on_runs.rps, off_runs.rps)
    return Row(
        f"me/s, 32 connections, metrics + tracing on ({what})",
        on_runs.show(),
        f"off (same service, no listener, no tracing): {off_runs.show()};"
        f" {scraper.scrapes} scrapes, {sink.received / 1e6:.1f} MB of spans exported",
        f"{of_off.show('x')} of off",
        on_runs.verdict(),
        f"≥ {GOAL_OF_OFF}x of off (under 10 % apart, median)",
        at_least(of_off.median, GOAL_OF_OFF),
    )
