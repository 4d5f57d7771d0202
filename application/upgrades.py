"""One-off changes to stored data, each applied once, by the first process to start."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from application.ports import utc_now
from application.values import address_streams
from domain.admin_roster import AdminRoster
from domain.email_claim import EmailClaim
from domain.errors import DomainError, MixedScriptEmailError
from domain.throttle import ClientThrottle
from domain.upgrade import Upgrade
from domain.user import User
from domain.values import ERASED, Role, email_identity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime
    from uuid import UUID

    from eventsourcing.domain import DomainEvent

    from application.auth import AuthApplication
    from application.store import AuthEventLog

FOLD_EMAIL_CLAIMS = "fold-email-claims"
KEY_EMAIL_CLAIMS = "key-email-claims"
SEAL_PERSONAL_DATA = "seal-personal-data"
FORGET_LEGACY_STREAMS = "forget-legacy-streams"
# A throttle's name since names are keyed: a hex HMAC (see lookup_name).
KEYED_NAME = re.compile(r"[0-9a-f]{64}")

PAGE = 500


def fold_email_claims(app: AuthApplication) -> int:
    """Claim the folded form of every address claimed before addresses were folded.

    Accounts are visited in log order, so of several that differ only by case
    the folded form goes to the one registered in it, else to the oldest; the
    others keep their exact claim (ADR 20). Returns how many claims it made;
    run again, or by several processes at once, it makes none twice.
    """
    if Upgrade.create_id(FOLD_EMAIL_CLAIMS) in app.repository:
        return 0
    made = 0
    for claimed in _claims(app):
        try:
            folded_id = EmailClaim.legacy_id(email_identity(claimed.email))
        except MixedScriptEmailError:
            continue  # keeps its exact claim; no new account can look like it
        made += _saved_once(
            app,
            EmailClaim.claim(folded_id, claimed.email, claimed.user_id, app.clock()),
        )
    return _applied(app, FOLD_EMAIL_CLAIMS, made, app.clock())


def key_email_claims(app: AuthApplication) -> int:
    """Name every claim made before claims were keyed the keyed way too, so
    that lookups need keyed ids only (ADR 29). Runs after fold_email_claims;
    returns how many claims it made, none twice however often it runs."""
    if Upgrade.create_id(KEY_EMAIL_CLAIMS) in app.repository:
        return 0
    made = 0
    for claimed in _claims(app):
        for form in EmailClaim.forms_of(claimed.email):
            if EmailClaim.legacy_id(form) != claimed.originator_id:
                continue  # a keyed claim, or another form's
            keyed_id = app.claim_id(form)
            made += _saved_once(
                app,
                EmailClaim.claim(keyed_id, claimed.email, claimed.user_id, app.clock()),
            )
    return _applied(app, KEY_EMAIL_CLAIMS, made, app.clock())


def seal_personal_data(
    log: AuthEventLog,
    address_key: bytes,
    rewrite: Callable[[list[UUID], list[UUID]], int],
) -> int:
    """Seal the personal fields stored in clear before sealing, once, by
    `rewrite` (the log's owner may rewrite it: ADR 31), given what to forget
    instead of the accounts erased before sealing: the owners whose data to
    shred (theirs, and their addresses' streams, which `address_key` names),
    and their claims named by the address itself, to drop (ADR 32). Returns
    how many events and snapshots it changed."""
    if is_sealed(log):
        return 0
    shredded: list[UUID] = []
    dropped: list[UUID] = []
    for user_id, email in _erased_accounts(log):
        shredded += [user_id, *address_streams(address_key, email, 0)]
        with contextlib.suppress(DomainError):
            dropped += [EmailClaim.legacy_id(f) for f in EmailClaim.forms_of(email)]
    return _applied(log, SEAL_PERSONAL_DATA, rewrite(shredded, dropped), utc_now())


def _erased_accounts(log: AuthEventLog) -> Iterator[tuple[UUID, str]]:
    """The id and address of every account erased so far (readable only
    while the log is not sealed)."""
    emails: dict[UUID, str] = {}
    for event in _stored(log, User.Registered, User.Erased):
        if isinstance(event, User.Registered):
            emails[event.originator_id] = event.email
        else:
            yield event.originator_id, emails[event.originator_id]


def forget_legacy_streams(
    app: AuthApplication, drop: Callable[[list[UUID]], int]
) -> int:
    """Drop, once, the streams named by a personal value itself: claims from
    before claims were keyed, throttles from before their names were (ADR
    32). Nothing reads them any more, and their names let anyone with a copy
    of the log test a guess. Call it after key_email_claims; `drop` (the
    log's owner) deletes them. Returns how many events and snapshots went."""
    if legacy_streams_forgotten(app):
        return 0
    legacy = {
        claimed.originator_id
        for claimed in _claims(app)
        if claimed.email != ERASED  # (those of erased accounts went at sealing)
        and claimed.originator_id
        in {EmailClaim.legacy_id(form) for form in EmailClaim.forms_of(claimed.email)}
    }
    legacy |= {
        started.originator_id
        for started in _stored(app, ClientThrottle.Started)
        if isinstance(started, ClientThrottle.Started)
        and not KEYED_NAME.fullmatch(started.key)
    }
    return _applied(app, FORGET_LEGACY_STREAMS, drop(sorted(legacy)), app.clock())


def legacy_streams_forgotten(log: AuthEventLog) -> bool:
    """Whether the log holds no stream named by a personal value."""
    return Upgrade.create_id(FORGET_LEGACY_STREAMS) in log.repository


def is_sealed(log: AuthEventLog) -> bool:
    """Whether the log holds no personal field in clear (new ones never do)."""
    return Upgrade.create_id(SEAL_PERSONAL_DATA) in log.repository


def start_admin_roster(app: AuthApplication) -> int:
    """Start the roster of admins from the log, once (stores before it had none).

    Call it holding the setup lock, before any role changes: from then on
    every change of an admin's role writes the roster too. Returns how many
    admins it holds.
    """
    if AdminRoster.create_id() in app.repository:
        return 0
    admins: dict[UUID, None] = {}  # in log order
    for event in _stored(app, User.Registered, User.RoleChanged):
        if not isinstance(event, (User.Registered, User.RoleChanged)):
            continue
        if event.role == Role.ADMIN:
            admins[event.originator_id] = None
        else:
            admins.pop(event.originator_id, None)
    with contextlib.suppress(IntegrityError):  # another process started it
        app.save(AdminRoster.start(list(admins), app.clock()))
    return len(admins)


def _saved_once(app: AuthApplication, claim: EmailClaim) -> int:
    """1 if this saved the claim; 0 if it was there (or a racing process saved it)."""
    if claim.id in app.repository:
        return 0
    with contextlib.suppress(IntegrityError):
        app.save(claim)
        return 1
    return 0


def _applied(log: AuthEventLog, name: str, made: int, now: datetime) -> int:
    """Record that the upgrade ran (once, whoever gets there first); `made`."""
    with contextlib.suppress(IntegrityError):
        log.save(Upgrade.applied(name, made, now))
    return made


def _claims(app: AuthApplication) -> Iterator[EmailClaim.Claimed]:
    for event in _stored(app, EmailClaim.Claimed):
        if isinstance(event, EmailClaim.Claimed):
            yield event


def _stored(log: AuthEventLog, *kinds: type[DomainEvent]) -> Iterator[DomainEvent]:
    """The stored events of these kinds, in log order."""
    start = 0
    topics = [get_topic(kind) for kind in kinds]
    while page := log.recorder.select_notifications(
        start, PAGE, topics=topics, inclusive_of_start=False
    ):
        for notification in page:
            event = log.mapper.to_domain_event(notification)
            if isinstance(event, kinds):
                yield event
        start = page[-1].id
