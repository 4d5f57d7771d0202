"""Rows over a generated log: rebuild, raw read + decode, audit history, export."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import psutil
import psycopg

from application.audit import Auditor
from bench import eventlog, seed
from bench.procs import Group, Load, Meter
from bench.report import Row
from bench.setup import REPO
from bench.stats import Figure, number, percentile, ratio
from interfaces import bootstrap
from interfaces.bootstrap import newest_versions

if TYPE_CHECKING:
    from bench.options import Options
    from bench.setup import Stack
    from interfaces.bootstrap import Services

READ_MODELS = tuple(newest_versions(bootstrap.READ_MODELS))
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
        self.events = self.services.app.recorder.max_notification_id() or 0
        self.generated_s = time.monotonic() - started

    def close(self) -> None:
        self.services.close()

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "interfaces.cli", *args]

    def rebuild_and_raw(self) -> Row:
        """All three read models rebuilt at once by the CLI, against raw decoding."""
        walls: list[float] = []
        raws: list[float] = []
        loads: list[Load] = []
        per_model: dict[str, list[float]] = {m: [] for m in READ_MODELS}
        for _ in range(self.opts.runs):
            started = time.time()
            with Meter(self.groups, self.stack.server_url) as meter:
                procs = [
                    subprocess.Popen(
                        self._cli("projections", "rebuild", name),
                        env=self.env,
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for name in READ_MODELS
                ]
                try:
                    failed = [p.args for p in procs if p.wait()]
                finally:
                    for proc in procs:
                        _end(proc)
                if failed:
                    raise RuntimeError(f"rebuild failed: {failed!r}")
            loads.append(meter.load)
            switched = self._switched_at()
            for name in READ_MODELS:
                per_model[name].append(self.events / (switched[name] - started))
            walls.append(self.events / (max(switched.values()) - started))
            raws.append(self._raw_rate())
        rebuild, raw = Figure.of(walls), Figure.of(raws)
        models = ", ".join(
            f"{name} {Figure.of(rates).show()}" for name, rates in per_model.items()
        )
        return Row(
            f"rebuild events/s ({self.events:,} events,"
            f" {len(READ_MODELS)} read models at once)",
            f"{rebuild.show('events/s')} (until the last switch); each: {models}",
            f"raw select_notifications + decode: {raw.show('events/s')}",
            f"{ratio(rebuild, raw).show('x')} of raw",
            Load.mean(loads).verdict(
                f"{len(READ_MODELS)} `projections rebuild` processes = loadgen"
            ),
        )

    def _switched_at(self) -> dict[str, float]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT name, extract(epoch FROM switched_at)"
                " FROM authledger.read_model_versions"
            ).fetchall()
        return {str(name): float(at) for name, at in rows}

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
