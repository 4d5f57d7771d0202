"""The rotation period in settings rotates the ring while replicas serve:
once per period whichever replica sees it due, and every replica follows."""

from __future__ import annotations

from typing import Any

from application.signing_keys import SCHEDULE
from tests.integration.helpers import MakeServices, wait_until
from tests.signing import ring_events


def test_replicas_watching_the_ring_rotate_it_once_when_due_and_both_follow(
    make_services: MakeServices, database_url: str
) -> None:
    # Given keys that rotate every 2 s, a next key published for 1 s first
    settings = {
        "run_projections": False,
        "signing_key_rotation_days": 2 / 86400,
        "signing_key_prepublication_s": 1,
        "key_ring_refresh_s": 0.1,
    }
    # When both are started (each watches the ring from its start)
    replicas = [make_services(**settings), make_services(**settings)]
    first_kid = replicas[0].tokens.keys.view.active.key.kid

    # Then the schedule rotates it, and both sign with the new key
    def activations() -> list[dict[str, Any]]:
        return [
            state
            for topic, state in ring_events(database_url)
            if topic == "authledger:KeyRing.KeyActivated"
        ]

    wait_until(lambda: len(activations()) >= 2, 15, "a scheduled rotation")
    rotated = activations()[1]
    assert rotated["by"] == SCHEDULE
    wait_until(
        lambda: all(
            r.tokens.keys.view.active.key.kid == rotated["kid"] for r in replicas
        ),
        5,
        "both replicas signing with the new key",
    )
    assert rotated["kid"] != first_kid
    # And once, not once per replica (the next is due 2 s later)
    assert len(activations()) == 2
