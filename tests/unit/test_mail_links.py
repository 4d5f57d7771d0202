"""Mailed links on the User aggregate, and their HMAC tokens."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.errors import (
    EmailAlreadyVerifiedError,
    InvalidMailTokenError,
    RequestedTooSoonError,
)
from domain.user import MailPolicy, User
from domain.values import Role
from infrastructure.mail_tokens import HmacMailTokens
from tests.unit.helpers import T0, only

POLICY = MailPolicy(
    verification_ttl=timedelta(hours=1),
    reset_ttl=timedelta(minutes=30),
    cooldown=timedelta(minutes=1),
)


def new_user() -> User:
    user = User.register("ada@example.com", "hash-0", Role.USER, T0)
    user.collect_events()
    return user


def test_a_verification_request_records_only_the_token_hash() -> None:
    # Given
    user = new_user()
    request_id = uuid4()

    # When
    user.request_verification(request_id, "token-hash", POLICY, T0)

    # Then
    requested = only(user.collect_events(), User.VerificationRequested)
    assert requested.request_id == request_id
    assert requested.email == "ada@example.com"
    assert requested.token_hash == "token-hash"
    assert requested.expires_at == T0 + POLICY.verification_ttl


def test_the_right_token_verifies_once() -> None:
    # Given
    user = new_user()
    user.request_verification(uuid4(), "token-hash", POLICY, T0)
    user.collect_events()

    # When
    user.verify_email_with("token-hash", T0 + timedelta(minutes=5))

    # Then
    only(user.collect_events(), User.EmailVerified)
    with pytest.raises(InvalidMailTokenError):
        user.verify_email_with("token-hash", T0 + timedelta(minutes=6))


@pytest.mark.parametrize(
    ("token_hash", "after"),
    [("wrong-hash", timedelta(minutes=1)), ("token-hash", timedelta(hours=1))],
)
def test_a_wrong_or_expired_token_verifies_nothing(
    token_hash: str, after: timedelta
) -> None:
    # Given
    user = new_user()
    user.request_verification(uuid4(), "token-hash", POLICY, T0)
    user.collect_events()

    # When / Then
    with pytest.raises(InvalidMailTokenError):
        user.verify_email_with(token_hash, T0 + after)
    assert user.collect_events() == []


def test_a_verified_email_needs_no_link_and_a_second_request_must_wait() -> None:
    user = new_user()
    user.request_verification(uuid4(), "first", POLICY, T0)

    with pytest.raises(RequestedTooSoonError):
        user.request_verification(uuid4(), "second", POLICY, T0 + timedelta(seconds=30))
    user.request_verification(uuid4(), "second", POLICY, T0 + timedelta(minutes=2))
    user.verify_email_with("second", T0 + timedelta(minutes=3))
    with pytest.raises(EmailAlreadyVerifiedError):
        user.request_verification(uuid4(), "third", POLICY, T0 + timedelta(minutes=10))


def test_a_newer_reset_link_replaces_the_older_one() -> None:
    # Given
    user = new_user()
    user.request_password_reset(uuid4(), "older", POLICY, T0)
    user.request_password_reset(uuid4(), "newer", POLICY, T0 + timedelta(minutes=2))
    user.collect_events()

    # When / Then
    with pytest.raises(InvalidMailTokenError):
        user.reset_password("older", "hash-1", "", "", T0 + timedelta(minutes=3))
    user.reset_password("newer", "hash-1", "", "", T0 + timedelta(minutes=3))
    changed = only(user.collect_events(), User.PasswordChanged)
    assert changed.password_hash == "hash-1"


def test_any_password_change_voids_an_outstanding_reset_link() -> None:
    user = new_user()
    user.request_password_reset(uuid4(), "reset", POLICY, T0)

    user.change_password("hash-1", T0 + timedelta(minutes=1))

    with pytest.raises(InvalidMailTokenError):
        user.reset_password("reset", "hash-2", "", "", T0 + timedelta(minutes=2))


def test_tokens_are_minted_the_same_again_and_differ_by_purpose_and_key() -> None:
    tokens = HmacMailTokens(b"server secret")
    user_id, request_id = uuid4(), uuid4()

    token = tokens.mint("verify-email", user_id, request_id)

    assert token == tokens.mint("verify-email", user_id, request_id)
    assert token != tokens.mint("reset-password", user_id, request_id)
    assert token != HmacMailTokens(b"another secret").mint(
        "verify-email", user_id, request_id
    )
    assert tokens.user_of(token) == user_id
    assert tokens.user_of("garbage") is None
    assert tokens.user_of("x" * 500) is None
