"""Unit tests for the Session aggregate: opening, token rotation and revocation."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import SessionRevokedError, UnknownRefreshTokenError
from domain.session import RefreshPolicy, Session
from domain.values import RevocationReason
from tests.unit.helpers import T0, only

STRICT = RefreshPolicy(
    token_ttl=timedelta(hours=1),
    max_session_age=timedelta(days=1),
    reuse_interval=timedelta(0),
)
GRACE = replace(STRICT, reuse_interval=timedelta(seconds=30))
# A session shorter than two token lifetimes, so a rotation reaches its end.
SHORT = replace(GRACE, max_session_age=timedelta(minutes=90))
USER_ID = uuid4()
IP = "198.51.100.4"
UA = "pytest"


def opened_session(policy: RefreshPolicy = STRICT) -> Session:
    """A session opened at T0 with refresh token hash "h0", its events flushed."""
    session = Session.open(uuid4(), USER_ID, 1, "h0", IP, UA, policy, T0)
    session.collect_events()
    return session


def refresh(
    session: Session,
    presented: str,
    successor: str,
    now: datetime,
    policy: RefreshPolicy = STRICT,
) -> None:
    session.refresh(presented, successor, IP, UA, policy, now)


def test_opening_a_session_expires_its_token_after_the_token_ttl() -> None:
    # Given
    session_id = uuid4()

    # When
    session = Session.open(session_id, USER_ID, 1, "h0", IP, UA, STRICT, T0)

    # Then
    opened = only(session.collect_events(), Session.Opened)
    assert opened.originator_id == session_id
    assert opened.timestamp == T0
    assert opened.user_id == USER_ID
    assert opened.refresh_token_hash == "h0"
    assert opened.expires_at == T0 + STRICT.token_ttl
    assert opened.ends_at == T0 + STRICT.max_session_age
    assert opened.ip == IP
    assert opened.user_agent == UA


def test_opening_a_session_caps_token_expiry_at_the_maximum_session_age() -> None:
    # Given
    policy = RefreshPolicy(
        token_ttl=timedelta(days=7), max_session_age=timedelta(days=1)
    )

    # When
    session = Session.open(uuid4(), USER_ID, 1, "h0", IP, UA, policy, T0)

    # Then
    opened = only(session.collect_events(), Session.Opened)
    assert opened.expires_at == T0 + timedelta(days=1)
    assert opened.ends_at == T0 + timedelta(days=1)


def test_refreshing_with_the_current_token_rotates_it() -> None:
    # Given
    session = opened_session()
    now = T0 + timedelta(minutes=10)

    # When
    refresh(session, "h0", "h1", now)

    # Then
    rotated = only(session.collect_events(), Session.TokenRotated)
    assert rotated.refresh_token_hash == "h1"
    assert rotated.generation == 1
    assert rotated.expires_at == now + STRICT.token_ttl
    assert rotated.user_id == USER_ID
    assert rotated.ip == IP
    assert rotated.user_agent == UA
    assert rotated.timestamp == now


def test_each_rotation_increments_the_generation() -> None:
    # Given
    session = opened_session()
    refresh(session, "h0", "h1", T0 + timedelta(minutes=10))
    session.collect_events()

    # When
    refresh(session, "h1", "h2", T0 + timedelta(minutes=20))

    # Then
    rotated = only(session.collect_events(), Session.TokenRotated)
    assert rotated.refresh_token_hash == "h2"
    assert rotated.generation == 2


def test_presenting_a_retired_token_in_strict_mode_revokes_the_session() -> None:
    # Given
    session = opened_session()
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at)
    session.collect_events()

    # When
    refresh(session, "h0", "h2", retired_at + timedelta(seconds=1))

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "reuse_detected"
    assert revoked.user_id == USER_ID
    assert revoked.ip == IP
    assert revoked.user_agent == UA


def test_strict_mode_revokes_a_retired_token_replayed_at_the_instant_of_rotation() -> (
    None
):
    # Given
    session = opened_session()
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at)
    session.collect_events()

    # When: the replay carries the same clock reading as the rotation
    refresh(session, "h0", "h2", retired_at)

    # Then: strict mode allows no reuse at all
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "reuse_detected"


def test_the_token_just_retired_within_the_reuse_interval_changes_nothing() -> None:
    # Given
    session = opened_session(GRACE)
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at, GRACE)
    session.collect_events()

    # When: a tab that raced the rotation presents it, its successor being "h1"
    changed = session.refresh(
        "h0", "h1", IP, UA, GRACE, retired_at + timedelta(seconds=10)
    )

    # Then: it is handed the current token; nothing is recorded
    assert changed is False
    assert session.collect_events() == []
    assert session.refresh_token_hash == "h1"


def test_racers_on_one_token_within_the_interval_all_get_its_successor() -> None:
    # Given: one tab rotated "h0"
    session = opened_session(GRACE)
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at, GRACE)
    session.collect_events()

    # When: three more tabs present "h0" within the interval
    answers = [
        session.refresh("h0", "h1", IP, UA, GRACE, retired_at + timedelta(seconds=n))
        for n in (1, 2, 30)
    ]

    # Then: none changes the session: they all get "h1"
    assert answers == [False, False, False]
    assert session.collect_events() == []
    assert (session.refresh_token_hash, session.generation) == ("h1", 1)


def test_a_retired_token_presented_after_the_reuse_interval_revokes_the_session() -> (
    None
):
    # Given
    session = opened_session(GRACE)
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at, GRACE)
    session.collect_events()

    # When
    refresh(session, "h0", "h2", retired_at + timedelta(seconds=31), GRACE)

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "reuse_detected"


def test_a_token_older_than_the_previous_one_is_unknown_to_the_session() -> None:
    # Given: "h0" retired by "h1", itself retired by "h2", moments ago
    session = opened_session(GRACE)
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at, GRACE)
    refresh(session, "h1", "h2", retired_at + timedelta(seconds=1), GRACE)
    session.collect_events()

    # When / Then: it keeps only the previous one; the events hold the others
    with pytest.raises(UnknownRefreshTokenError):
        refresh(session, "h0", "h1", retired_at + timedelta(seconds=2), GRACE)
    assert session.collect_events() == []


def test_a_retired_token_within_the_interval_but_after_the_session_end_expires_it() -> (
    None
):
    # Given: "h1" retired 10 s before the session's absolute end
    session = opened_session(SHORT)
    ends_at = T0 + SHORT.max_session_age
    refresh(session, "h0", "h1", T0 + timedelta(minutes=40), SHORT)
    refresh(session, "h1", "h2", ends_at - timedelta(seconds=10), SHORT)
    session.collect_events()

    # When
    refresh(session, "h1", "h2", ends_at, SHORT)

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "expired"


@pytest.mark.parametrize("presented", ["h0", "h1", "never-issued"])
def test_a_revoked_session_refuses_every_token_even_within_the_reuse_interval(
    presented: str,
) -> None:
    # Given: "h0" retired, then the session logged out, all within 30 s
    session = opened_session(GRACE)
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at, GRACE)
    session.revoke(RevocationReason.LOGOUT, IP, UA, retired_at + timedelta(seconds=1))
    session.collect_events()

    # When / Then
    with pytest.raises(SessionRevokedError):
        refresh(session, presented, "h2", retired_at + timedelta(seconds=2), GRACE)
    assert session.collect_events() == []


def test_a_session_revoked_for_reuse_refuses_its_current_token() -> None:
    # Given
    session = opened_session()
    retired_at = T0 + timedelta(minutes=10)
    refresh(session, "h0", "h1", retired_at)
    refresh(session, "h0", "h2", retired_at + timedelta(minutes=1))
    session.collect_events()

    # When / Then
    with pytest.raises(SessionRevokedError):
        refresh(session, "h1", "h3", retired_at + timedelta(minutes=2))
    assert session.collect_events() == []


def test_an_unknown_token_raises_and_emits_nothing() -> None:
    # Given
    session = opened_session()

    # When / Then
    with pytest.raises(UnknownRefreshTokenError):
        refresh(session, "never-issued", "h1", T0 + timedelta(minutes=1))
    assert session.collect_events() == []
    assert not session.is_revoked


def test_refreshing_with_an_expired_current_token_revokes_the_session() -> None:
    # Given
    session = opened_session()

    # When
    refresh(session, "h0", "h1", T0 + STRICT.token_ttl)

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "expired"


def test_rotation_never_extends_token_expiry_past_the_session_end() -> None:
    # Given: a 90-minute session of one-hour tokens
    session = opened_session(SHORT)

    # When: a rotation whose token TTL would outlive the session
    refresh(session, "h0", "h1", T0 + timedelta(minutes=40), SHORT)

    # Then
    rotated = only(session.collect_events(), Session.TokenRotated)
    assert rotated.expires_at == T0 + SHORT.max_session_age


def test_a_token_capped_at_the_session_end_cannot_be_rotated_at_the_end() -> None:
    # Given: a token capped at the session end
    session = opened_session(SHORT)
    refresh(session, "h0", "h1", T0 + timedelta(minutes=40), SHORT)
    session.collect_events()

    # When
    refresh(session, "h1", "h2", T0 + SHORT.max_session_age, SHORT)

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "expired"


def test_revoking_a_session_records_the_reason() -> None:
    # Given
    session = opened_session()
    now = T0 + timedelta(minutes=5)

    # When
    session.revoke(RevocationReason.LOGOUT, IP, UA, now)

    # Then
    revoked = only(session.collect_events(), Session.Revoked)
    assert revoked.reason == "logout"
    assert revoked.user_id == USER_ID
    assert revoked.timestamp == now


def test_revoking_a_revoked_session_raises_session_revoked() -> None:
    # Given
    session = opened_session()
    session.revoke(RevocationReason.LOGOUT, IP, UA, T0 + timedelta(minutes=5))
    session.collect_events()

    # When / Then
    with pytest.raises(SessionRevokedError):
        session.revoke(RevocationReason.ADMIN, IP, UA, T0 + timedelta(minutes=6))
    assert session.collect_events() == []
