"""Integration fixtures: services built with other settings, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure.settings import Settings
from interfaces.bootstrap import Services, build_services
from tests.integration.helpers import MakeServices


@pytest.fixture
def make_services(settings: Settings) -> Iterator[MakeServices]:
    """Build services with some settings changed; each is closed after the test."""
    built: list[Services] = []

    def make(**changes: Any) -> Services:
        services = build_services(settings.model_copy(update=changes))
        built.append(services)
        return services

    yield make
    for services in reversed(built):
        services.close()
