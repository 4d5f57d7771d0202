"""The signing keys' ring: given its events, when a rotation, a withdrawal or
a revocation, then these events, these states, these refusals; and a
process's view of the ring follows what another one changed."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from uuid import uuid4

import pytest

from application.auth import AuthApplication
from application.signing_keys import SCHEDULE, SigningKeyRing
from domain.errors import SigningKeyStateError, UnknownSigningKeyError
from domain.key_ring import KeyRing, KeyState, NewSigningKey
from infrastructure.signing_keys import KeyCipher, LiveKeyRing, SealedKeyMaker
from infrastructure.tokens import LEEWAY_S, InvalidAccessTokenError, JwtTokens
from tests.unit.helpers import T0
from tests.unit.test_use_cases import KEY_ENCRYPTION_KEY, FakeClock, names, stream

VERIFY_FOR = timedelta(minutes=16)
CIPHER = KeyCipher(KEY_ENCRYPTION_KEY)


def new_key(kid: str, algorithm: str = "ES256") -> NewSigningKey:
    public = {"kty": "EC", "kid": kid, "alg": algorithm, "use": "sig"}
    return NewSigningKey(kid, algorithm, public, f"sealed-{kid}")


def started() -> KeyRing:
    ring = KeyRing.start(new_key("k1"), new_key("k2"), "setup", T0)
    ring.collect_events()
    return ring


def states(ring: KeyRing) -> dict[str, str]:
    return {key.kid: key.state.value for key in ring.all_keys()}


def test_a_started_ring_signs_with_its_first_key_and_publishes_the_second() -> None:
    # When the ring is started
    ring = KeyRing.start(new_key("k1"), new_key("k2"), "setup", T0)

    # Then these events, each naming who asked
    events = ring.collect_events()
    assert names(events) == [
        "KeyRing.Started",
        "KeyRing.KeyAdded",
        "KeyRing.KeyActivated",
        "KeyRing.KeyAdded",
    ]
    assert {getattr(event, "by", "setup") for event in events} == {"setup"}
    assert states(ring) == {"k1": "active", "k2": "next"}
    assert ring.active.kid == "k1"


def test_a_rotation_activates_the_next_retires_the_active_publishes_a_new_next() -> (
    None
):
    # Given a started ring
    ring = started()
    later = T0 + timedelta(days=30)

    # When it is rotated
    active = ring.rotate(new_key("k3"), "cli:ops", later, VERIFY_FOR)

    # Then the next signs, the old one verifies for the life of its tokens
    events = ring.collect_events()
    assert names(events) == [
        "KeyRing.KeyActivated",
        "KeyRing.KeyRetired",
        "KeyRing.KeyAdded",
    ]
    assert [event.by for event in events] == ["cli:ops"] * 3  # type: ignore[attr-defined]
    assert active.kid == "k2"
    assert states(ring) == {"k1": "retired", "k2": "active", "k3": "next"}
    retired = ring.key("k1")
    assert retired.verify_until == later + VERIFY_FOR
    assert retired.verifies(later + VERIFY_FOR - timedelta(seconds=1))
    assert not retired.verifies(later + VERIFY_FOR)
    # And exactly one key is active
    assert len(ring.in_state(KeyState.ACTIVE)) == 1


def test_a_next_key_is_withdrawn_at_once_but_the_active_key_only_by_a_rotation() -> (
    None
):
    # Given a started ring
    ring = started()

    # When its next key is retired
    ring.retire("k2", new_key("k3"), "cli:ops", T0)

    # Then it verifies nothing from now, as it signed nothing; a new next waits
    assert names(ring.collect_events()) == ["KeyRing.KeyRetired", "KeyRing.KeyAdded"]
    assert not ring.key("k2").verifies(T0)
    assert states(ring) == {"k1": "active", "k2": "retired", "k3": "next"}
    # And the active key, an unknown key and a retired key are refused
    with pytest.raises(SigningKeyStateError):
        ring.retire("k1", new_key("k4"), "cli:ops", T0)
    with pytest.raises(SigningKeyStateError):
        ring.retire("k2", new_key("k4"), "cli:ops", T0)
    with pytest.raises(UnknownSigningKeyError):
        ring.retire("nope", new_key("k4"), "cli:ops", T0)
    assert ring.collect_events() == []


def test_revoking_the_active_key_activates_the_next_and_publishes_a_replacement() -> (
    None
):
    # Given a started ring
    ring = started()

    # When its active key is revoked
    ring.revoke("k1", new_key("k3"), "cli:ops", T0)

    # Then the next signs, the revoked key verifies nothing, a new next waits
    assert names(ring.collect_events()) == [
        "KeyRing.KeyActivated",
        "KeyRing.KeyRevoked",
        "KeyRing.KeyAdded",
    ]
    assert states(ring) == {"k1": "revoked", "k2": "active", "k3": "next"}
    assert not ring.key("k1").verifies(T0)


def test_revoking_a_retired_key_ends_it_before_its_time_and_keeps_the_next() -> None:
    # Given a rotated ring: k1 retired and still verifying
    ring = started()
    ring.rotate(new_key("k3"), "cli:ops", T0, VERIFY_FOR)
    ring.collect_events()

    # When the retired key is revoked, then revoked again
    ring.revoke("k1", new_key("unused"), "cli:ops", T0)
    ring.revoke("k1", new_key("unused-too"), "cli:ops", T0)

    # Then one revocation, and the next key stays the next (no replacement)
    assert names(ring.collect_events()) == ["KeyRing.KeyRevoked"]
    assert states(ring) == {"k1": "revoked", "k2": "active", "k3": "next"}
    assert not ring.key("k1").verifies(T0)
    with pytest.raises(UnknownSigningKeyError):
        ring.revoke("nope", new_key("k4"), "cli:ops", T0)


def test_a_scheduled_rotation_waits_for_both_the_period_and_the_prepublication() -> (
    None
):
    # Given a ring started at T0, whose next key was published at T0 too
    ring = started()
    every, prepublished = timedelta(days=30), timedelta(hours=1)

    # Then a rotation is due once the active key is older than the period
    assert not ring.due(T0 + every - timedelta(seconds=1), every, prepublished)
    assert ring.due(T0 + every, every, prepublished)
    # And not while the next key is younger than its pre-publication
    ring.rotate(new_key("k3"), SCHEDULE, T0 + every, VERIFY_FOR)
    ring.revoke("k3", new_key("k4"), "cli:ops", T0 + 2 * every)
    assert not ring.due(T0 + 2 * every, every, prepublished)
    assert ring.due(T0 + 2 * every + prepublished, every, prepublished)


# The use cases, on in-memory persistence -----------------------------------


@pytest.fixture
def key_ring(app: AuthApplication, clock: FakeClock) -> SigningKeyRing:
    ring = SigningKeyRing(app, SealedKeyMaker(CIPHER), "ES256", VERIFY_FOR, clock)
    ring.start("setup")
    return ring


def test_starting_a_started_ring_stores_nothing(
    app: AuthApplication, key_ring: SigningKeyRing
) -> None:
    before = stream(app, KeyRing.create_id())
    again = key_ring.start("setup")
    assert stream(app, KeyRing.create_id()) == before
    assert len(again.all_keys()) == 2


def test_a_rotation_to_another_algorithm_signs_with_it_one_rotation_later(
    key_ring: SigningKeyRing,
) -> None:
    # When the ring is rotated asking for EdDSA, then rotated again
    first = key_ring.rotate("cli:ops", "EdDSA")
    second = key_ring.rotate("cli:ops")

    # Then the EdDSA key, published first as the next, signs after the second
    assert first.algorithm == "ES256"
    assert second.algorithm == "EdDSA"
    assert second.public_jwk["crv"] == "Ed25519"
    assert second.public_jwk["alg"] == "EdDSA"
    # And the stored ring holds its private keys sealed only
    ring = key_ring.current()
    assert ring is not None
    for key in ring.all_keys():
        assert "PRIVATE KEY" not in key.sealed_private_key
        opened = CIPHER.open(key.kid, key.algorithm, key.sealed_private_key)
        assert b"PRIVATE KEY" in opened


def test_a_scheduled_rotation_happens_once_when_due_and_names_the_schedule(
    app: AuthApplication, key_ring: SigningKeyRing, clock: FakeClock
) -> None:
    every, prepublished = timedelta(days=30), timedelta(hours=1)
    before = key_ring.current()
    assert before is not None

    assert not key_ring.rotate_if_due(every, prepublished)
    clock.advance(every)
    assert key_ring.rotate_if_due(every, prepublished)
    assert not key_ring.rotate_if_due(every, prepublished)

    events = stream(app, KeyRing.create_id())[-3:]
    assert names(events) == [
        "KeyRing.KeyActivated",
        "KeyRing.KeyRetired",
        "KeyRing.KeyAdded",
    ]
    assert {event.by for event in events} == {SCHEDULE}  # type: ignore[attr-defined]
    assert len(stream(app, KeyRing.create_id())) == before.version + 3


def test_a_process_view_follows_changes_another_process_made(
    app: AuthApplication, key_ring: SigningKeyRing, clock: FakeClock
) -> None:
    # Given this process's view of the ring, and another process's use cases
    view = LiveKeyRing(key_ring, CIPHER, clock)
    first = view.view.active.key.kid
    elsewhere = SigningKeyRing(app, SealedKeyMaker(CIPHER), "ES256", VERIFY_FOR, clock)

    # When the other process rotates, then revokes the key it retired
    elsewhere.rotate("cli:ops")
    view.refresh()
    rotated = view.view.active.key.kid
    assert rotated != first
    assert view.verifying(first) is not None  # retired: its tokens still live
    elsewhere.revoke(first, "cli:ops")
    view.refresh()

    # Then the revoked key verifies nothing and is no longer published
    assert view.verifying(first) is None
    published = {jwk["kid"] for jwk in view.published()}
    assert first not in published
    assert rotated in published
    assert len(published) == 2  # the active and the next


def test_a_retired_key_stops_verifying_when_its_last_token_expired(
    key_ring: SigningKeyRing, clock: FakeClock
) -> None:
    view = LiveKeyRing(key_ring, CIPHER, clock)
    first = view.view.active.key.kid
    key_ring.rotate("cli:ops")
    view.refresh()

    clock.advance(VERIFY_FOR - timedelta(seconds=1))
    assert view.verifying(first) is not None
    assert first in {jwk["kid"] for jwk in view.published()}
    clock.advance(timedelta(seconds=1))
    assert view.verifying(first) is None
    assert first not in {jwk["kid"] for jwk in view.published()}


def test_an_hs256_key_signs_and_verifies_but_is_never_published(
    app: AuthApplication, clock: FakeClock
) -> None:
    ring = SigningKeyRing(app, SealedKeyMaker(CIPHER), "HS256", VERIFY_FOR, clock)
    ring.start("setup")
    view = LiveKeyRing(ring, CIPHER, clock)

    assert view.view.active.key.algorithm == "HS256"
    assert view.published() == []
    assert isinstance(view.view.active.signing, bytes)
    assert len(view.view.active.signing) == 32


def test_a_kid_is_never_taken_for_an_option_of_the_keys_command() -> None:
    # A base64url kid may begin with "-": `keys revoke -Hd…` failed as an
    # unknown option. Kids are hex.
    kids = {SealedKeyMaker(CIPHER).make("HS256").kid for _ in range(200)}
    assert len(kids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{16}", kid) for kid in kids)


def test_a_token_checked_before_stops_verifying_once_revoked_or_expired(
    app: AuthApplication,
    key_ring: SigningKeyRing,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a token verified once (its signature check is then kept)
    tokens = JwtTokens(LiveKeyRing(key_ring, CIPHER, clock), "iss", "aud", ttl_s=60)
    token = tokens.issue(uuid4(), uuid4(), "USER")
    claims = tokens.verify(token)
    assert tokens.verify(token) == claims

    # When it expires (past the leeway), then it is refused though kept
    issued_at = time.time()
    monkeypatch.setattr(time, "time", lambda: issued_at + 60 + LEEWAY_S + 1)
    with pytest.raises(InvalidAccessTokenError):
        tokens.verify(token)
    monkeypatch.undo()

    # And a fresh one, checked once, is refused as soon as its key is revoked
    fresh = tokens.issue(uuid4(), uuid4(), "USER")
    tokens.verify(fresh)
    kid = tokens.keys.view.active.key.kid
    SigningKeyRing(app, SealedKeyMaker(CIPHER), "ES256", VERIFY_FOR, clock).revoke(
        kid, "cli:ops"
    )
    tokens.keys.refresh()
    with pytest.raises(InvalidAccessTokenError):
        tokens.verify(fresh)
