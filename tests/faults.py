"""A TCP relay to PostgreSQL that cuts a connection just after a commit passed.

The server has committed and said so; the client never hears it. That is the
lost acknowledgement a killed network, proxy or server leaves behind, made
to happen on cue: the relay watches what clients send for a marker (a topic
in an INSERT's parameters) and drops that connection at the server's next
`COMMIT` answer, which it never forwards.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Self

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The server's CommandComplete message for COMMIT: 'C', length 11, "COMMIT\0".
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class CommitCutter:
    """Relay 127.0.0.1:<port> to the server of `url`; `url` here names the relay."""

    def __init__(self, upstream_url: str) -> None:
        params = conninfo_to_dict(upstream_url)
        host = str(params.get("host") or "localhost")
        port = int(params.get("port") or 5432)
        self._upstream: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        params.update(host="127.0.0.1", port=self._listener.getsockname()[1])
        params["sslmode"] = "disable"
        self.url = make_conninfo(**params)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.cut = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_commit_of(self, marker: str) -> None:
        """Drop the connection that next sends `marker`, at its COMMIT's answer."""
        with self._lock:
            self._marker = marker.encode()

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family = (
                socket.AF_UNIX if isinstance(self._upstream, str) else socket.AF_INET
            )
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(self._upstream)
            marked = threading.Event()
            threading.Thread(
                target=self._to_server, args=(client, server, marked), daemon=True
            ).start()
            threading.Thread(
                target=self._to_client, args=(server, client, marked), daemon=True
            ).start()

    def _to_server(
        self, client: socket.socket, server: socket.socket, marked: threading.Event
    ) -> None:
        with suppress(OSError):
            for data in _chunks(client):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        marked.set()
                server.sendall(data)
        _close(client, server)

    def _to_client(
        self, server: socket.socket, client: socket.socket, marked: threading.Event
    ) -> None:
        tail = b""
        with suppress(OSError):
            for data in _chunks(server):
                if marked.is_set() and COMMIT_DONE in tail + data:
                    self.cut += 1
                    break  # committed on the server; the client never hears it
                tail = data[-len(COMMIT_DONE) :]
                client.sendall(data)
        _close(client, server)


def _chunks(source: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
