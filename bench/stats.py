"""Figures: several runs of one measurement, shown as median [min-max]."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """The values of one measurement over the runs."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Figure:
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def show(self, unit: str = "", digits: int | None = None) -> str:
        """`median [min-max] unit`; one value is shown alone."""
        if not self.values:
            return "n/a"
        text = number(self.median, digits)
        if len(self.values) > 1:
            low, high = min(self.values), max(self.values)
            text += f" [{number(low, digits)}-{number(high, digits)}]"
        return f"{text} {unit}".rstrip()


def number(value: float, digits: int | None = None) -> str:
    """A number with a precision suited to its size: 0.123, 12.3, 1 234."""
    if math.isnan(value):
        return "n/a"
    if digits is None:
        magnitude = abs(value)
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2
        if 0 < magnitude < 0.1:
            digits = 3
    return f"{value:,.{digits}f}".replace(",", " ")


def ratio(ours: Figure, other: Figure) -> Figure:
    """Ratios of paired runs (run i over run i); unpaired: each over other's median."""
    if not other.values:
        return Figure(())
    if len(ours.values) == len(other.values):
        pairs = zip(ours.values, other.values, strict=True)
        return Figure.of(a / b for a, b in pairs if b)
    base = other.median
    return Figure.of(a / base for a in ours.values if base)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at `fraction` (0-1) of the sorted samples, nearest rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
