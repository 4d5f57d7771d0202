"""Serve the peer as the service is served: N single-process uvicorns, each
with its own SO_REUSEPORT socket made with IPPROTO_TCP (so TCP_NODELAY is
set), on uvloop and httptools: the best form of two processes we know.

    python serve.py WORKERS PORT      (SIGTERM stops them all)
"""

import multiprocessing
import signal
import socket
import sys

import uvicorn


def worker(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(
        "app:app", loop="uvloop", http="httptools", log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    workers, port = int(sys.argv[1]), int(sys.argv[2])
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=worker, args=(port,)) for _ in range(workers)]
    for child in children:
        child.start()

    def stop(*_: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
