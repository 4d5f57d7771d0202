"""Version 2 of the users read model (it knows each user's last login), for tests.

Run as a module (`python -m tests.projections.v2 serve --port P`), it serves the
API with both versions of that read model, as a release that adds one would.
"""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

import uvicorn
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking

from application.projections import UserDirectoryProjection
from domain.user import User
from infrastructure.postgres_views import PostgresUserDirectoryView
from infrastructure.projection_runner import ReadModelSpec
from interfaces.bootstrap import ACTIVE_SESSIONS, LOGIN_HISTORY, MAIL_OUTBOX
from interfaces.bootstrap import USER_DIRECTORY as USER_DIRECTORY_V1

# Each batch of the build dawdles, so a test's traffic runs into the switch.
BATCH_PAUSE_S = 0.6


class UserDirectoryProjectionV2(UserDirectoryProjection):
    """Version 2 of the users table: it also knows each user's last login."""

    name = "user_directory"
    version = 2

    @singledispatchmethod
    def apply(self, event: Any, tracking: Tracking) -> None:
        super().apply(event, tracking)

    @apply.register
    def _(self, event: User.LoggedIn, tracking: Tracking) -> None:
        self._update(event, tracking, last_login_at=event.timestamp)


class PostgresUserDirectoryViewV2(PostgresUserDirectoryView):
    ddl = (
        *PostgresUserDirectoryView.ddl,
        "ALTER TABLE {schema}.users ADD COLUMN IF NOT EXISTS last_login_at timestamptz",
    )
    updatable: ClassVar = PostgresUserDirectoryView.updatable | {"last_login_at"}


class SlowToBuildUserDirectoryViewV2(PostgresUserDirectoryViewV2):
    """Records each batch's position slowly (inline writes record none)."""

    def _insert_tracking(self, curs: Any, tracking: Tracking) -> None:
        super()._insert_tracking(curs, tracking)
        time.sleep(BATCH_PAUSE_S)


USER_DIRECTORY_V2 = ReadModelSpec.of(
    UserDirectoryProjectionV2, PostgresUserDirectoryViewV2
)
SLOW_V2 = ReadModelSpec.of(UserDirectoryProjectionV2, SlowToBuildUserDirectoryViewV2)
WITH_SLOW_V2 = (USER_DIRECTORY_V1, SLOW_V2, ACTIVE_SESSIONS, LOGIN_HISTORY, MAIL_OUTBOX)


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
