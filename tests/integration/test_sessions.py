"""Sessions on a real PostgreSQL: rotation, reuse detection, logout, secrets at rest."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from application.errors import (
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    WrongPasswordError,
)
from interfaces.bootstrap import Services
from tests.integration.helpers import (
    CLIENT,
    states_with_topic,
    stored_events,
    wait_for_read_models,
)

PASSWORD = "correct horse battery staple"
SESSIONS_REVOKED = "authledger:User.SessionsRevoked"
REVOKED = "authledger:Session.Revoked"


def test_a_refresh_rotates_the_token_and_counts_a_generation(
    services: Services,
) -> None:
    # Given
    login = services.app.register("carol@example.com", PASSWORD, CLIENT)

    # When
    refreshed = services.app.refresh(login.refresh_token, CLIENT)

    # Then
    assert refreshed.session_id == login.session_id
    assert refreshed.user_id == login.user_id
    assert refreshed.refresh_token != login.refresh_token
    row = services.sessions.get_session(login.session_id, services.app.clock())
    assert row is not None
    assert row.generation == 1
    assert row.last_rotated_at > row.created_at
    # And the new token rotates again
    again = services.app.refresh(refreshed.refresh_token, CLIENT)
    row = services.sessions.get_session(login.session_id, services.app.clock())
    assert row is not None
    assert row.generation == 2
    assert again.refresh_token not in {login.refresh_token, refreshed.refresh_token}


def test_presenting_a_rotated_refresh_token_revokes_the_whole_session(
    services: Services,
) -> None:
    # Given a session whose first token was rotated
    login = services.app.register("dave@example.com", PASSWORD, CLIENT)
    refreshed = services.app.refresh(login.refresh_token, CLIENT)

    # When the old token is presented again
    with pytest.raises(InvalidRefreshTokenError):
        services.app.refresh(login.refresh_token, CLIENT)

    # Then the session is revoked for reuse and gone from the active sessions
    revocations = states_with_topic(services, REVOKED)
    assert [r["reason"] for r in revocations] == ["reuse_detected"]
    assert services.sessions.get_session(login.session_id, services.app.clock()) is None
    assert services.sessions.list_sessions(login.user_id, services.app.clock()) == []
    # And even the newest token is dead
    with pytest.raises(InvalidRefreshTokenError):
        services.app.refresh(refreshed.refresh_token, CLIENT)
    # And the audit trail shows the reuse (once the lagging timeline has it)
    wait_for_read_models(services)
    history = services.history.history(login.user_id, 100, 0)
    assert [(h.kind, h.detail) for h in history][2:] == [
        ("token_rotated", "generation 1"),
        ("session_revoked", "reuse_detected"),
    ]


def test_logout_removes_the_session(services: Services) -> None:
    # Given
    login = services.app.register("erin@example.com", PASSWORD, CLIENT)
    other = services.app.login("erin@example.com", PASSWORD, CLIENT)

    # When
    services.app.logout(login.user_id, login.session_id, CLIENT)

    # Then
    now = services.app.clock()
    assert services.sessions.get_session(login.session_id, now) is None
    assert [
        s.session_id for s in services.sessions.list_sessions(login.user_id, now)
    ] == [other.session_id]
    with pytest.raises(InvalidRefreshTokenError):
        services.app.refresh(login.refresh_token, CLIENT)
    assert [r["reason"] for r in states_with_topic(services, REVOKED)] == ["logout"]


def test_logout_all_ends_every_session_of_the_user_and_nobody_elses(
    services: Services,
) -> None:
    # Given two sessions of Frank's and one of Grace's
    frank = services.app.register("frank@example.com", PASSWORD, CLIENT)
    frank_again = services.app.login("frank@example.com", PASSWORD, CLIENT)
    grace = services.app.register("grace@example.com", PASSWORD, CLIENT)

    # When
    services.app.logout_all(frank.user_id, CLIENT)

    # Then
    now = services.app.clock()
    assert services.sessions.list_sessions(frank.user_id, now) == []
    assert [
        s.session_id for s in services.sessions.list_sessions(grace.user_id, now)
    ] == [grace.session_id]
    for token in (frank.refresh_token, frank_again.refresh_token):
        with pytest.raises(InvalidRefreshTokenError):
            services.app.refresh(token, CLIENT)
    assert services.app.refresh(grace.refresh_token, CLIENT).user_id == grace.user_id
    # One event on frank's stream ended both
    markers = states_with_topic(services, SESSIONS_REVOKED)
    assert [(m["reason"], m["kept_session_id"]) for m in markers] == [
        ("logout_all", None)
    ]


def test_changing_the_password_ends_the_other_sessions_and_retires_the_old_password(
    services: Services,
) -> None:
    # Given three sessions
    keep = services.app.register("heidi@example.com", PASSWORD, CLIENT)
    second = services.app.login("heidi@example.com", PASSWORD, CLIENT)
    third = services.app.login("heidi@example.com", PASSWORD, CLIENT)

    # When
    services.app.change_password(
        keep.user_id, PASSWORD, "a brand new passphrase", CLIENT, keep=keep.session_id
    )

    # Then only the kept session is active, and its token still rotates
    now = services.app.clock()
    sessions = services.sessions.list_sessions(keep.user_id, now)
    assert [s.session_id for s in sessions] == [keep.session_id]
    for other in (second, third):
        with pytest.raises(InvalidRefreshTokenError):
            services.app.refresh(other.refresh_token, CLIENT)
    assert (
        services.app.refresh(keep.refresh_token, CLIENT).session_id == keep.session_id
    )
    markers = states_with_topic(services, SESSIONS_REVOKED)
    assert [(m["reason"], m["kept_session_id"]) for m in markers] == [
        ("password_changed", keep.session_id)
    ]
    # And only the new password logs in
    with pytest.raises(InvalidCredentialsError):
        services.app.login("heidi@example.com", PASSWORD, CLIENT)
    new_login = services.app.login(
        "heidi@example.com", "a brand new passphrase", CLIENT
    )
    assert new_login.user_id == keep.user_id


def test_changing_the_password_with_a_wrong_current_password_changes_nothing(
    services: Services,
) -> None:
    # Given
    login = services.app.register("ivan@example.com", PASSWORD, CLIENT)
    other = services.app.login("ivan@example.com", PASSWORD, CLIENT)

    # When
    with pytest.raises(WrongPasswordError):
        services.app.change_password(login.user_id, "not it", "whatever else", CLIENT)

    # Then the password and the sessions are as they were
    assert states_with_topic(services, "authledger:User.PasswordChanged") == []
    assert states_with_topic(services, REVOKED) == []
    assert services.app.refresh(other.refresh_token, CLIENT).user_id == login.user_id
    assert (
        services.app.login("ivan@example.com", PASSWORD, CLIENT).user_id
        == login.user_id
    )
    # And the wrong guess counts as a failed login of the account
    failures = states_with_topic(services, "authledger:User.LoginFailed")
    assert [f["reason"] for f in failures] == ["bad_password"]


def all_text_in_the_database(url: str) -> str:
    """Every row of every user table, in every schema, as text."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert tables, "the database has no tables"
        dumps: list[str] = []
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {} AS t").format(
                sql.Identifier(schema, table)
            )
            dumps.extend(row[0] for row in conn.execute(query))
            # bytea columns print as hex in t::text: decode them too
            bytea = conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s AND data_type = 'bytea'",
                (schema, table),
            ).fetchall()
            for (column,) in bytea:
                query = sql.SQL("SELECT {} FROM {}").format(
                    sql.Identifier(column), sql.Identifier(schema, table)
                )
                dumps.extend(
                    bytes(row[0]).decode("utf-8", "replace")
                    for row in conn.execute(query)
                    if row[0] is not None
                )
    return "\n".join(dumps)


def test_the_database_holds_no_raw_refresh_token_and_no_raw_password(
    services: Services, database_url: str
) -> None:
    # Given a user who registered, logged in, refreshed and changed password
    first_password, second_password = "first secret phrase", "second secret phrase"
    login = services.app.register("judy@example.com", first_password, CLIENT)
    other = services.app.login("judy@example.com", first_password, CLIENT)
    refreshed = services.app.refresh(login.refresh_token, CLIENT)
    services.app.change_password(
        login.user_id, first_password, second_password, CLIENT, keep=login.session_id
    )
    tokens = [login.refresh_token, other.refresh_token, refreshed.refresh_token]
    secrets = [token.partition(".")[2] for token in tokens]
    assert all(secrets)

    # When
    states = [notification.state for notification in stored_events(services)]
    everything = all_text_in_the_database(database_url)

    # Then
    needles = [*tokens, *secrets, first_password, second_password]
    for needle in needles:
        assert not any(needle.encode() in state for state in states), needle
        assert needle not in everything, needle
    # And the search does see what is stored in clear, such as the email
    assert "judy@example.com" in everything
