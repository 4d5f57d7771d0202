"""ClientThrottle aggregate: attempts per client address (or keyed purpose)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate


@dataclass(frozen=True)
class ThrottlePolicy:
    """Block a key after `max_attempts` attempts within one `window`."""

    max_attempts: int = 20
    window: timedelta = timedelta(minutes=15)


class ClientThrottle(Aggregate):
    TOPIC = "authledger:ClientThrottle"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:ClientThrottle.Created"

    class Started(Created):
        TOPIC = "authledger:ClientThrottle.Started"
        key: str

    class FailureCounted(Event):
        TOPIC = "authledger:ClientThrottle.FailureCounted"
        failures_in_window: int

        def apply(self, throttle: ClientThrottle) -> None:
            if self.failures_in_window == 1:
                throttle.window_started_at = self.timestamp
            throttle.failures = self.failures_in_window

    class Blocked(Event):
        TOPIC = "authledger:ClientThrottle.Blocked"
        until: datetime

        def apply(self, throttle: ClientThrottle) -> None:
            throttle.blocked_until = self.until

    def __init__(self, key: str) -> None:
        self.key = key
        self.failures = 0
        self.window_started_at: datetime | None = None
        self.blocked_until: datetime | None = None

    @staticmethod
    def create_id(key: str) -> UUID:
        """One stream per key: a client address, or a purpose and an address."""
        return uuid5(NAMESPACE_URL, f"/authledger/clients/{key}")

    @classmethod
    def start(cls, key: str, now: datetime) -> ClientThrottle:
        return cls._create(cls.Started, id=cls.create_id(key), timestamp=now, key=key)

    def retry_after(self, now: datetime) -> timedelta | None:
        """How long the address must wait, or None if it may try now."""
        if self.blocked_until is None or now >= self.blocked_until:
            return None
        return self.blocked_until - now

    def count_attempt(self, policy: ThrottlePolicy, now: datetime) -> None:
        """Count one attempt; block the key when the window fills up."""
        in_window = (
            self.window_started_at is not None
            and now - self.window_started_at < policy.window
        )
        failures = self.failures + 1 if in_window else 1
        self.trigger_event(
            self.FailureCounted, timestamp=now, failures_in_window=failures
        )
        if failures >= policy.max_attempts and self.retry_after(now) is None:
            until = (self.window_started_at or now) + policy.window
            self.trigger_event(self.Blocked, timestamp=now, until=until)
