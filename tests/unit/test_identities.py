"""One mailbox, one account: addresses are matched folded, and kept as typed.

The attacks: sign up `Ada@`, `ADA@` and a full-width twin as three accounts
of one mailbox, or a look-alike with a Cyrillic letter; and, for accounts
stored before addresses were folded, lock their owners out or add a twin.
"""

from __future__ import annotations

from uuid import UUID

import pytest

from application.auth import AuthApplication
from application.errors import EmailAlreadyRegisteredError, InvalidCredentialsError
from application.upgrades import fold_email_claims, key_email_claims
from domain.email_claim import EmailClaim
from domain.errors import MixedScriptEmailError
from domain.upgrade import Upgrade
from domain.user import User
from domain.values import Role
from tests.unit.helpers import T0
from tests.unit.test_use_cases import (
    CLIENT,
    PASSWORD,
    PASSWORDS,
    FakeClock,
    facts_since,
    names,
    new_app,
    position,
)


@pytest.fixture
def app() -> AuthApplication:
    return new_app(FakeClock())


@pytest.mark.parametrize(
    "twin", ["Ada@example.com", "ADA@EXAMPLE.COM", "\uff41\uff44\uff41@example.com"]
)
def test_an_address_in_another_case_or_width_is_the_same_account(
    app: AuthApplication, twin: str
) -> None:
    # Given an account for ada@example.com
    first = app.register("ada@example.com", PASSWORD, CLIENT)
    before = position(app)

    # When its twin signs up, it is refused and nothing is stored
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register(twin, PASSWORD, CLIENT)
    assert facts_since(app, before) == []

    # And the twin logs in to the one account
    assert app.login(twin, PASSWORD, CLIENT).user_id == first.user_id


def test_the_address_is_shown_as_typed(app: AuthApplication) -> None:
    grant = app.register("Ada.Lovelace@Example.com", PASSWORD, CLIENT)

    assert grant.user.email == "Ada.Lovelace@example.com"
    assert app.login("ada.lovelace@example.com", PASSWORD, CLIENT).user.email == (
        "Ada.Lovelace@example.com"
    )


def test_a_look_alike_address_mixing_scripts_is_refused(app: AuthApplication) -> None:
    before = position(app)

    with pytest.raises(MixedScriptEmailError):
        app.register("\u0430da@example.com", PASSWORD, CLIENT)  # Cyrillic a

    assert facts_since(app, before) == []


def legacy_account(app: AuthApplication, email: str) -> UUID:
    """An account as stored before addresses were folded: claimed as typed."""
    user = User.register(email, PASSWORDS.hash(PASSWORD), Role.USER, T0)
    claim = EmailClaim._create(  # the old claim, by its old id
        EmailClaim.Claimed,
        id=EmailClaim.legacy_id(email),
        timestamp=T0,
        email=email,
        user_id=user.id,
    )
    app.save(user, claim)
    return user.id


def test_accounts_differing_only_by_case_keep_working_and_get_no_new_twin(
    app: AuthApplication,
) -> None:
    # Given two accounts stored before folding, for one mailbox in two cases
    older = legacy_account(app, "Ada@example.com")
    newer = legacy_account(app, "ADA@example.com")
    before = position(app)

    # When the upgrades run (every start runs them; each acts once)
    assert fold_email_claims(app) == 1
    assert fold_email_claims(app) == 0
    folded_at = position(app)
    assert key_email_claims(app) == 3
    assert key_email_claims(app) == 0

    # Then the folded form is claimed once, for the older account
    assert names(facts_since(app, before))[:2] == [
        "EmailClaim.Claimed",
        "Upgrade.Applied",
    ]
    folded: EmailClaim = app.repository.get(EmailClaim.legacy_id("ada@example.com"))
    assert folded.user_id == older
    upgrade: Upgrade = app.repository.get(Upgrade.create_id("fold-email-claims"))
    assert upgrade.changed == 1
    # And every claim, both spellings and the folded form, is named the keyed way
    keyed = [
        e for e in facts_since(app, folded_at) if isinstance(e, EmailClaim.Claimed)
    ]
    assert [(e.originator_id, e.user_id) for e in keyed] == [
        (app.claim_id("Ada@example.com"), older),
        (app.claim_id("ADA@example.com"), newer),
        (app.claim_id("ada@example.com"), older),
    ]
    # Each address as registered reaches its own account; any other spelling, the older
    assert app.login("Ada@example.com", PASSWORD, CLIENT).user_id == older
    assert app.login("ADA@example.com", PASSWORD, CLIENT).user_id == newer
    assert app.login("ada@example.com", PASSWORD, CLIENT).user_id == older
    assert app.login("aDa@EXAMPLE.com", PASSWORD, CLIENT).user_id == older
    # And no third account of the mailbox can be made
    with pytest.raises(EmailAlreadyRegisteredError):
        app.register("adA@example.com", PASSWORD, CLIENT)


def test_an_account_registered_in_folded_form_keeps_it(app: AuthApplication) -> None:
    # Given an older account in capitals and a newer one already lower-case
    legacy_account(app, "Ada@example.com")
    lower = legacy_account(app, "ada@example.com")

    # When the upgrades run, folding has nothing to claim
    assert fold_email_claims(app) == 0
    assert key_email_claims(app) == 2

    # Then other spellings reach the lower-case account, whose claim it already was
    assert app.login("ADA@example.com", PASSWORD, CLIENT).user_id == lower


def test_a_login_with_a_mixed_script_address_is_the_generic_refusal(
    app: AuthApplication,
) -> None:
    app.register("ada@example.com", PASSWORD, CLIENT)

    with pytest.raises(InvalidCredentialsError):
        app.login("\u0430da@example.com", PASSWORD, CLIENT)
