"""Passwords an attacker tries first are refused; one password has one form.

The attack: sign up, change or reset to `password`, `12345678`, eight spaces
or the email itself (each got 201), then guess it from a top-passwords list.
"""

from __future__ import annotations

import threading
import time
import unicodedata

import bcrypt
import pytest

from application.account_mail import RESET, AccountMail
from application.auth import AuthApplication
from application.errors import HashingBusyError, WeakPasswordError
from domain.user import User
from infrastructure.password_screen import ZxcvbnScreen
from tests.unit.test_use_cases import (
    CLIENT,
    EMAIL,
    MAIL_TOKENS,
    PASSWORD,
    PASSWORDS,
    SCREEN,
    FakeClock,
    facts_since,
    forgot,
    mailed_token,
    new_app,
    position,
)

COMMON = ["password", "12345678", "qwertyui", "11111111", "password1", " " * 8]
MADE_OF_THE_ADDRESS = [EMAIL, "ada@example", "adaexample", "Ada12345"]


@pytest.fixture
def app() -> AuthApplication:
    return new_app(FakeClock())


@pytest.mark.parametrize("weak", COMMON + MADE_OF_THE_ADDRESS)
def test_a_common_or_context_password_is_refused_at_signup(
    app: AuthApplication, weak: str
) -> None:
    before = position(app)

    with pytest.raises(WeakPasswordError) as refused:
        app.register(EMAIL, weak, CLIENT)

    assert refused.value.reason  # says why, in words
    assert facts_since(app, before) == []


def test_the_reason_names_the_address_when_the_password_is_made_of_it() -> None:
    assert SCREEN.weakness("Lovelace1842", "Ada.Lovelace@example.com") == (
        "It is made from the email address."
    )
    for made in ("AdaLovelace1", "adalovelace2024", "lovelace.ada1", "Ada_Lovelace1"):
        assert SCREEN.weakness(made, "Ada.Lovelace@example.com") == (
            "It is made from the email address."
        ), made
    assert SCREEN.weakness("Lovelace1842", "grace@example.com") is None
    # A few of its letters among many other characters are not the address
    assert SCREEN.weakness("mple 8#4!9%2&7(0)3", "ada@example.com") is None
    assert SCREEN.weakness(" " * 8, EMAIL) == 'Repeats like "aaa" are easy to guess.'


def test_a_full_width_common_password_is_as_common(app: AuthApplication) -> None:
    with pytest.raises(WeakPasswordError):
        app.register(EMAIL, "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", CLIENT)


def test_a_weak_new_password_is_refused_at_a_change(app: AuthApplication) -> None:
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id
    before = position(app)

    with pytest.raises(WeakPasswordError):
        app.change_password(user_id, PASSWORD, "password1", CLIENT)

    assert facts_since(app, before) == []
    assert app.login(EMAIL, PASSWORD, CLIENT).user_id == user_id


def test_a_weak_new_password_is_refused_at_a_reset_and_the_link_still_works(
    app: AuthApplication,
) -> None:
    mail = AccountMail(app, MAIL_TOKENS)
    user_id = app.register(EMAIL, PASSWORD, CLIENT).user_id
    forgot(mail, EMAIL, CLIENT)
    token = mailed_token(app, user_id, RESET)
    before = position(app)

    with pytest.raises(WeakPasswordError):
        mail.reset_password(token, EMAIL, CLIENT)
    assert [e for e in facts_since(app, before) if isinstance(e, User.Event)] == []

    mail.reset_password(token, "a brand new passphrase", CLIENT)
    assert app.login(EMAIL, "a brand new passphrase", CLIENT).user_id == user_id


COMPOSED = unicodedata.normalize("NFC", "Gr\u00fc\u00dfe aus K\u00f6ln, 1842")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def test_a_password_typed_decomposed_matches_the_one_typed_composed(
    app: AuthApplication,
) -> None:
    assert COMPOSED != DECOMPOSED
    user_id = app.register(EMAIL, COMPOSED, CLIENT).user_id

    assert app.login(EMAIL, DECOMPOSED, CLIENT).user_id == user_id


def test_a_hash_made_before_normalising_still_verifies_its_password() -> None:
    # Given a hash stored before passwords were normalised: of the form typed
    prehashed = PASSWORDS._prehash(DECOMPOSED)  # the old recipe
    old_hash = bcrypt.hashpw(prehashed, bcrypt.gensalt(rounds=4)).decode()

    # Then the same typing still logs in, and a wrong password still fails
    assert PASSWORDS.verify(DECOMPOSED, old_hash)
    assert not PASSWORDS.verify("another password entirely", old_hash)


def test_a_guess_costs_as_many_bcrypt_runs_whatever_the_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a hash made before normalising, one made now, and the dummy's
    old_hash = bcrypt.hashpw(
        PASSWORDS._prehash(DECOMPOSED), bcrypt.gensalt(rounds=4)
    ).decode()
    runs: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        runs.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    guess = DECOMPOSED + "x"  # a wrong guess that NFKC changes

    # When it is checked against each
    counts = []
    for check in (
        lambda: PASSWORDS.verify(guess, old_hash),
        lambda: PASSWORDS.verify(guess, PASSWORDS.hash(COMPOSED)),
        lambda: PASSWORDS.verify_dummy(guess),
    ):
        runs.clear()
        check()
        counts.append(len(runs))

    # Then each costs the same two runs: timing cannot tell old accounts apart
    assert counts == [2, 2, 2]


def test_screening_past_its_bound_is_refused_at_once_as_busy() -> None:
    # Given a screen for one core, its one run and its eight waiting places taken
    screen = ZxcvbnScreen(concurrency=1)
    pool = screen._pool  # held by hand: zxcvbn is too quick to be caught running
    release = threading.Event()
    holder = threading.Thread(target=pool.run, args=(release.wait,))
    holder.start()
    waiting = [
        threading.Thread(target=screen.weakness, args=(PASSWORD, EMAIL))
        for _ in range(8)
    ]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 5
    while pool._admitted < 9 and time.monotonic() < deadline:
        time.sleep(0.001)

    # Then one more is refused at once, not queued
    try:
        with pytest.raises(HashingBusyError):
            screen.weakness(PASSWORD, EMAIL)
    finally:
        release.set()
        for thread in [holder, *waiting]:
            thread.join()
