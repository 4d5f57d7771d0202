"""Rows over a generated log: rebuild, raw read + decode, audit history, export."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import psutil

from application.audit import Auditor
from bench import eventlog, seed
from bench.procs import Group, Load, Meter
from bench.report import Row, at_least
from bench.setup import REPO
from bench.stats import Figure, number, percentile, ratio
from infrastructure.read_model_lifecycle import DROP_GRACE_S
from interfaces import bootstrap

if TYPE_CHECKING:
    from bench.options import Options
    from bench.setup import Stack
    from interfaces.bootstrap import Services

# Every read model, once (each may list several versions).
READ_MODELS = tuple(dict.fromkeys(spec.name for spec in bootstrap.READ_MODELS))
REBUILD_GOAL = 40_000
PAGE = 1000
HISTORY_REPEATS = 5


class OfflineRows:
    """A separate database holding the generated log; the rows measured on it."""

    def __init__(self, opts: Options, stack: Stack) -> None:
        self.opts, self.stack = opts, stack
        self.url = stack.create_database("eventlog")
        self.data_dir = stack.tmp / "eventlog-data"
        self.env = {
            **os.environ,
            "AUTHLEDGER_DATABASE_URL": self.url,
            "AUTHLEDGER_DATA_DIR": str(self.data_dir),
            "AUTHLEDGER_BCRYPT_ROUNDS": "12",
        }
        self.services: Services = seed.connect(self.url, self.data_dir)
        self.groups: dict[str, Group] = {"postgres": stack.postgres_processes}
        started = time.monotonic()
        eventlog.generate(self.services, opts.events)
        self.history_user = eventlog.long_history(self.services, opts.history_events)
        self.events = eventlog.count_events(self.services)
        self.generated_s = time.monotonic() - started

    def close(self) -> None:
        self.services.close()

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "interfaces.cli", *args]

    def rebuild_and_raw(self) -> Row:
        """All read models rebuilt in one pass by one process, against raw decoding."""
        totals: list[float] = []
        cli_totals: list[float] = []
        raws: list[float] = []
        loads: list[Load] = []
        per_model: dict[str, list[float]] = {m: [] for m in READ_MODELS}
        for _ in range(self.opts.runs):
            with Meter(self.groups, self.stack.server_url) as meter:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.rebuild", *READ_MODELS],
                    env=self.env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if done.returncode:
                raise RuntimeError(f"rebuild failed:\n{done.stderr[-3000:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            loads.append(meter.load)
            totals.append(report["events"] / report["switched_s"])
            cli_totals.append(report["events"] / report["seconds"])
            for name in READ_MODELS:
                model = report["per_model"][name]
                per_model[name].append(model["applied"] / model["busy_s"])
            raws.append(self._raw_rate())
        rebuild, raw = Figure.of(totals), Figure.of(raws)
        models = ", ".join(
            f"{name} {Figure.of(rates).show()}" for name, rates in per_model.items()
        )
        return Row(
            f"rebuild events/s ({self.events:,} events, all"
            f" {len(READ_MODELS)} read models in one pass)",
            f"{rebuild.show('events/s')} in all, until the last switch"
            f" ({Figure.of(cli_totals).show('events/s')} as the CLI counts it:"
            f" + {DROP_GRACE_S:.0f} s grace and the drops); each read model,"
            f" events / its own apply time: {models}",
            f"raw select_notifications + decode (this process): {raw.show('events/s')}",
            f"{ratio(rebuild, raw).show('x')} of raw",
            Load.mean(loads).verdict(
                "one `python -m bench.rebuild` process (= `projections rebuild`"
                " of all four) = loadgen: one thread reads, decodes and applies",
                one_thread="loadgen",
            ),
            f"≥ {REBUILD_GOAL:,} events/s in all"
            + ("" if self.events >= 1_000_000 else " (goal set for 1 M events)"),
            at_least(rebuild.median, REBUILD_GOAL),
        )

    def _raw_rate(self) -> float:
        app = self.services.app
        started, count, position = time.perf_counter(), 0, 1
        while True:
            page = app.recorder.select_notifications(position, limit=PAGE)
            for notification in page:
                app.mapper.to_domain_event(notification)
            count += len(page)
            if len(page) < PAGE:
                break
            position = page[-1].id + 1
        return count / (time.perf_counter() - started)

    def audit_history(self) -> Row:
        auditor = Auditor(self.services.app)
        p50s, entries, loads = [], 0, []
        for _ in range(self.opts.runs):
            times = []
            with Meter(self.groups, self.stack.server_url) as meter:
                for _ in range(HISTORY_REPEATS):
                    started = time.perf_counter()
                    entries = len(auditor.timeline(self.history_user))
                    times.append((time.perf_counter() - started) * 1000)
            p50s.append(percentile(times, 0.5))
            loads.append(meter.load)
        sessions = self.opts.history_events // 10
        return Row(
            f"audit history: one user with {self.opts.history_events:,} events",
            f"{Figure.of(p50s).show('ms')} p50 of {HISTORY_REPEATS} replays "
            f"({entries:,} entries, user stream + one stream per session)",
            bound=Load.mean(loads).verdict(
                f"Auditor.timeline in this process (bench): 1 query for the user's"
                f" stream + 1 per session ({sessions:,})",
                one_thread="bench",
            ),
        )

    def export(self) -> Row:
        rates, peaks, loads = [], [], []
        for _ in range(self.opts.runs):
            with Meter(self.groups, self.stack.server_url) as meter:
                rate, peak = self._export_once()
            rates.append(rate)
            peaks.append(peak)
            loads.append(meter.load)
        return Row(
            f"export: `audit export` of {self.events:,} events",
            f"{Figure.of(rates).show('events/s')}; peak RSS "
            f"{Figure.of(peaks).show('MiB')}",
            bound=Load.mean(loads).verdict(
                "the export process = loadgen", one_thread="loadgen"
            ),
        )

    def _export_once(self) -> tuple[float, float]:
        started = time.perf_counter()
        proc = subprocess.Popen(
            self._cli("audit", "export"),
            env=self.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak = [0.0]
        watcher = threading.Thread(target=_watch_rss, args=(proc.pid, peak))
        watcher.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _end(proc)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        watcher.join()
        if proc.returncode:
            raise RuntimeError("audit export failed")
        # ru_maxrss (KiB) of this child alone: the true peak, not a sample.
        peak_mib = max(peak[0], usage.ru_maxrss / 1024)
        return self.events / elapsed, peak_mib


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child still running (after an error or Ctrl-C)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _watch_rss(pid: int, peak: list[float]) -> None:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        while proc.status() != psutil.STATUS_ZOMBIE:
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            time.sleep(0.05)


def describe(offline: OfflineRows) -> str:
    rate = offline.events / offline.generated_s
    return (
        f"log of {number(offline.events)} events generated in"
        f" {offline.generated_s:.0f} s ({number(rate)}/s)"
    )
