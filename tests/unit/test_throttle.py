"""ClientThrottle: failed logins per client address, across accounts."""

from __future__ import annotations

from datetime import timedelta

from domain.throttle import ClientThrottle, ThrottlePolicy
from tests.unit.helpers import T0, only

POLICY = ThrottlePolicy(max_attempts=3, window=timedelta(minutes=10))


def throttle_with_failures(count: int) -> ClientThrottle:
    throttle = ClientThrottle.start("192.0.2.1", T0)
    for n in range(count):
        throttle.count_attempt(POLICY, T0 + timedelta(seconds=n))
    throttle.collect_events()
    return throttle


def test_blocks_the_address_when_the_window_fills_up() -> None:
    # Given
    throttle = throttle_with_failures(2)

    # When
    throttle.count_attempt(POLICY, T0 + timedelta(minutes=1))

    # Then
    counted, blocked = throttle.collect_events()
    assert isinstance(counted, ClientThrottle.FailureCounted)
    assert counted.failures_in_window == 3
    assert isinstance(blocked, ClientThrottle.Blocked)
    assert blocked.until == T0 + POLICY.window
    assert throttle.retry_after(T0 + timedelta(minutes=4)) == timedelta(minutes=6)


def test_a_new_window_starts_counting_from_one() -> None:
    # Given
    throttle = throttle_with_failures(2)

    # When
    throttle.count_attempt(POLICY, T0 + POLICY.window)

    # Then
    counted = only(throttle.collect_events(), ClientThrottle.FailureCounted)
    assert counted.failures_in_window == 1
    assert throttle.retry_after(T0 + POLICY.window) is None


def test_a_stricter_policy_blocks_an_address_already_past_its_limit() -> None:
    # Given: five failures counted under a lenient policy
    throttle = throttle_with_failures(0)
    for n in range(5):
        throttle.count_attempt(
            ThrottlePolicy(max_attempts=20), T0 + timedelta(seconds=n)
        )
    throttle.collect_events()

    # When
    throttle.count_attempt(POLICY, T0 + timedelta(seconds=10))

    # Then
    events = throttle.collect_events()
    assert [type(e).__name__ for e in events] == ["FailureCounted", "Blocked"]


def test_the_block_lifts_when_the_window_ends() -> None:
    # Given
    throttle = throttle_with_failures(3)

    # Then
    assert throttle.retry_after(T0 + POLICY.window - timedelta(seconds=1)) == timedelta(
        seconds=1
    )
    assert throttle.retry_after(T0 + POLICY.window) is None


def test_each_address_has_its_own_stream() -> None:
    assert (
        ClientThrottle.create_id("192.0.2.1")
        == ClientThrottle.start("192.0.2.1", T0).id
    )
    assert ClientThrottle.create_id("192.0.2.1") != ClientThrottle.create_id(
        "192.0.2.2"
    )
