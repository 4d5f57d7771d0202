"""Development mail files hold live links: only their owner may read them."""

from __future__ import annotations

import stat
from email.message import EmailMessage
from pathlib import Path

from infrastructure.mailer import FileSender


def test_mail_files_are_private_to_the_service_user(tmp_path: Path) -> None:
    message = EmailMessage()
    message["To"] = "ada@example.com"
    message["Message-ID"] = "<reset-1@authledger>"
    message.set_content("https://example.test/reset?token=live")

    FileSender(tmp_path / "mail").send(message)

    [written] = (tmp_path / "mail").iterdir()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "mail").stat().st_mode) == 0o700
    assert "token=live" in written.read_text()
