"""Shared helpers for the domain unit tests: a fixed clock and event narrowing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

E = TypeVar("E")

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


def only(events: Sequence[object], event_type: type[E]) -> E:
    """Assert that `events` is exactly one event of `event_type` and return it."""
    types = [type(event).__qualname__ for event in events]
    assert types == [event_type.__qualname__], (
        f"expected one {event_type.__qualname__}, got {types}"
    )
    event = events[0]
    assert isinstance(event, event_type)
    return event
