"""Events stored by an older class version are read by the newer one via upcasters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psycopg
import pytest

from infrastructure.database import eventsourcing_env

pytestmark = pytest.mark.postgres

# The class as it was when the events were stored: a login attempt with no reason.
VERSION_1 = """
from eventsourcing.domain import Aggregate

class Account(Aggregate):
    TOPIC = "upcasting-demo:Account"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "upcasting-demo:Account.Created"

    class Opened(Created):
        TOPIC = "upcasting-demo:Account.Opened"

    class LoginFailed(Event):
        TOPIC = "upcasting-demo:Account.LoginFailed"
        ip: str

        def apply(self, account):
            account.failures.append((self.ip, "unknown"))

    def __init__(self):
        self.failures = []
"""

# The class today: the event gained a field, and says how to read version 1.
VERSION_2 = VERSION_1.replace(
    """        ip: str

        def apply(self, account):
            account.failures.append((self.ip, "unknown"))""",
    """        ip: str
        reason: str
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state):
            state["reason"] = "bad_password"

        def apply(self, account):
            account.failures.append((self.ip, self.reason))""",
)

WRITE = """
from eventsourcing.application import Application
app = Application(env)
account = Account._create(Account.Opened, id=__import__("uuid").uuid4())
account.trigger_event(Account.LoginFailed, ip="192.0.2.1")
app.save(account)
print(account.id)
"""

READ = """
import json, uuid
from eventsourcing.application import Application
app = Application(env)
account = app.repository.get(uuid.UUID(account_id))
account.trigger_event(Account.LoginFailed, ip="192.0.2.2", reason="locked")
app.save(account)
again = app.repository.get(account.id)
print(json.dumps(again.failures))
"""


def run(script: str, env: dict[str, str], **names: str) -> str:
    prelude = f"env = {env!r}\n" + "".join(f"{k} = {v!r}\n" for k, v in names.items())
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "EVENTSOURCING_DISABLE_REDEFINITION_CHECK": "y"},
    )
    return result.stdout.strip()


def test_version_1_events_are_read_by_version_2_classes(database_url: str) -> None:
    env = eventsourcing_env(database_url, 1, 1)

    # Given: an event stored by the version-1 class, in its own process
    account_id = run(VERSION_1 + WRITE, env)

    # When: today's class reads it back, and records a version-2 event beside it
    failures = json.loads(run(VERSION_2 + READ, env, account_id=account_id))

    # Then: the old event was upcast, the new one kept its own reason
    assert failures == [["192.0.2.1", "bad_password"], ["192.0.2.2", "locked"]]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT state FROM application_events WHERE topic = %s"
            " ORDER BY originator_version",
            ("upcasting-demo:Account.LoginFailed",),
        ).fetchall()
    old, new = (json.loads(bytes(state)) for (state,) in stored)
    assert "reason" not in old
    assert "class_version" not in old
    assert new["class_version"] == 2
