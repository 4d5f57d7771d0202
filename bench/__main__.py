"""`python -m bench [--peer] [--runs N] [--duration S] [--quick]`: print the table."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from bench import bcrypt_bound, freshness, seed
from bench.drive import Driver
from bench.http_rows import HttpRows
from bench.offline import OfflineRows, describe
from bench.options import Options
from bench.peer import Peer, ensure_venv
from bench.report import Row, machine, print_table
from bench.setup import Stack, start_service
from bench.stats import Figure
from bench.wrk import ensure_wrk

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.procs import Group
    from bench.setup import Service

NOTES = [
    "Every figure: median [min-max] over the runs; every ratio pairs run i with"
    " run i of the same invocation (bounds are measured in it too).",
    "bcrypt cost 12 everywhere (service, peer, bound). Load: wrk (Debian package),"
    " closed loop, 60 s timeout; latencies are wrk's, uncorrected.",
    "bound by - cores used on average: service = `authledger serve` and its"
    " workers (which also run the projections), peer = its workers, postgres ="
    " server and backends, loadgen = wrk / pgbench / CLI children, bench = this"
    " process, irq = interrupts (loopback TCP), other = the rest of the machine."
    " 'CPU' when the machine is >= 85 % busy.",
    "pg backends waiting: mean number of active backends in each wait event"
    " (Lock:relation = the events table's EXCLUSIVE lock taken per save),"
    " sampled every 50 ms; pg connections: peak per database (the bench's server"
    " allows 300, so both services' pools fit side by side).",
]


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--peer", action="store_true", help="also run the peer")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (≥ 3)")
    parser.add_argument("--duration", type=float, default=10, help="s per wrk run")
    parser.add_argument("--quick", action="store_true", help="smoke run, small sizes")
    args = parser.parse_args(argv)
    if args.quick:
        return Options.quick_run(args.peer)
    return Options(runs=args.runs, duration=args.duration, peer=args.peer)


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rss_samples(service: Service, count: int = 3) -> list[list[float]]:
    samples = []
    for i in range(count):
        if i:
            time.sleep(0.5)
        samples.append(service.process.rss_mib())
    return samples


def rss_row(idle: list[list[float]], loaded: list[list[float]]) -> Row:
    def show(samples: list[list[float]]) -> str:
        total = Figure.of(sum(s) for s in samples).show("MiB")
        each = " + ".join(f"{w:.0f}" for w in samples[-1])
        return f"{total} ({each})"

    return Row(
        "idle RSS / RSS after load (service's 2 worker processes)",
        f"idle {show(idle)}; after load {show(loaded)}",
        bound="3 samples each, 0.5 s apart; idle = after start, before any request",
    )


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def run(opts: Options, rows: list[Row], notes: list[str]) -> None:
    with ExitStack() as cleanup:
        step(f"bcrypt bound: {opts.runs} runs of 4 checks + 4 hashes at cost 12")
        bound = bcrypt_bound.measure(max(opts.runs, 1))
        ensure_wrk()
        if opts.peer:
            ensure_venv()
        step("embedded PostgreSQL 18 and `authledger serve --workers 2`")
        stack = Stack()
        cleanup.callback(stack.close)
        url = stack.create_database("authledger")
        service = start_service(stack, url)
        cleanup.callback(service.stop)
        idle = rss_samples(service)
        services = seed.connect(url, service.data_dir)
        cleanup.callback(services.close)
        groups: dict[str, Group] = {"service": service.process.tree}
        peer = None
        if opts.peer:
            step("peer: fastapi-users 15 in .peer-venv")
            peer = Peer(stack)
            cleanup.callback(peer.stop)
            groups["peer"] = peer.process.tree
        groups["postgres"] = stack.postgres_processes
        driver = Driver(groups, stack.server_url, opts.duration)
        step("write→read")
        p50, p99 = freshness.measure(services, opts.runs, opts.freshness_samples)
        step("seeding accounts")
        http = HttpRows(opts, stack, service, services, peer, driver)
        measures: list[tuple[str, Callable[[], Row]]] = [
            ("login", lambda: http.login(bound)),
            ("signup", lambda: http.signup(bound)),
            ("me", http.me),
            ("me during a login storm", http.storm),
            ("refresh", http.refresh),
        ]
        for name, measure in measures:
            step(f"{name}: {opts.runs} x {opts.duration:.0f} s")
            rows.append(measure())
        rows.append(
            Row(
                "write→read: commit → visible in all read models",
                f"p50 {p50.show('ms')}, p99 {p99.show('ms')} "
                f"({opts.freshness_samples} token rotations per run)",
                bound="service's projection runners, idle service",
            )
        )
        rss = rss_row(idle, rss_samples(service))
        service.stop()
        if peer:
            peer.stop()
        step(f"generating a log of {opts.events:,} events")
        offline = OfflineRows(opts, stack)
        cleanup.callback(offline.close)
        notes.append(describe(offline))
        step("rebuild + raw read")
        rows.append(offline.rebuild_and_raw())
        step("audit history")
        rows.append(offline.audit_history())
        step("export")
        rows.append(offline.export())
        rows.append(rss)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    rows: list[Row] = []
    notes = [f"machine: {machine()}", *NOTES]
    started = time.monotonic()
    try:
        run(opts, rows, notes)
    finally:
        minutes = (time.monotonic() - started) / 60
        title = (
            f"authledger benchmark — {opts.runs} run(s) per figure, "
            f"{opts.duration:.0f} s per wrk run{', quick' if opts.quick else ''}, "
            f"{minutes:.1f} min"
        )
        if rows:
            print_table(rows, title, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
