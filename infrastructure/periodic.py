"""A background thread that runs one job every so often, and survives its errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Run `job` every `interval_s` seconds until stopped; log what it raises."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self.stopping = threading.Event()  # a long job may watch it too
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.job()
            except Exception:
                # The database may be down: the next round tries again.
                log.exception("%s failed", self.name)
