"""Stateful property tests of a session under any sequence of refreshes and replays."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.errors import SessionRevokedError, UnknownRefreshTokenError
from domain.session import RefreshPolicy, Session
from domain.values import RevocationReason
from tests.unit.helpers import T0

POLICY = RefreshPolicy(
    token_ttl=timedelta(hours=1),
    max_session_age=timedelta(hours=5),
    reuse_interval=timedelta(seconds=30),
)


class SessionMachine(RuleBasedStateMachine):
    """A client (or an attacker) presents tokens, fresh and stale, as time passes."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.session = Session.open(uuid4(), uuid4(), 1, "t0", "ip", "ua", POLICY, T0)
        self.issued = ["t0"]
        self.events = list(self.session.collect_events())

    def present(self, token: str) -> None:
        successor = f"{token}+"  # each token's successor is derived from it
        try:
            self.session.refresh(token, successor, "ip", "ua", POLICY, self.now)
        except (SessionRevokedError, UnknownRefreshTokenError):
            assert not self.session.collect_events()
            return
        new_events = list(self.session.collect_events())
        self.events += new_events
        if any(isinstance(e, Session.TokenRotated) for e in new_events):
            self.issued.append(successor)

    @rule(seconds=st.integers(min_value=0, max_value=4000))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def refresh_with_the_newest_token(self) -> None:
        self.present(self.issued[-1])

    @rule(data=st.data())
    def replay_an_earlier_token(self, data: st.DataObject) -> None:
        self.present(data.draw(st.sampled_from(self.issued)))

    @rule()
    def present_a_forged_token(self) -> None:
        self.present("forged")

    @precondition(lambda self: not self.session.is_revoked)
    @rule()
    def log_out(self) -> None:
        self.session.revoke(RevocationReason.LOGOUT, "ip", "ua", self.now)
        self.events += self.session.collect_events()

    @invariant()
    def a_session_has_exactly_one_live_token(self) -> None:
        assert self.session.refresh_token_hash == self.issued[-1]
        assert self.session.previous_token_hash != self.issued[-1]

    @invariant()
    def generations_count_up_by_one(self) -> None:
        rotations = [e for e in self.events if isinstance(e, Session.TokenRotated)]
        assert [e.generation for e in rotations] == list(range(1, len(rotations) + 1))

    @invariant()
    def nothing_happens_after_revocation(self) -> None:
        kinds = [type(e) for e in self.events]
        if Session.Revoked in kinds:
            assert kinds.index(Session.Revoked) == len(kinds) - 1

    @invariant()
    def rotation_never_outlives_the_session(self) -> None:
        for event in self.events:
            if isinstance(event, Session.TokenRotated):
                assert event.expires_at <= self.session.ends_at
                assert event.timestamp < self.session.ends_at

    @invariant()
    def replaying_the_aggregate_gives_the_same_session(self) -> None:
        replayed = None
        for event in self.events:
            replayed = event.mutate(replayed)
        assert replayed == self.session


SessionMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
test_session_properties = SessionMachine.TestCase
