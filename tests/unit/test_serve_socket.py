"""Workers bind their own SO_REUSEPORT sockets; accepted connections get NODELAY."""

from __future__ import annotations

import asyncio
import socket

from interfaces.http.serve import listening_socket


def test_two_workers_can_bind_the_same_port() -> None:
    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        second = listening_socket("127.0.0.1", port)
        second.close()
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        first.close()


def test_connections_accepted_by_asyncio_get_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP."""
    listener = listening_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def run() -> None:
        async def accepted(
            _: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(run())

    assert seen == [1]
