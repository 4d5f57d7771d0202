"""The one table `make bench` prints."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass

import psutil
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Row:
    """One line of the table: what, how much, against what, and what limits it.

    `goal` states the target in words; `met` is its verdict on the medians
    (None when the row has no goal): shown as MET, SHORT or —.
    """

    measure: str
    figure: str
    compared: str = "—"
    ratio: str = "—"
    bound: str = ""
    goal: str = "—"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return "—" if self.met is None else "MET" if self.met else "SHORT"


def at_least(value: float, target: float) -> bool | None:
    """Whether a median reaches its target; None when it was not measured."""
    return None if math.isnan(value) else value >= target


def all_met(*verdicts: bool | None) -> bool | None:
    """Every part of a goal met; None if any part was not measured."""
    if any(v is None for v in verdicts):
        return None
    return all(verdicts)


def machine() -> str:
    """Cores, CPU model and memory of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [ln for ln in cpuinfo if ln.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else model
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB"


def print_table(rows: list[Row], title: str, notes: list[str]) -> None:
    """Print the table, then the notes that say how to read it."""
    console = Console(width=max(Console().width, 200))
    table = Table(title=escape(title), show_lines=True, title_justify="left")
    table.add_column("measure", ratio=2)
    table.add_column(escape("median [min-max] of runs"), ratio=3)
    table.add_column("compared with (same runs)", ratio=3)
    table.add_column("ratio", ratio=2)
    table.add_column("goal", ratio=2)
    table.add_column("verdict", ratio=1)
    table.add_column("bound by", ratio=4)
    for row in rows:
        cells = (
            row.measure,
            row.figure,
            row.compared,
            row.ratio,
            row.goal,
            row.verdict,
            row.bound,
        )
        table.add_row(*map(escape, cells))
    console.print(table)
    judged = [row for row in rows if row.met is not None]
    short = [row.measure for row in judged if not row.met]
    console.print(
        escape(
            f"goals: {len(judged) - len(short)} MET, {len(short)} SHORT"
            + (f" ({'; '.join(short)})" if short else "")
        ),
        highlight=False,
    )
    for note in notes:
        console.print(escape(f"• {note}"), highlight=False)
