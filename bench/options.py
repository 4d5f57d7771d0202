"""What to run, and how big: the command-line options and the sizes they imply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    runs: int = 3
    duration: float = 10.0
    peer: bool = False
    quick: bool = False
    # Only the event-store appends rows (`make bench ARGS=--appends`).
    appends_only: bool = False
    # Only these HTTP rows (`make bench ARGS='--only me,storm'`); empty: all.
    only: tuple[str, ...] = ()
    # The generated log for rebuild, raw read and export.
    events: int = 1_000_000
    # The one user whose history the audit replays.
    history_events: int = 10_000
    # Accounts that log in (8 connections, each with its own slice).
    login_users: int = 32
    # Distinct sessions rotated by the refresh runs (fresh ones every run).
    refresh_sessions: int = 128
    # Commands timed from commit to visibility in the read models, per run.
    freshness_samples: int = 200
    # Event-store appends: writer processes, and seconds per run (pgbench's -T).
    append_writers: tuple[int, ...] = (1, 8, 32)
    append_seconds: int = 5
    # Webhook delivery: the backlog a replay sends, and commands timed to
    # their arrival, per run.
    webhook_backlog: int = 2000
    webhook_samples: int = 200
    # Interleaved pairs per parity row (known vs unknown address): 200 or more.
    parity_pairs: int = 200

    @classmethod
    def quick_run(cls, peer: bool, only: tuple[str, ...] = ()) -> Options:
        """A smoke run: one short run of everything, small sizes."""
        return cls(
            runs=1,
            duration=4.0,
            peer=peer,
            only=only,
            quick=True,
            events=20_000,
            append_seconds=2,
            parity_pairs=20,
            webhook_backlog=300,
            webhook_samples=30,
        )
