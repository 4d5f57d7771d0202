"""Keep-alive connections to chosen worker processes of a real server."""

from __future__ import annotations

import http.client
import json
from typing import Any

import psutil


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, json.dumps(body) if body else None, headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"null")


def worker_of(server: psutil.Process, conn: http.client.HTTPConnection) -> int:
    """The pid of the worker that accepted this keep-alive connection."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    for worker in server.children(recursive=True):
        for socket in worker.net_connections(kind="tcp"):
            if socket.raddr and socket.raddr.port == client_port:
                return worker.pid
    raise AssertionError("no worker holds the connection")


def connections_to_both_workers(
    server: psutil.Process, base_url: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPConnection]:
    """Two keep-alive connections that the kernel gave to different workers."""
    host, port = base_url.removeprefix("http://").split(":")
    first = http.client.HTTPConnection(host, int(port), timeout=30)
    call(first, "GET", "/healthz")
    for _ in range(64):
        other = http.client.HTTPConnection(host, int(port), timeout=30)
        call(other, "GET", "/healthz")
        if worker_of(server, other) != worker_of(server, first):
            return first, other
        other.close()
    raise AssertionError("every connection went to one worker")
