"""The outbox's sender: mails each pending link once, retrying while SMTP is down."""

from __future__ import annotations

import errno
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

from application.account_mail import RESET, VERIFY
from infrastructure.database import connect
from infrastructure.instruments import MAILS
from infrastructure.periodic import Periodic

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

    from application.ports import MailTokens

log = logging.getLogger(__name__)

SETUP = (
    "CREATE SCHEMA IF NOT EXISTS authledger",
    # Delivery is not derived from events, so it lives outside the rebuildable
    # read models: rebuilding the outbox must never send a mail again.
    "CREATE TABLE IF NOT EXISTS authledger.mail_deliveries ("
    " position bigint PRIMARY KEY, attempts integer NOT NULL,"
    " next_attempt_at timestamptz NOT NULL, sent_at timestamptz, last_error text)",
    # How far the reset asks in the log have been turned into reset requests.
    "CREATE TABLE IF NOT EXISTS authledger.reset_dispatch ("
    " one boolean PRIMARY KEY DEFAULT true CHECK (one), position bigint NOT NULL)",
    "INSERT INTO authledger.reset_dispatch (position) VALUES (0)"
    " ON CONFLICT DO NOTHING",
)
DISPATCHED = "SELECT position FROM authledger.reset_dispatch"
DISPATCH_REACHED = "UPDATE authledger.reset_dispatch SET position = %s"
# Due: not sent, not expired, retry time reached, and not superseded by a newer
# request of the same kind (whose link is the only one that works).
DUE = """
SELECT o.position, o.purpose, o.user_id, o.request_id, o.email,
       coalesce(d.attempts, 0) AS attempts
FROM read_models.outbox o
LEFT JOIN authledger.mail_deliveries d ON d.position = o.position
WHERE d.sent_at IS NULL AND o.expires_at > now()
  AND coalesce(d.next_attempt_at, '-infinity') <= now()
  AND NOT EXISTS (SELECT 1 FROM read_models.outbox n WHERE n.user_id = o.user_id
                  AND n.purpose = o.purpose AND n.position > o.position)
ORDER BY o.position LIMIT 20
"""
ATTEMPT = """
INSERT INTO authledger.mail_deliveries (position, attempts, next_attempt_at)
VALUES (%(position)s, 1, now() + %(backoff)s * interval '1 second')
ON CONFLICT (position) DO UPDATE SET attempts = mail_deliveries.attempts + 1,
    next_attempt_at = now() + %(backoff)s * interval '1 second'
"""
SENT = "UPDATE authledger.mail_deliveries SET sent_at = now() WHERE position = %s"
FAILED = "UPDATE authledger.mail_deliveries SET last_error = %s WHERE position = %s"
LONGEST_BACKOFF_S = 300
LOCK = "SELECT pg_try_advisory_lock(hashtextextended('authledger.mailer', 0))"

# purpose -> (subject, path of the link in the web client)
SUBJECTS = {
    VERIFY: ("Confirm your email address", "verify-email"),
    RESET: ("Reset your password", "reset-password"),
}


