"""The inner layers import only what the dependency rule allows them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALLOWED_EVENTSOURCING = {
    "domain": {"eventsourcing.domain"},
    "application": {
        "eventsourcing.domain",
        "eventsourcing.application",
        "eventsourcing.persistence",
        "eventsourcing.projection",
        "eventsourcing.dispatch",
        "eventsourcing.utils",
    },
}


def imported_modules(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED_EVENTSOURCING))
def test_inner_layers_use_only_the_pure_parts_of_eventsourcing(package: str) -> None:
    used = {m for m in imported_modules(package) if m.startswith("eventsourcing")}

    assert used <= ALLOWED_EVENTSOURCING[package]
    assert used, "the check must see the imports it guards"
