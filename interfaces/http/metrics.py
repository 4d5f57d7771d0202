"""`/metrics` on a listener of its own (AUTHLEDGER_METRICS_HOST and _PORT,
off when the port is unset), never on the public API's port: served by the
parent of the workers, it sums what every worker counted."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from infrastructure.metrics import ReadModelCollector, read_model_metrics, scrape
from infrastructure.webhooks import webhook_metrics

log = logging.getLogger(__name__)


def start_metrics(
    host: str, port: int, directory: str, read_models: ReadModelCollector, url: str
) -> ThreadingHTTPServer:
    """Serve the metrics from a thread of this process.

    What the processes counted is served even when the database does not
    answer (then without the read models' and webhooks' figures, which it
    holds): that is when an operator needs them most.
    """

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = scrape(directory)
            try:
                body += read_model_metrics(read_models) + webhook_metrics(url).encode()
            except Exception as error:  # noqa: BLE001 (the processes' figures still go)
                log.warning("metrics without the database's: %s", type(error).__name__)
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE_PLAIN_0_0_4)
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
