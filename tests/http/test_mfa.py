"""MFA end to end on a real server, codes computed by pyotp as an
authenticator app would: enrol, confirm, the 403 `mfa_required` login step,
replay, recovery codes, regeneration, turning it off, an admin's reset; and
a dump of the database that holds neither the secret nor the codes."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest

from tests.dumps import leaks, pg_dump
from tests.http.helpers import PASSWORD, bearer, eventually, login, new_email, signup
from tests.http.test_admin_and_audit import ADMIN_PASSWORD, cli

pytestmark = [pytest.mark.http, pytest.mark.postgres]

STEP_S = 30


class AuthenticatorApp:
    """Gives a code of a time step not used yet, as the server's window
    allows (the step before, now, the step after)."""

    def __init__(self, otpauth_uri: str) -> None:
        parsed = pyotp.parse_uri(otpauth_uri)
        assert isinstance(parsed, pyotp.TOTP)
        self.totp = parsed
        self.last_step: int | None = None

    def code(self) -> str:
        while True:
            now_step = int(time.time()) // STEP_S
            step = now_step - 1 if self.last_step is None else self.last_step + 1
            step = max(step, now_step - 1)
            if step <= now_step + 1:
                self.last_step = step
                return str(self.totp.at(step * STEP_S))
            time.sleep(1)

    def replayed(self) -> str:
        """The code of the step used last."""
        assert self.last_step is not None
        return str(self.totp.at(self.last_step * STEP_S))


def enrol(
    client: httpx.Client, tokens: dict[str, Any]
) -> tuple[dict[str, Any], AuthenticatorApp, list[str]]:
    started = client.post(
        "/api/auth/mfa/totp", headers=bearer(tokens), json={"password": PASSWORD}
    )
    assert started.status_code == 200, started.text
    app = AuthenticatorApp(started.json()["otpauth_uri"])
    assert app.totp.secret == started.json()["secret"]
    confirmed = client.post(
        "/api/auth/mfa/totp/confirm", headers=bearer(tokens), json={"code": app.code()}
    )
    assert confirmed.status_code == 200, confirmed.text
    recovery: list[str] = confirmed.json()["recovery_codes"]
    return started.json(), app, recovery


def mfa_step(client: httpx.Client, email: str) -> dict[str, Any]:
    """The 403 of a login whose password was right."""
    response = login(client, email)
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    return body


def verify(client: httpx.Client, mfa_token: str, code: str) -> httpx.Response:
    return client.post(
        "/api/auth/mfa/verify", json={"mfa_token": mfa_token, "code": code}
    )


def test_a_login_with_mfa_on_needs_the_current_code_once(client: httpx.Client) -> None:
    # Given MFA enrolled and confirmed (a wrong code confirms nothing)
    email = new_email()
    tokens = signup(client, email)
    started = client.post(
        "/api/auth/mfa/totp", headers=bearer(tokens), json={"password": PASSWORD}
    ).json()
    app = AuthenticatorApp(started["otpauth_uri"])
    refused = client.post(
        "/api/auth/mfa/totp/confirm", headers=bearer(tokens), json={"code": "00000a"}
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_code")
    confirmed = client.post(
        "/api/auth/mfa/totp/confirm", headers=bearer(tokens), json={"code": app.code()}
    )
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(set(recovery)) == 10
    assert client.get("/api/auth/me", headers=bearer(tokens)).json()["mfa_enabled"]

    # When it logs out and in again: 403 mfa_required, as Auth0 answers
    client.post("/api/auth/logout", headers=bearer(tokens))
    challenge = mfa_step(client, email)
    assert challenge["code"] == "mfa_required"
    assert challenge["expires_in"] == 300
    assert set(challenge) == {"detail", "code", "mfa_token", "expires_in"}
    # And a wrong password is the same 401 as for any account
    wrong = login(client, email, "not the password")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")

    # Then the current code opens a session whose token says both factors
    code = app.code()
    opened = verify(client, challenge["mfa_token"], code)
    assert opened.status_code == 200, opened.text
    claims = jwt.decode(
        opened.json()["access_token"], options={"verify_signature": False}
    )
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp"], "aal2")
    sessions = client.get("/api/auth/sessions", headers=bearer(opened.json())).json()
    assert next(s for s in sessions if s["current"])["factors"] == ["pwd", "otp"]
    # And so do the tokens its refresh hands out
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": opened.json()["refresh_token"]}
    ).json()
    renewed = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
    assert (renewed["amr"], renewed["acr"]) == (["pwd", "otp"], "aal2")
    # And the token is spent
    assert verify(client, challenge["mfa_token"], app.code()).json()["code"] == (
        "invalid_mfa_token"
    )

    # When the same code is sent for another login: refused (replay)
    again = mfa_step(client, email)
    replay = verify(client, again["mfa_token"], code)
    assert (replay.status_code, replay.json()["code"]) == (401, "invalid_code")

    # A recovery code works once, and the session says so
    by_recovery = verify(client, again["mfa_token"], recovery[0])
    assert by_recovery.status_code == 200, by_recovery.text
    listed = client.get("/api/auth/sessions", headers=bearer(by_recovery.json())).json()
    assert next(s for s in listed if s["current"])["factors"] == [
        "pwd",
        "recovery_code",
    ]
    twice = verify(client, mfa_step(client, email)["mfa_token"], recovery[0])
    assert (twice.status_code, twice.json()["code"]) == (401, "invalid_code")


def test_racing_wrong_codes_get_no_more_guesses_than_the_tokens_limit(
    server: str,
) -> None:
    # Given a login waiting for its code
    with httpx.Client(base_url=server, timeout=30) as client:
        email = new_email()
        _, app, _ = enrol(client, signup(client, email))
        token = mfa_step(client, email)["mfa_token"]
        near = {str(app.totp.at(time.time() + k * STEP_S)) for k in (-1, 0, 1, 2)}
        guess = next(c for c in ("000000", "111111", "222222") if c not in near)

    # When 30 wrong codes race for it
    def attempt(_: int) -> str:
        with httpx.Client(base_url=server, timeout=30) as racer:
            response = racer.post(
                "/api/auth/mfa/verify", json={"mfa_token": token, "code": guess}
            )
            return str(response.json()["code"])

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(attempt, range(30)))

    # Then exactly five were checked; the rest found the token dead (or the
    # client throttled)
    assert answers.count("invalid_code") == 5, answers
    assert set(answers) <= {"invalid_code", "invalid_mfa_token", "too_many_attempts"}


def test_new_recovery_codes_kill_the_old_and_turning_mfa_off_needs_password_and_code(
    client: httpx.Client,
) -> None:
    email = new_email()
    tokens = signup(client, email)
    _, app, recovery = enrol(client, tokens)
    elsewhere = verify(client, mfa_step(client, email)["mfa_token"], app.code()).json()

    # Regeneration needs a TOTP code, and kills the old set
    wrong = client.post(
        "/api/auth/mfa/recovery-codes", headers=bearer(tokens), json={"code": "000000"}
    )
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_code")
    regenerated = client.post(
        "/api/auth/mfa/recovery-codes",
        headers=bearer(tokens),
        json={"code": app.code()},
    )
    assert regenerated.status_code == 200, regenerated.text
    new_codes = regenerated.json()["recovery_codes"]
    assert not set(new_codes) & set(recovery)
    challenge = mfa_step(client, email)["mfa_token"]
    assert verify(client, challenge, recovery[1]).status_code == 401
    assert verify(client, challenge, new_codes[0]).status_code == 200

    # Turning it off needs the password and a code; other sessions end
    for body in (
        {"password": "wrong password", "code": new_codes[1]},
        {"password": PASSWORD, "code": "000000"},
    ):
        denied = client.request(
            "DELETE", "/api/auth/mfa/totp", headers=bearer(tokens), json=body
        )
        assert denied.status_code == 400, denied.text
    turned_off = client.request(
        "DELETE",
        "/api/auth/mfa/totp",
        headers=bearer(tokens),
        json={"password": PASSWORD, "code": new_codes[1]},
    )
    assert turned_off.status_code == 200, turned_off.text
    assert client.get("/api/auth/me", headers=bearer(elsewhere)).status_code == 401
    assert client.get("/api/auth/me", headers=bearer(tokens)).status_code == 200
    assert login(client, email).status_code == 200


def test_an_admin_resets_a_users_mfa_and_sees_whether_it_is_on(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> None:
    admin_email = new_email()
    cli(module_database_url, server_data_dir, "users", "create-admin", admin_email)
    admin = login(client, admin_email, ADMIN_PASSWORD).json()
    email = new_email()
    tokens = signup(client, email)
    enrol(client, tokens)
    user_id = tokens["user"]["id"]
    shown = client.get(
        f"/api/admin/users?email_prefix={email}", headers=bearer(admin)
    ).json()
    assert [u["mfa_enabled"] for u in shown] == [True]

    reset = client.delete(f"/api/admin/users/{user_id}/mfa", headers=bearer(admin))
    assert reset.status_code == 200, reset.text

    assert login(client, email).status_code == 200
    shown = client.get(
        f"/api/admin/users?email_prefix={email}", headers=bearer(admin)
    ).json()
    assert [u["mfa_enabled"] for u in shown] == [False]
    history = eventually(  # a lagging read model
        lambda: client.get(
            f"/api/admin/users/{user_id}/history", headers=bearer(admin)
        ).json(),
        lambda entries: "mfa_reset" in {e["event"] for e in entries},
    )
    reset_entry = next(e for e in history if e["event"] == "mfa_reset")
    assert admin["user"]["id"] in reset_entry["detail"]
    assert reset_entry["ip"]
    events = [e["event"] for e in history]
    assert {"mfa_enrolment_started", "mfa_enabled", "mfa_reset"} <= set(events)
    again = client.delete(f"/api/admin/users/{user_id}/mfa", headers=bearer(admin))
    assert again.status_code == 409
    user = client.delete(f"/api/admin/users/{user_id}/mfa", headers=bearer(tokens))
    assert user.status_code == 403


def test_the_database_holds_neither_the_totp_secret_nor_the_recovery_codes(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> None:
    email = new_email()
    tokens = signup(client, email)
    started, app, recovery = enrol(client, tokens)
    challenge = mfa_step(client, email)
    verify(client, challenge["mfa_token"], app.code())
    regenerated = client.post(
        "/api/auth/mfa/recovery-codes",
        headers=bearer(tokens),
        json={"code": app.code()},
    )
    assert regenerated.status_code == 200, regenerated.text

    secret = started["secret"]
    raw = base64.b32decode(secret)
    codes = recovery + regenerated.json()["recovery_codes"]
    dump = pg_dump(module_database_url)
    # The dump shows what is kept in clear: the read models' rows, and the
    # stored events of this very account (their types are not sealed)
    assert email in dump
    assert "User.MfaEnabled" in dump
    assert "User.RecoveryCodesRegenerated" in dump
    typed_forms = [c.replace("-", "") for c in codes]
    assert leaks(dump, [secret, secret.lower(), raw, *codes, *typed_forms]) == []
    assert challenge["mfa_token"] not in dump
    # Nor do the audit's commands, nor the server's log
    user_id = tokens["user"]["id"]
    for command in (
        ("audit", "export"),
        ("audit", "history", user_id, "--json"),
        ("audit", "history", user_id, "--json", "--replay"),
    ):
        shown = cli(module_database_url, server_data_dir, *command).stdout
        assert "MfaEnabled" in shown or '"mfa_enabled"' in shown  # it shows MFA
        assert [c for c in (secret, *codes) if c in shown] == [], command
    logs = "".join(p.read_text() for p in server_data_dir.glob("server-*.log"))
    assert "/api/auth/mfa/verify" in logs
    assert [c for c in (secret, *codes, challenge["mfa_token"]) if c in logs] == []
