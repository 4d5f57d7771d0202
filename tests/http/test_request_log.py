"""The log of a real server: JSON lines, one per request with its id, and
nothing in them that would let a reader log in or find a person."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.conftest import free_port, start_server, stop_server
from tests.http.helpers import PASSWORD, bearer, eventually, new_email
from tests.http.test_mail_flows import Inbox, smtp_server, token_in
from tests.http.test_mfa import AuthenticatorApp

pytestmark = [pytest.mark.http, pytest.mark.postgres]


@pytest.fixture(scope="module")
def inbox_and_server(
    module_database_url: str, server_data_dir: Path
) -> Iterator[tuple[Inbox, str, Path]]:
    inbox = Inbox()
    smtp_port = free_port()
    controller = smtp_server(inbox, smtp_port)
    process, base_url = start_server(
        module_database_url,
        server_data_dir,
        workers=2,
        AUTHLEDGER_SMTP_HOST="127.0.0.1",
        AUTHLEDGER_SMTP_PORT=str(smtp_port),
        AUTHLEDGER_SMTP_TLS="none",
    )
    log = server_data_dir / f"server-{base_url.rsplit(':', 1)[1]}.log"
    yield inbox, base_url, log
    stop_server(process)
    controller.stop()


def lines_of(log: Path) -> list[dict[str, Any]]:
    """Every line of the log, each parsed as the JSON object it must be."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class Session:
    """A client that keeps every secret it is sent or sends."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.secrets: set[str] = set()
        self.codes: set[str] = set()

    def post(self, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        answer = self.http.post(path, **kwargs)
        assert answer.status_code == expect, (path, answer.text)
        body: dict[str, Any] = answer.json() if answer.content else {}
        for name in ("access_token", "refresh_token", "mfa_token", "secret"):
            if isinstance(body.get(name), str):
                self.secrets.add(body[name])
        self.secrets.update(body.get("recovery_codes", []))
        return body

    def sent(self, *secrets: str) -> None:
        self.secrets.update(secrets)


def full_session(base_url: str, inbox: Inbox) -> tuple[Session, str]:
    """Every credential the API takes, each used once or more, some wrongly."""
    s = Session(base_url)
    email, new_password, wrong = new_email(), "a brand new passphrase", "not it at all"
    s.sent(PASSWORD, new_password, wrong, email)
    account = {"email": email, "password": PASSWORD}
    first = s.post("/api/auth/signup", 201, json=account)
    s.post("/api/auth/login", 401, json={"email": email, "password": wrong})
    s.post("/api/auth/signup", 422, json={"email": "not an address", "password": wrong})
    second = s.post("/api/auth/login", 200, json=account)
    assert s.http.get("/api/auth/me", headers=bearer(second)).status_code == 200
    s.post("/api/auth/refresh", 200, json={"refresh_token": second["refresh_token"]})
    s.post("/api/auth/refresh", 401, json={"refresh_token": second["refresh_token"]})
    # Mailed links
    s.post("/api/auth/verify/request", 202, headers=bearer(first))
    (verify_mail,) = inbox.to(email)
    s.sent(token_in(verify_mail))
    s.post("/api/auth/verify", 200, json={"token": token_in(verify_mail)})
    s.post("/api/auth/password/forgot", 202, json={"email": email})
    reset_mail = eventually(lambda: inbox.to(email), lambda mails: len(mails) == 2)[1]
    s.sent(token_in(reset_mail))
    reset = {"token": token_in(reset_mail), "new_password": new_password}
    s.post("/api/auth/password/reset", 200, json=reset)
    # A second factor
    account["password"] = new_password
    third = s.post("/api/auth/login", 200, json=account)
    enrolment = s.post(
        "/api/auth/mfa/totp",
        200,
        headers=bearer(third),
        json={"password": new_password},
    )
    app = AuthenticatorApp(enrolment["otpauth_uri"])
    code = app.code()
    s.codes.add(code)
    s.post(
        "/api/auth/mfa/totp/confirm", 200, headers=bearer(third), json={"code": code}
    )
    challenge = s.post("/api/auth/login", 403, json=account)
    code = app.code()
    s.codes.add(code)
    verified = {"mfa_token": challenge["mfa_token"], "code": code}
    fourth = s.post("/api/auth/mfa/verify", 200, json=verified)
    s.post("/api/auth/logout", 200, headers=bearer(fourth))
    s.http.close()
    return s, str(first["user"]["id"])


def test_no_log_line_of_a_full_session_holds_a_secret_or_an_email(
    inbox_and_server: tuple[Inbox, str, Path],
) -> None:
    inbox, base_url, log = inbox_and_server

    session, user_id = full_session(base_url, inbox)

    lines = eventually(
        lambda: lines_of(log),
        lambda lines: any(line.get("route") == "/api/auth/logout" for line in lines),
    )
    text = log.read_text()
    assert len(session.secrets) >= 15
    for secret in session.secrets:
        assert secret not in text
        assert secret.split("@")[0] not in text  # nor an address's local part
    for code in session.codes:
        assert not re.search(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])", text)
    # And the requests are there, by route and status, with their user
    answered = [(line["route"], line["status"]) for line in lines if "route" in line]
    assert ("/api/auth/refresh", 401) in answered
    assert ("/api/auth/mfa/verify", 200) in answered
    logins = [line for line in lines if line.get("route") == "/api/auth/login"]
    assert {line["user_id"] for line in logins if line["status"] == 200} == {user_id}


def test_a_plain_request_id_is_kept_and_any_other_replaced(
    inbox_and_server: tuple[Inbox, str, Path],
) -> None:
    _, base_url, log = inbox_and_server

    kept = httpx.get(f"{base_url}/healthz", headers={"X-Request-ID": "edge-7f3a.42"})
    odd = httpx.get(f"{base_url}/healthz", headers={"X-Request-ID": 'a b"c'})

    assert kept.headers["x-request-id"] == "edge-7f3a.42"
    made = odd.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    ids = eventually(
        lambda: {line.get("request_id") for line in lines_of(log)},
        lambda ids: made in ids,
    )
    assert {"edge-7f3a.42", made} <= ids
