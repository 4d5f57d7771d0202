"""Unknown email, wrong password and locked account: the same work, the same answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from application.errors import InvalidCredentialsError
from application.ports import PasswordHasher
from application.values import Client
from interfaces.bootstrap import Services
from tests.integration.helpers import MakeServices

pytestmark = pytest.mark.postgres
CLIENT = Client("198.51.100.4", "parity")


@dataclass
class CountingHasher:
    """The real hasher, counting the bcrypt checks each login makes."""

    real: PasswordHasher
    checks: list[str] = field(default_factory=list)

    def hash(self, password: str) -> str:
        return self.real.hash(password)

    def verify(self, password: str, password_hash: str) -> bool:
        self.checks.append("verify")
        return self.real.verify(password, password_hash)

    def verify_dummy(self, password: str) -> None:
        self.checks.append("verify")
        self.real.verify_dummy(password)


def attempt(services: Services, login: Callable[[], object]) -> tuple[str, int, int]:
    """Run a failing login: the error, the bcrypt checks and the events it cost."""
    hasher = services.app.passwords
    assert isinstance(hasher, CountingHasher)
    hasher.checks.clear()
    before = services.recorder.max_notification_id() or 0
    with pytest.raises(InvalidCredentialsError) as refused:
        login()
    return (
        str(refused.value),
        len(hasher.checks),
        services.recorder.count_after(before, 100),
    )


def test_every_refusal_costs_one_bcrypt_check_and_one_save(
    make_services: MakeServices,
) -> None:
    services = make_services(lockout_max_failures=2, client_max_failures=100)
    services.app.passwords = CountingHasher(services.app.passwords)
    services.app.register("known@example.com", "the password", CLIENT)
    services.app.register("locked@example.com", "the password", CLIENT)
    for _ in range(2):
        with pytest.raises(InvalidCredentialsError):
            services.app.login("locked@example.com", "wrong", CLIENT)

    attempt(services, lambda: services.app.login("nobody@example.com", "x", CLIENT))
    unknown = attempt(
        services, lambda: services.app.login("nobody@example.com", "guess", CLIENT)
    )
    wrong = attempt(
        services, lambda: services.app.login("known@example.com", "guess", CLIENT)
    )
    locked = attempt(
        services,
        lambda: services.app.login("locked@example.com", "the password", CLIENT),
    )

    assert unknown[:2] == wrong[:2] == locked[:2] == ("", 1)
    # One save of two events each: the client address's count, and the
    # account's (or, for an address without one, its keyed hash's, which
    # started with the first attempt on it above).
    assert unknown[2] == wrong[2] == locked[2] == 2
