"""Personal fields sealed per owner (ADR 31): given these events stored, what a
copy of the log shows, and what an erasure leaves of them."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.auth import AuthApplication
from application.errors import InvalidCredentialsError
from application.values import Client
from domain.session import Session
from domain.user import User
from domain.values import ERASED
from infrastructure.data_keys import SEALED, MemoryDataKeyRing, SealingMapper
from tests.unit.test_disable import ADMIN_CLIENT
from tests.unit.test_use_cases import (
    EMAIL,
    PASSWORD,
    WRONG_PASSWORD,
    last,
    position,
    registered,
    stream,
)

DISTINCT = Client("203.0.113.5", "Sealed/1.0 (distinctive)")


def copy_of_the_log(app: AuthApplication) -> list[dict[str, Any]]:
    """Every stored event and snapshot as someone with the tables reads it."""
    stored = app.recorder.select_notifications(start=1, limit=10_000)
    snapshots = app.snapshots.recorder if app.snapshots else None
    assert snapshots is not None
    owners = {n.originator_id for n in stored}
    kept = [s for owner in owners for s in snapshots.select_events(owner)]
    return [json.loads(s.state) for s in [*stored, *kept]]


def shown(states: list[dict[str, Any]]) -> str:
    return json.dumps(states)


def keys(app: AuthApplication) -> MemoryDataKeyRing:
    mapper = app.mapper
    assert isinstance(mapper, SealingMapper)
    assert isinstance(mapper.keys, MemoryDataKeyRing)
    return mapper.keys


def test_a_copy_of_the_log_shows_no_email_address_or_agent(
    app: AuthApplication,
) -> None:
    # Given an account that signs up, logs in and fails a login from a
    # distinctive client
    grant = app.register(EMAIL, PASSWORD, DISTINCT)
    app.login(EMAIL, PASSWORD, DISTINCT)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, DISTINCT)

    # Then the stored states hold none of them, each field sealed for the
    # account, while types, ids and times stay in clear
    states = copy_of_the_log(app)
    for value in (EMAIL, DISTINCT.ip, DISTINCT.user_agent):
        assert value not in shown(states)
    registered_state = next(s for s in states if "password_hash" in s)
    assert registered_state["email"].startswith(f"{SEALED}{grant.user_id.hex}:")
    # And the events open again for the account
    assert last(stream(app, grant.user_id), User.Registered).email == EMAIL
    session = stream(app, grant.session_id)[0]
    assert isinstance(session, Session.Opened)
    assert (session.ip, session.user_agent) == (DISTINCT.ip, DISTINCT.user_agent)


def test_a_sealed_value_opens_only_as_its_own_field_of_its_own_owner() -> None:
    ring = MemoryDataKeyRing(b"a key-encryption key for this test")
    owner, other = uuid4(), uuid4()
    sealed = ring.seal(owner, "email", EMAIL)
    ring.seal(other, "email", "other@example.com")  # the other owner has a key

    assert ring.open("email", sealed) == EMAIL
    assert ring.open("ip", sealed) == ERASED  # moved to another field
    forged = sealed.replace(owner.hex, other.hex)  # moved to another owner
    assert ring.open("email", forged) == ERASED
    assert ring.open("email", "plain@example.com") == "plain@example.com"


def test_after_an_erasure_every_sealed_field_of_the_account_reads_erased(
    app: AuthApplication,
) -> None:
    # Given two accounts, one of them with a failed login
    erased = app.register(EMAIL, PASSWORD, DISTINCT)
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, WRONG_PASSWORD, DISTINCT)
    kept = registered(app, "kept@example.com")

    # When the first is erased
    app.erase(erased.user_id, None, ADMIN_CLIENT)

    # Then its key is a tombstone; its events replay with [erased] fields,
    # nothing fails, and its types and times are all still there
    assert keys(app).wrapped[erased.user_id] is None
    events = stream(app, erased.user_id)
    assert [type(e).__name__ for e in events][:1] == ["Registered"]
    assert last(events, User.Registered).email == ERASED
    failed = last(events, User.LoginFailed)
    assert (failed.ip, failed.user_agent) == (ERASED, ERASED)
    opened = stream(app, erased.session_id)[0]
    assert isinstance(opened, Session.Opened)
    assert (opened.ip, opened.user_agent) == (ERASED, ERASED)
    # And the other account opens as before
    assert last(stream(app, kept.user_id), User.Registered).email == "kept@example.com"
    assert app.login("kept@example.com", PASSWORD, DISTINCT).user_id == kept.user_id


def test_no_key_is_made_again_for_an_erased_owner(app: AuthApplication) -> None:
    # Given an erased account
    grant = registered(app)
    app.erase(grant.user_id, None, ADMIN_CLIENT)
    ring = keys(app)

    # When something would still seal a field for it (an event racing the
    # erasure), then it is stored as [erased], never under a new key
    assert ring.seal(grant.user_id, "ip", "198.51.100.1") == ERASED
    assert ring.wrapped[grant.user_id] is None


def test_an_owner_without_an_account_has_a_key_of_its_own(
    app: AuthApplication,
) -> None:
    # Given failed logins aimed at an address without an account
    with pytest.raises(InvalidCredentialsError):
        app.login("nobody@example.com", PASSWORD, DISTINCT)

    # Then they are sealed for their stream, which no account's key opens
    states = copy_of_the_log(app)
    assert DISTINCT.ip not in shown(states)
    owners = {
        UUID(hex=s["ip"].split(":")[2])
        for s in states
        if isinstance(s.get("ip"), str) and s["ip"].startswith(SEALED)
    }
    assert owners
    assert all(keys(app).wrapped.get(owner) for owner in owners)


def test_an_erasure_shreds_the_streams_of_the_address_the_account_had(
    app: AuthApplication,
) -> None:
    # Given failed logins aimed at the address before it had an account,
    # then the account, which erases itself
    with pytest.raises(InvalidCredentialsError):
        app.login(EMAIL, PASSWORD, DISTINCT)
    before_signup = position(app)
    grant = app.register(EMAIL, PASSWORD, DISTINCT)
    address_streams = {
        UUID(str(n.originator_id))
        for n in app.recorder.select_notifications(start=1, limit=before_signup)
        if n.topic.startswith("authledger:UnknownLogins.")
    }
    assert address_streams
    app.erase(grant.user_id, grant.user_id, DISTINCT)

    # Then those streams' address and agent read [erased] too: their keys
    # went with the account's
    for stream_id in address_streams:
        recorded = [vars(e) for e in stream(app, stream_id) if hasattr(e, "ip")]
        assert recorded
        assert {(e["ip"], e["user_agent"]) for e in recorded} == {(ERASED, ERASED)}
        assert keys(app).wrapped[stream_id] is None


def test_the_erasure_event_carries_nothing_personal(app: AuthApplication) -> None:
    grant = app.register(EMAIL, PASSWORD, DISTINCT)
    before = position(app)

    app.erase(grant.user_id, grant.user_id, DISTINCT)

    (erased,) = [
        json.loads(n.state)
        for n in app.recorder.select_notifications(start=before + 1, limit=100)
        if n.topic == "authledger:User.Erased"
    ]
    assert set(erased) - {"timestamp", "originator_topic"} == {"erased_by"}
    assert erased["erased_by"] == {"_type_": "uuid_hex", "_data_": grant.user_id.hex}
