"""Mailed links: verify an email, reset a forgotten password; each works once."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from application.errors import InvalidMailTokenError, UserNotFoundError
from application.ports import Tally
from application.values import Client, hash_token
from domain.errors import DomainError, RequestedTooSoonError
from domain.reset_asks import ResetAsks
from domain.throttle import ThrottlePolicy
from domain.user import MailPolicy, User
from domain.values import RevocationReason

if TYPE_CHECKING:
    from datetime import datetime

    from application.auth import AuthApplication
    from application.ports import MailTokens

PAGE = 200
VERIFY = "verify-email"
RESET = "reset-password"


class AccountMail:
    """The use cases behind mailed links; the outbox sends the mail itself.

    A request records the hash of the link's token on the user; the outbox
    mints the same token again when it sends the mail, so no raw token is
    ever stored. Requests are limited per account (a cooldown) and per client
    address (a throttle), and a password-reset request answers the same
    whether or not the account exists.
    """

    def __init__(
        self,
        app: AuthApplication,
        tokens: MailTokens,
        policy: MailPolicy | None = None,
        per_address: ThrottlePolicy | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.policy = policy or MailPolicy()
        self.per_address = per_address or ThrottlePolicy(max_attempts=10)

    def request_verification(self, user_id: UUID, client: Client) -> None:
        """Mail a link that verifies the user's email."""
        request_id = uuid4()
        token_hash = hash_token(self.tokens.mint(VERIFY, user_id, request_id))
        now = self.app.clock()
        self._record_request(
            client,
            user_id,
            lambda user: user.request_verification(
                request_id, token_hash, self.policy, now
            ),
        )

    def verify_email(self, token: str, client: Client) -> None:
        """Verify an email with the token its link carried."""
        now = self.app.clock()
        self._count_link(client, now)
        user_id = self._user_of(token)
        try:
            self.app.update_user(
                user_id, lambda u: u.verify_email_with(hash_token(token), now)
            )
        except (DomainError, UserNotFoundError):
            raise InvalidMailTokenError from None

    def forgot_password(self, email: str, client: Client) -> None:
        """Ask for a reset link; the work and the answer are alike for any address.

        Only the ask is recorded now, under the address's keyed hash, with the
        account's id if a claim names one (one primary-key read, hit or miss);
        the account's own stream is changed off the request (dispatch_resets),
        so the time taken tells nothing.
        """
        now = self.app.clock()
        key = self.app.address_name(email)
        claim = self.app.find_claim(email)
        user_id = None if claim is None else claim.user_id

        def ask() -> list[ResetAsks]:
            asks = self.app.reset_asks(key, now)
            # Too soon? The earlier link still works; nothing new is recorded.
            with contextlib.suppress(RequestedTooSoonError):
                asks.ask(client.ip, client.user_agent, user_id, self.policy, now)
            return [asks]

        self.app.count_attempt(f"mail:{client.ip}", self.per_address, now, ask)

    def dispatch_resets(self, after: int) -> int:
        """Turn the asks stored after position `after` into reset links; returns
        the position reached (the newest readable one when it started).

        An ask for an account records a reset request on it, which the outbox
        mails; every ask is marked dispatched in the same save, so dispatched
        again (a crash, a lost position) it changes nothing. An ask older than
        a link's lifetime ends here.
        """
        until = self.app.recorder.max_notification_id() or after
        position = after
        while page := self.app.recorder.select_notifications(
            position, PAGE, until, [ResetAsks.Asked.TOPIC], inclusive_of_start=False
        ):
            for notification in page:
                ask = self.app.mapper.to_domain_event(notification)
                if isinstance(ask, ResetAsks.Asked):
                    self._dispatch(ask)
            position = page[-1].id
        return until

    def _dispatch(self, ask: ResetAsks.Asked) -> None:
        """Record the reset request an ask makes, if any, and mark it dispatched,
        in one save: for an unknown address too, so that every address's
        stream grows alike and its read costs what a known one's does."""
        now = self.app.clock()
        if ask.timestamp + self.policy.reset_ttl <= now:
            return  # its link would already have expired
        user_id = ask.user_id
        request_id = ask.request_id
        token_hash = ""
        if user_id is not None:
            token_hash = hash_token(self.tokens.mint(RESET, user_id, request_id))

        def dispatch() -> None:
            asks: ResetAsks = self.app.repository.get(ask.originator_id)
            if asks.dispatched_through >= ask.originator_version:
                return
            asks.dispatched(ask, now)
            try:
                user = None if user_id is None else self.app.get_user(user_id)
            except UserNotFoundError:
                user = None  # erased since it was asked: no account to reset
            if user is None:
                self.app.save(asks)
                return
            # Asked again within the account's cooldown: the earlier link works.
            with contextlib.suppress(RequestedTooSoonError):
                user.request_password_reset(request_id, token_hash, self.policy, now)
            self.app.save(user, asks)

        self.app.attempt(dispatch)

    def reset_password(self, token: str, new_password: str, client: Client) -> None:
        """Set a new password with the token its link carried; end every session."""
        now = self.app.clock()
        self._count_link(client, now)
        user_id = self._user_of(token)
        # The token is checked before any bcrypt work: a forged one costs none.
        try:
            user = self.app.get_user(user_id)
        except UserNotFoundError:
            raise InvalidMailTokenError from None
        try:
            user.check_reset_token(hash_token(token), now)
        except DomainError:
            if self._has_reset_with(user, token, new_password, client, now):
                return  # a retry of the reset that used the link: it is done
            raise InvalidMailTokenError from None
        password_hash = self.app.hash_new_password(new_password, user.email)
        try:
            self.app.revoke_sessions(
                user_id,
                client,
                RevocationReason.PASSWORD_CHANGED,
                change=lambda u: u.reset_password(
                    hash_token(token), password_hash, client.ip, client.user_agent, now
                ),
            )
        except (DomainError, UserNotFoundError):
            raise InvalidMailTokenError from None
        self.app.meter.count(Tally.PASSWORD_CHANGE, "reset")

    def _has_reset_with(
        self, user: User, token: str, new_password: str, client: Client, now: datetime
    ) -> bool:
        """Whether this link's reset set the password now in force, moments
        ago, and it is the one given: a retry of the reset, told it is done.

        Only the newest link, unexpired, followed by one change of the
        password within the retry window (a change by other means voids the
        link too: the window bounds what its holder could learn then); the
        account's lock holds, and a wrong password counts toward it.
        """
        changes: list[datetime] = []
        for event in self.app.recent(user.id):
            if isinstance(event, User.PasswordChanged):
                changes.append(event.timestamp)
            elif isinstance(event, User.PasswordResetRequested):
                if not (
                    len(changes) == 1
                    and now - changes[0] <= self.app.policy.retry_window
                    and now < event.expires_at
                    and hmac.compare_digest(event.token_hash, hash_token(token))
                ):
                    return False
                break
        else:
            return False
        user.release_expired_lock(now)
        if user.is_locked(now):
            return False
        if self.app.passwords.verify(new_password, user.password_hash):
            return True
        self.app.record_failure(client, user.id, now)
        return False

    def _count_link(self, client: Client, now: datetime) -> None:
        """Each link followed counts against the address: tokens cannot be sprayed."""
        self.app.count_attempt(f"link:{client.ip}", self.per_address, now)

    def _user_of(self, token: str) -> UUID:
        user_id = self.tokens.user_of(token)
        if user_id is None:
            raise InvalidMailTokenError
        return user_id

    def _record_request(
        self, client: Client, user_id: UUID, command: Callable[[User], None]
    ) -> None:
        """Count the request against the address, apply it to the user, save both."""

        def changed_user() -> list[User]:
            user = self.app.get_user(user_id)
            command(user)
            return [user]

        now = self.app.clock()
        self.app.count_attempt(f"mail:{client.ip}", self.per_address, now, changed_user)
