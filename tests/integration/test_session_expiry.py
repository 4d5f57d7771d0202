"""Sessions whose token ran out end in the log, so no table lists a dead session."""

from __future__ import annotations

from datetime import timedelta

from application.values import Client
from domain.session import RefreshPolicy, Session
from tests.integration.helpers import FakeClock, MakeServices, states_with_topic

TOKEN_TTL = RefreshPolicy().token_ttl


def test_a_sweep_ends_the_sessions_whose_token_ran_out_and_only_those(
    make_services: MakeServices,
) -> None:
    # Given: two sessions, one idle for longer than a token lives
    services = make_services(run_projections=False)
    clock = FakeClock()
    services.app.clock = clock
    idle = services.app.register("idle@example.com", "a long password", Client())
    clock.advance(TOKEN_TTL - timedelta(hours=1))
    active = services.app.register("active@example.com", "a long password", Client())
    clock.advance(timedelta(hours=2))
    assert services.sessions.expired(clock.now, 10) == [idle.session_id]

    # When: the sweep runs, twice (another process may run it too)
    assert services.sweep_sessions() == 1
    assert services.sweep_sessions() == 0

    # Then: the idle one ended as expired, in the log and in the table
    revoked = states_with_topic(services, Session.Revoked.TOPIC)
    assert [(r["reason"], r["user_agent"]) for r in revoked] == [("expired", "")]
    assert services.sessions.expired(clock.now, 10) == []
    assert services.sessions.list_sessions(idle.user_id, clock.now - TOKEN_TTL) == []
    assert [
        s.session_id for s in services.sessions.list_sessions(active.user_id, clock.now)
    ] == [active.session_id]
