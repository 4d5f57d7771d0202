"""Session aggregate: one login, its rotating refresh token and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import SessionRevokedError, UnknownRefreshTokenError
from domain.values import Factor, RevocationReason


@dataclass(frozen=True)
class RefreshPolicy:
    """How long refresh tokens live and how long a just-rotated token may be retried.

    `token_ttl` is the idle lifetime of each refresh token, `max_session_age` the
    absolute lifetime that rotation never extends, and `reuse_interval` the grace
    period (0 = strict) in which the token just retired may be presented again:
    tabs racing on one token all get its successor instead of killing the session.
    """

    token_ttl: timedelta = timedelta(days=7)
    max_session_age: timedelta = timedelta(days=30)
    reuse_interval: timedelta = timedelta(seconds=10)


class Session(Aggregate):
    TOPIC = "authledger:Session"
    # Version 2 knows the user's version at its login (snapshots of version 1
    # do not): sessions opened before markers existed precede every marker.
    # Version 3 keeps only its previous token, not every retired one: older
    # tokens are found in the events by their generation.
    # Version 4 knows the factors its login proved: older ones, a password.
    class_version = 4

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["login_version"] = 0

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        retired: dict[str, datetime] = state.pop("retired_at") or {}
        previous = max(retired, key=retired.__getitem__, default=None)
        state["previous_token_hash"] = previous
        state["rotated_at"] = retired[previous] if previous else None

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        state["factors"] = [Factor.PASSWORD.value]

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "authledger:Session.Created"

    class Opened(Created):
        TOPIC = "authledger:Session.Opened"
        # Version 3 names the factors the login proved.
        class_version = 3
        user_id: UUID
        login_version: int
        refresh_token_hash: str
        expires_at: datetime
        ends_at: datetime
        ip: str
        user_agent: str
        factors: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Sessions opened before markers existed precede every marker.
            state["login_version"] = 0

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["factors"] = [Factor.PASSWORD.value]

    class TokenRotated(Event):
        TOPIC = "authledger:Session.TokenRotated"
        user_id: UUID
        refresh_token_hash: str
        generation: int
        expires_at: datetime
        ip: str
        user_agent: str

        def apply(self, session: Session) -> None:
            session.previous_token_hash = session.refresh_token_hash
            session.rotated_at = self.timestamp
            session.refresh_token_hash = self.refresh_token_hash
            session.generation = self.generation
            session.expires_at = self.expires_at

    class Revoked(Event):
        TOPIC = "authledger:Session.Revoked"
        user_id: UUID
        reason: str
        ip: str
        user_agent: str

        def apply(self, session: Session) -> None:
            session.revoked_reason = RevocationReason(self.reason)

    def __init__(
        self,
        user_id: UUID,
        login_version: int,
        refresh_token_hash: str,
        expires_at: datetime,
        ends_at: datetime,
        ip: str,
        user_agent: str,
        factors: list[str],
    ) -> None:
        self.user_id = user_id
        self.login_version = login_version
        self.factors = list(factors)
        self.ip = ip
        self.user_agent = user_agent
        self.refresh_token_hash = refresh_token_hash
        self.expires_at = expires_at
        self.ends_at = ends_at
        self.generation = 0
        self.previous_token_hash: str | None = None
        self.rotated_at: datetime | None = None
        self.revoked_reason: RevocationReason | None = None

    @classmethod
    def open(
        cls,
        session_id: UUID,
        user_id: UUID,
        login_version: int,
        refresh_token_hash: str,
        ip: str,
        user_agent: str,
        policy: RefreshPolicy,
        now: datetime,
        factors: tuple[Factor, ...] = (Factor.PASSWORD,),
    ) -> Session:
        ends_at = now + policy.max_session_age
        return cls._create(
            cls.Opened,
            id=session_id,
            timestamp=now,
            user_id=user_id,
            login_version=login_version,
            refresh_token_hash=refresh_token_hash,
            expires_at=min(now + policy.token_ttl, ends_at),
            ends_at=ends_at,
            ip=ip,
            user_agent=user_agent,
            factors=[factor.value for factor in factors],
        )

    @property
    def is_revoked(self) -> bool:
        return self.revoked_reason is not None

    def check_not_revoked(self) -> None:
        if self.is_revoked:
            raise SessionRevokedError(self.id)

    def refresh(
        self,
        presented_hash: str,
        successor_hash: str,
        ip: str,
        user_agent: str,
        policy: RefreshPolicy,
        now: datetime,
    ) -> bool:
        """Rotate to `successor_hash`, or revoke the session if the token is stale.

        The current token rotates while it has not expired. The one it
        replaced, presented again within the reuse interval, is a tab that
        raced the rotation: False, nothing changes, and it gets the current
        token (its successor). Outside the interval it is a replay and the
        whole session is revoked (RFC 9700 4.14.2), as is any older token
        (see `replayed`). A revoked session is terminal, whichever token.
        """
        self.check_not_revoked()
        if presented_hash == self.previous_token_hash:
            raced = (
                policy.reuse_interval
                and self.rotated_at is not None
                and now - self.rotated_at <= policy.reuse_interval
                and successor_hash == self.refresh_token_hash
            )
            if not raced:
                self.replayed(ip, user_agent, now)
                return True
        elif presented_hash != self.refresh_token_hash:
            raise UnknownRefreshTokenError(self.id)
        if now >= self.expires_at:
            self.revoke(RevocationReason.EXPIRED, ip, user_agent, now)
            return True
        if presented_hash == self.previous_token_hash:
            return False
        self.trigger_event(
            self.TokenRotated,
            timestamp=now,
            user_id=self.user_id,
            refresh_token_hash=successor_hash,
            generation=self.generation + 1,
            expires_at=min(now + policy.token_ttl, self.ends_at),
            ip=ip,
            user_agent=user_agent,
        )
        return True

    def expire(self, now: datetime) -> None:
        """Record that the session ran out, if it has and is not over already."""
        if not self.is_revoked and now >= self.expires_at:
            self.revoke(RevocationReason.EXPIRED, "", "", now)

    def replayed(self, ip: str, user_agent: str, now: datetime) -> None:
        """A retired token came back: whoever holds it, the session is over."""
        self.revoke(RevocationReason.REUSE_DETECTED, ip, user_agent, now)

    def revoke(
        self, reason: RevocationReason, ip: str, user_agent: str, now: datetime
    ) -> None:
        self.check_not_revoked()
        self.trigger_event(
            self.Revoked,
            timestamp=now,
            user_id=self.user_id,
            reason=reason.value,
            ip=ip,
            user_agent=user_agent,
        )
