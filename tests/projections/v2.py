"""The release that added version 2 of the users read model (it shows whether
an account is disabled), as an upgrade from the release before meets it.

Run as a module (`python -m tests.projections.v2 serve --port P`), it serves the
API with both versions of that read model, version 2 slow to build, so that a
test's traffic runs into the switch.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import uvicorn
from eventsourcing.persistence import Tracking

from application.projections import UserDirectoryProjectionV2
from infrastructure.postgres_views import PostgresUserDirectoryViewV2
from infrastructure.projection_runner import ReadModelSpec
from interfaces.bootstrap import (
    ACTIVE_SESSIONS_V1,
    LOGIN_HISTORY,
    MAIL_OUTBOX,
    USER_DIRECTORY_V1,
    USER_DIRECTORY_V2,
)

# Each batch of the build dawdles, so a test's traffic runs into the switch.
BATCH_PAUSE_S = 0.6


class SlowToBuildUserDirectoryView(PostgresUserDirectoryViewV2):
    """Records each batch's position slowly (inline writes record none)."""

    def _insert_tracking(self, curs: Any, tracking: Tracking) -> None:
        super()._insert_tracking(curs, tracking)
        time.sleep(BATCH_PAUSE_S)


SLOW_V2 = ReadModelSpec.of(UserDirectoryProjectionV2, SlowToBuildUserDirectoryView)
# The read models of the release before: version 1 of the users table.
BEFORE = (USER_DIRECTORY_V1, ACTIVE_SESSIONS_V1, LOGIN_HISTORY, MAIL_OUTBOX)
WITH_SLOW_V2 = (
    USER_DIRECTORY_V1,
    SLOW_V2,
    ACTIVE_SESSIONS_V1,
    LOGIN_HISTORY,
    MAIL_OUTBOX,
)
__all__ = ["BEFORE", "USER_DIRECTORY_V2"]


def main(argv: list[str]) -> None:
    """`serve --port P [--workers 1]`: the API with version 2 being built."""
    from interfaces.http.app import create_app  # noqa: PLC0415  (only when served)

    port = int(argv[argv.index("--port") + 1])
    uvicorn.run(
        create_app(read_models=WITH_SLOW_V2),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )


if __name__ == "__main__":
    main(sys.argv)
