"""Serve the API with N single-process uvicorns on one port (SO_REUSEPORT, TCP_NODELAY).

`uvicorn --workers N` shares one listening socket: with few keep-alive
connections one worker tends to take them all, and its socket is made with
proto=0, so asyncio leaves TCP_NODELAY off and every request after the first on
a connection waits ~40 ms for a delayed ACK. Here each process binds its own
socket with SO_REUSEPORT (the kernel spreads connections by 4-tuple hash) and
proto=IPPROTO_TCP (asyncio then sets TCP_NODELAY on accepted connections).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from typing import Any

import uvicorn

from infrastructure.database import database_url
from infrastructure.settings import Settings
from interfaces.bootstrap import build_services
from interfaces.http.metrics import start_metrics

MAX_HEADER_BYTES = 256 * 1024


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


# uvicorn's access records: (client, method, path with query, HTTP version, status).
ACCESS_LOG_ARGS = 5


class WithoutQueryOrClient(logging.Filter):
    """Log the method, path and status of each request, never its query (it
    may carry a token) nor the client's address: a log line cannot be erased
    with the account (the audit trail keeps addresses sealed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == ACCESS_LOG_ARGS:
            _, method, full_path, *rest = args
            record.args = ("-", method, str(full_path).split("?", 1)[0], *rest)
        return True


def _serve_one(host: str, port: int, log_level: str) -> None:
    config = uvicorn.Config(
        "interfaces.http.app:create_app",
        factory=True,
        log_level=log_level,
        proxy_headers=False,  # client addresses come from the socket, never a header
        server_header=False,
        # Let oversized headers (a 100 KB "token") reach the app, which answers
        # them with its own 401 body instead of the server's bare 400.
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    logging.getLogger("uvicorn.access").addFilter(WithoutQueryOrClient())
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def serve(host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Run the API; with no database configured, on the embedded PostgreSQL.

    The parent resolves the database and creates the tables once, then every
    worker process connects to the same URL.
    """
    settings = Settings()
    url = database_url(settings)
    os.environ["AUTHLEDGER_DATABASE_URL"] = url
    build_services(
        settings.model_copy(
            update={
                "database_url": url,
                "run_projections": False,
                "run_webhooks": False,
            }
        )
    ).close()
    if settings.metrics_port is not None:
        start_metrics(settings.metrics_host, settings.metrics_port, url)
    if workers <= 1:
        _serve_one(host, port, log_level)
        return
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_serve_one, args=(host, port, log_level), daemon=False)
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
    for child in children:
        child.join()
