"""One-off changes to stored data, each applied once, by the first process to start."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError

from domain.email_claim import EmailClaim
from domain.errors import MixedScriptEmailError
from domain.upgrade import Upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator

    from application.auth import AuthApplication

FOLD_EMAIL_CLAIMS = "fold-email-claims"
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
            folded = EmailClaim.claim(claimed.email, claimed.user_id, app.clock())
        except MixedScriptEmailError:
            continue  # keeps its exact claim; no new account can look like it
        if folded.id in app.repository:
            continue
        with contextlib.suppress(IntegrityError):  # another process made it
            app.save(folded)
            made += 1
    with contextlib.suppress(IntegrityError):
        app.save(Upgrade.applied(FOLD_EMAIL_CLAIMS, made, app.clock()))
    return made


def _claims(app: AuthApplication) -> Iterator[EmailClaim.Claimed]:
    start = 0
    while page := app.recorder.select_notifications(
        start, PAGE, topics=[EmailClaim.Claimed.TOPIC], inclusive_of_start=False
    ):
        for notification in page:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, EmailClaim.Claimed):
                yield event
        start = page[-1].id
