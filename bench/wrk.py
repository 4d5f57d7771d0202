"""wrk: installed when missing, run with a Lua script, its report parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
# Latency above the duration of a run must not count as an error: wrk's
# default timeout (2 s) would turn a slow login storm into socket errors.
TIMEOUT = "60s"


def ensure_wrk() -> str:
    """Path of wrk; install the distribution's package first if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install")
    return found


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def _latency(text: str, percent: str) -> float:
    found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(found.group(1)) * UNITS[found.group(2)] if found else float("nan")


def parse(text: str) -> WrkResult:
    """Read Requests/sec, the 50% and 99% latencies and the error counts."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if not rps or not total:
        raise RuntimeError(f"unreadable wrk output:\n{text}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_latency(text, "50"),
        p99_ms=_latency(text, "99"),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, sockets.groups())) if sockets else 0,
    )


class Wrk:
    """One wrk process; start it, then `result()` waits for it and parses."""

    def __init__(
        self,
        url: str,
        script: str,
        *,
        threads: int,
        connections: int,
        duration: float,
    ) -> None:
        self._script = Path(tempfile.mkstemp(prefix="bench-", suffix=".lua")[1])
        self._script.write_text(script)
        argv = [ensure_wrk(), f"-t{threads}", f"-c{connections}"]
        argv += [f"-d{max(1, round(duration))}s", "--latency", "--timeout", TIMEOUT]
        argv += ["-s", str(self._script), url]
        self._popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def result(self) -> WrkResult:
        try:
            out, _ = self._popen.communicate()
        finally:
            self._script.unlink(missing_ok=True)
        if self._popen.returncode:
            raise RuntimeError(f"wrk failed ({self._popen.returncode}):\n{out}")
        return parse(out)

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait()
        self._script.unlink(missing_ok=True)


def run_wrk(
    url: str, script: str, *, threads: int, connections: int, duration: float
) -> WrkResult:
    """Run wrk to completion."""
    wrk = Wrk(url, script, threads=threads, connections=connections, duration=duration)
    try:
        return wrk.result()
    finally:
        wrk.kill()