class MailSender(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand the message over for delivery, or raise."""
        ...


@dataclass(frozen=True)
class SmtpSender:
    """A real SMTP client (smtplib), with STARTTLS, implicit TLS or neither."""

    host: str
    port: int
    tls: Literal["starttls", "ssl", "none"]
    user: str | None = None
    password: str | None = None
    timeout_s: float = 10

    def send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with smtp:
            if self.tls == "starttls":
                smtp.starttls(context=context)
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(message)


@dataclass(frozen=True)
class FileSender:
    """Development: write each mail as an .eml file and say where."""

    directory: Path

    def send(self, message: EmailMessage) -> None:
        # They hold live links: readable by the service's user only.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = str(message["Message-ID"]).strip("<>").replace("@", "_")
        path = self.directory / f"{name}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(message))
        log.warning("mail written to %s", path)


def _failure(error: OSError | smtplib.SMTPException) -> str:
    """What went wrong, by kind and code only: SMTP servers quote the
    recipient's address in their answers, and no record or log keeps it."""
    codes: list[str] = []
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [
            str(code) for code in sorted({c for c, _ in error.recipients.values()})
        ]
    elif isinstance(error, smtplib.SMTPResponseException):
        codes = [str(error.smtp_code)]
    elif isinstance(error, OSError) and error.errno is not None:
        codes = [errno.errorcode.get(error.errno, str(error.errno))]
    shown = ", ".join(codes)
    return f"{type(error).__name__} ({shown})" if shown else type(error).__name__


def setup_deliveries(conn: psycopg.Connection[Any]) -> None:
    """Create the table that records what was sent."""
    for statement in SETUP:
        conn.execute(statement)


class Mailer:
    """Send due mails from one process at a time (advisory lock), at least once.

    Each attempt is recorded before the send; the send is recorded after it.
    A crash between the two sends that mail once more on restart (at most one
    duplicate per crash, same Message-ID so clients can fold them); nothing
    is ever sent that was not first recorded as attempted. Each round first
    turns the reset links asked for into requests (`dispatch`: from a
    position to the one it reached; a crash repeats some, which changes
    nothing), so their mails go out in the same round.
    """

    def __init__(
        self,
        url: str,
        sender: MailSender,
        tokens: MailTokens,
        sender_address: str,
        public_url: str,
        dispatch: Callable[[int], int],
        poll_s: float = 0.5,
    ) -> None:
        self._url = url
        self._dispatch = dispatch
        self._sender = sender
        self._tokens = tokens
        self._from = sender_address
        self._public_url = public_url.rstrip("/")
        self._poll_s = poll_s
        # Each round that fails is logged and the next one resumes mailing.
        self._rounds = Periodic("mailer", poll_s, self._round)

    def start(self) -> None:
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def _round(self) -> None:
        """Mail while this process holds the mailer's lock (one process at a time)."""
        stopping = self._rounds.stopping
        with connect(self._url, "authledger-mailer") as conn:
            locked = conn.execute(LOCK).fetchone()
            while locked and locked[0] and not stopping.is_set():
                try:
                    self.dispatch_asks(conn)
                except Exception:
                    # Retried next round; meanwhile the mail already due goes.
                    log.exception("reset asks not dispatched")
                self.send_due(conn)
                stopping.wait(self._poll_s)

    def dispatch_asks(self, conn: psycopg.Connection[Any]) -> None:
        """Dispatch the asks stored since the last round, then record how far."""
        row = conn.execute(DISPATCHED).fetchone()
        position = int(row[0]) if row else 0
        reached = self._dispatch(position)
        if reached != position:
            conn.execute(DISPATCH_REACHED, (reached,))

    def send_due(self, conn: psycopg.Connection[Any]) -> int:
        """Try every due mail once; return how many went out."""
        sent = 0
        for position, purpose, user_id, request_id, email, attempts in conn.execute(
            DUE
        ).fetchall():
            backoff = min(2 ** min(attempts, 16), LONGEST_BACKOFF_S)
            conn.execute(ATTEMPT, {"position": position, "backoff": backoff})
            message = self._message(position, purpose, user_id, request_id, email)
            try:
                self._sender.send(message)
            except (OSError, smtplib.SMTPException) as error:
                failure = _failure(error)
                conn.execute(FAILED, (failure, position))
                MAILS.labels(purpose, "failed").inc()
                log.warning(
                    "mail %s not sent, retry in %ss: %s", position, backoff, failure
                )
                continue
            conn.execute(SENT, (position,))
            MAILS.labels(purpose, "sent").inc()
            sent += 1
        return sent

    def _message(
        self, position: int, purpose: str, user_id: UUID, request_id: UUID, email: str
    ) -> EmailMessage:
        subject, path = SUBJECTS[purpose]
        token = self._tokens.mint(purpose, user_id, request_id)
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = email
        message["Subject"] = subject
        message["Message-ID"] = f"<mail-{position}@authledger>"
        message.set_content(
            f"{subject}:\n\n{self._public_url}/{path}?token={token}\n\n"
            f"Or use this code with the API: {token}\n\n"
            "If you did not ask for this, ignore this mail.\n"
        )
        return message
