"""Any number of processes share one database; the lagging group runs in exactly one."""

from __future__ import annotations

from collections import Counter

import pytest

from application.values import Client
from tests.integration.helpers import MakeServices, wait_until

pytestmark = pytest.mark.postgres


def test_two_replicas_run_each_projection_once_and_both_read_their_writes(
    make_services: MakeServices,
) -> None:
    # Given: two API replicas on one database, each starting projection workers
    first = make_services()
    second = make_services()
    workers = [*first.workers, *second.workers]

    def running() -> Counter[str]:
        return Counter(w.label for w in workers if w.is_running)

    wait_until(lambda: len(running()) == 1, timeout_s=10, what="the group runs")

    # When: each replica serves a write
    one = first.app.register("one@example.com", "first replica's passphrase", Client())
    two = second.app.register(
        "two@example.com", "second replica's passphrase", Client()
    )

    # Then: one runner for the lagging read models, and each replica reads both
    # writes at once (the consistent read models commit with the events)
    assert running() == Counter({"login_history_v2, mail_outbox_v1": 1})
    for replica in (first, second):
        assert replica.users.get_user(one.user_id) is not None
        assert replica.users.get_user(two.user_id) is not None


def test_a_standby_takes_over_when_the_running_replica_stops(
    make_services: MakeServices,
) -> None:
    first = make_services()
    wait_until(
        lambda: all(w.is_running for w in first.workers), timeout_s=10, what="leader"
    )
    second = make_services()
    assert not any(w.is_running for w in second.workers)

    first.close()
    wait_until(
        lambda: all(w.is_running for w in second.workers), timeout_s=10, what="takeover"
    )
    grant = second.app.register("after@example.com", "a later passphrase", Client())

    assert second.users.get_user(grant.user_id) is not None
