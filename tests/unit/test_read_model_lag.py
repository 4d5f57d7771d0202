"""A read model's lag in seconds, as the scrape tells it."""

from __future__ import annotations

import math

from infrastructure.metrics import lag_seconds


def test_lag_is_nothing_when_caught_up_and_grows_from_the_last_catch_up() -> None:
    assert lag_seconds(0, None, 100.0) == 0.0
    assert lag_seconds(0, 40.0, 100.0) == 0.0
    assert lag_seconds(5, 40.0, 100.0) == 60.0
    assert lag_seconds(5, 100.5, 100.0) == 0.0  # clocks of two processes


def test_lag_is_unknown_when_no_runner_has_caught_up_since_it_started() -> None:
    assert math.isnan(lag_seconds(5, None, 100.0))
