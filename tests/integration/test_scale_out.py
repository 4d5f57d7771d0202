"""Any number of processes share one database; each projection runs in exactly one."""

from __future__ import annotations

from collections import Counter

import pytest

from application.values import Client
from interfaces.bootstrap import READ_MODELS
from tests.integration.helpers import MakeServices, wait_for_read_models, wait_until

pytestmark = pytest.mark.postgres


def test_two_replicas_run_each_projection_once_and_both_read_their_writes(
    make_services: MakeServices,
) -> None:
    # Given: two API replicas on one database, each starting projection workers
    first = make_services()
    second = make_services()
    workers = [*first.workers, *second.workers]

    def running() -> Counter[str]:
        return Counter(w.spec.schema for w in workers if w.is_running and w.spec)

    wait_until(lambda: len(running()) == len(READ_MODELS), timeout_s=10, what="all run")

    # When: each replica serves a write
    one = first.app.register("one@example.com", "password one", Client())
    two = second.app.register("two@example.com", "password two", Client())

    # Then: one runner per projection, and each replica reads both writes
    assert set(running().values()) == {1}
    wait_for_read_models(first)
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
    grant = second.app.register("after@example.com", "password", Client())

    assert second.users.get_user(grant.user_id) is not None
