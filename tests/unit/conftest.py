"""The use cases' fixtures: an application on in-memory persistence, its clock
and its mail use cases."""

from __future__ import annotations

import pytest

from application.account_mail import AccountMail
from application.auth import AuthApplication
from tests.unit.test_use_cases import MAIL_TOKENS, FakeClock, new_app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> AuthApplication:
    return new_app(clock)


@pytest.fixture
def mail(app: AuthApplication) -> AccountMail:
    return AccountMail(app, MAIL_TOKENS)
