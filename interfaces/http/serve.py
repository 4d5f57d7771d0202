"""Serve the API with N single-process uvicorns on one port (SO_REUSEPORT, TCP_NODELAY).

`uvicorn --workers N` shares one listening socket: with few keep-alive
connections one worker tends to take them all, and its socket is made with
proto=0, so asyncio leaves TCP_NODELAY off and every request after the first on
a connection waits ~40 ms for a delayed ACK. Here each process binds its own
socket with SO_REUSEPORT (the kernel spreads connections by 4-tuple hash) and
proto=IPPROTO_TCP (asyncio then sets TCP_NODELAY on accepted connections).
"""

from __future__ import annotations

import logging.config
import multiprocessing
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, cast

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infrastructure.database import database_url
from infrastructure.logs import LogFormat, log_config
from infrastructure.metrics import ReadModelCollector, caught_up_times
from infrastructure.settings import Settings
from infrastructure.tracing import configure_tracing, exporters_asked
from interfaces.bootstrap import build_services, event_tables
from interfaces.http.metrics import start_metrics

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
MAX_HEAD_BYTES = 256 * 1024
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n"
    b"connection: close\r\n\r\n%s"
)
HEAD_TOO_LARGE_BODY = (
    b'{"detail":"The request\'s headers are too large.","code":"header_too_large"}'
)


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class BoundedHead(HttpToolsProtocol):
    """httptools, with a limit on a request's head: llhttp has none, so one
    endless header would grow the worker's memory until it died.

    Bytes are counted from the end of one request to the end of the next
    one's headers (a body read in the same chunk counts too: the limit is far
    above any head the API needs, the body's own limit far below it). Heads
    up to the limit reach the app, which answers an oversized token with its
    own 401.
    """

    _head_bytes = 0
    _in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                body = HEAD_TOO_LARGE_BODY
                self.transport.write(HEAD_TOO_LARGE % (len(body), body))
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()


def _serve_one(host: str, port: int, log_level: str, log_format: LogFormat) -> None:
    configure_tracing()
    config = uvicorn.Config(
        "interfaces.http.app:create_app",
        factory=True,
        log_level=log_level,
        log_config=log_config(log_format, log_level),
        access_log=False,  # the request log says more, and never a query
        proxy_headers=False,  # client addresses come from the socket, never a header
        server_header=False,
        http=BoundedHead,  # httptools; the loop is uvloop where installed
    )
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def serve(
    host: str, port: int, workers: int | None = None, log_level: str = "info"
) -> None:
    """Run the API; with no database configured, on the embedded PostgreSQL.

    The parent resolves the database and creates the tables once, then every
    worker process connects to the same URL, knowing how many they are (the
    pools' defaults depend on it). `workers` None: AUTHLEDGER_WORKERS. With
    metrics on, the parent serves them and even one worker is a process of
    its own (its instruments must know the directory they share before they
    are made).
    """
    settings = Settings()
    exporters_asked(os.environ)  # a tracing setting it cannot honour refuses here
    logging.config.dictConfig(log_config(settings.log_format, log_level))
    workers = workers or settings.workers
    url = database_url(settings)
    os.environ["AUTHLEDGER_DATABASE_URL"] = url
    os.environ["AUTHLEDGER_WORKERS"] = str(workers)
    services = build_services(
        settings.model_copy(
            update={
                "database_url": url,
                "run_projections": False,
                "run_webhooks": False,
            }
        )
    )
    events, app_name = event_tables(services.app).qualified()[0], services.app.name
    services.close()
    args = (host, port, log_level, settings.log_format)
    if settings.metrics_port is None:
        if workers <= 1:
            _serve_one(*args)
        else:
            _run_workers(workers, args)
        return
    with _metrics_directory() as directory:
        collector = ReadModelCollector(
            url, events, app_name, caught_up_times(directory)
        )
        start_metrics(
            settings.metrics_host, settings.metrics_port, directory, collector, url
        )
        _run_workers(workers, args, directory)


@contextmanager
def _metrics_directory() -> Iterator[str]:
    """Where the workers keep their instruments' values: PROMETHEUS_MULTIPROC_DIR
    if set (emptied of an earlier run's files), else a fresh one, removed after."""
    named = os.environ.get(MULTIPROC_DIR)
    if named:
        for stale in Path(named).glob("*.db"):
            stale.unlink()
        yield named
        return
    with tempfile.TemporaryDirectory(prefix="authledger-metrics-") as directory:
        os.environ[MULTIPROC_DIR] = directory
        yield directory


def _run_workers(
    workers: int, args: tuple[str, int, str, LogFormat], directory: str | None = None
) -> None:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_serve_one, args=args, daemon=False)
        for _ in range(workers)
    ]
    for child in children:
        child.start()

    def stop(*_: Any) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = {child.sentinel: child for child in children}
    while running:
        for ended in wait(list(running)):
            child = running.pop(cast("int", ended))
            child.join()
            if directory is not None and child.pid is not None:
                # Its counters stay in the sum; its in-flight gauges leave it.
                mark_process_dead(child.pid, directory)  # type: ignore[no-untyped-call]
