"""`/metrics` on a listener of its own (AUTHLEDGER_METRICS_HOST and _PORT,
off when the port is unset), never on the public API's port."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from infrastructure.webhooks import webhook_metrics

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def start_metrics(host: str, port: int, database_url: str) -> ThreadingHTTPServer:
    """Serve the metrics from a thread of this process."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = webhook_metrics(database_url).encode()
            except Exception:
                log.exception("metrics not read")
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Metrics)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics", host, port)
    return server
