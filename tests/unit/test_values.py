"""Unit tests for email normalisation and the EmailClaim aggregate."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.email_claim import EmailClaim
from domain.errors import InvalidEmailError, MixedScriptEmailError
from domain.values import email_identity, normalise_email
from tests.unit.helpers import T0, only


def test_normalise_email_trims_surrounding_whitespace() -> None:
    # Given
    raw = " \t alice@example.com \n"

    # When
    email = normalise_email(raw)

    # Then
    assert email == "alice@example.com"


def test_normalise_email_lower_cases_the_domain_but_not_the_local_part() -> None:
    # Given
    raw = "Alice.Smith@Example.COM"

    # When
    email = normalise_email(raw)

    # Then
    assert email == "Alice.Smith@example.com"


def test_normalise_email_composes_decomposed_characters_to_nfc() -> None:
    # Given: "José" and "exámple" spelt with combining acute accents
    raw = "Jose\u0301@Exa\u0301mple.com"

    # When
    email = normalise_email(raw)

    # Then
    assert email == "Jos\u00e9@ex\u00e1mple.com"


def test_normalise_email_splits_at_the_last_at_sign() -> None:
    # Given
    raw = '"a@b"@Example.com'

    # When
    email = normalise_email(raw)

    # Then
    assert email == '"a@b"@example.com'


@pytest.mark.parametrize(
    "raw",
    ["alice.example.com", "", "   ", "@example.com", "alice@", " @ ", "@"],
)
def test_normalise_email_rejects_text_without_an_at_sign_or_with_an_empty_part(
    raw: str,
) -> None:
    # Given: the parametrised raw text

    # When / Then
    with pytest.raises(InvalidEmailError):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@Example.COM", " alice@example.com "),
        ("Jose\u0301@example.com", "Jos\u00e9@EXAMPLE.com"),
        ("Alice@example.com", "ALICE@EXAMPLE.COM"),  # a phone capitalised it
        (
            "\uff41\uff4c\uff49\uff43\uff45@example.com",
            "alice@example.com",
        ),  # full-width
        ("Stra\u00dfe@example.com", "strasse@example.com"),  # case-folded, not lowered
    ],
)
def test_addresses_that_fold_equally_are_claimed_by_one_id(
    first: str, second: str
) -> None:
    # When
    ids = {EmailClaim.create_id(email_identity(email)) for email in (first, second)}

    # Then
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@example.com", "bob@example.com"),
        ("alice@example.com", "alice@example.org"),
    ],
)
def test_claim_id_differs_for_addresses_that_fold_differently(
    first: str, second: str
) -> None:
    # When
    ids = {EmailClaim.create_id(email_identity(email)) for email in (first, second)}

    # Then
    assert len(ids) == 2


@pytest.mark.parametrize(
    "email",
    [
        "\u0430da@example.com",  # a Cyrillic a before Latin letters
        "ivan.\u0438\u0432\u0430\u043d@example.com",  # Latin and Cyrillic words
        "a\u03b2@example.com",  # Latin and Greek
        "\u0438\u0432\u0430\u043d\u5c71\u7530@example.com",  # Cyrillic and Han
    ],
)
def test_a_local_part_that_mixes_scripts_is_refused(email: str) -> None:
    with pytest.raises(MixedScriptEmailError):
        email_identity(email)


@pytest.mark.parametrize(
    "email",
    [
        "\u0438\u0432\u0430\u043d@example.ru",  # all Cyrillic
        "\u5c71\u7530\u305f\u308d\u3046@example.jp",  # Han and Hiragana: Japanese
        "yamada\u592a\u90ce@example.jp",  # Latin with Han
        "\ud64d\uae38\ub3d9.2024@example.kr",  # Hangul with digits and a dot
        "first.last+tag_1@example.com",
    ],
)
def test_a_local_part_in_one_writing_system_is_accepted(email: str) -> None:
    assert email_identity(email) == normalise_email(email).casefold()


def test_claiming_an_email_records_the_claiming_user_under_the_id_given() -> None:
    # Given
    user_id, claim_id = uuid4(), uuid4()
    now = T0 + timedelta(minutes=3)

    # When
    claim = EmailClaim.claim(claim_id, "alice@example.com", user_id, now)

    # Then
    claimed = only(claim.collect_events(), EmailClaim.Claimed)
    assert claimed.email == "alice@example.com"
    assert claimed.user_id == user_id
    assert claimed.originator_id == claim_id
    assert claimed.timestamp == now


def test_a_claim_keeps_the_address_as_typed() -> None:
    claim = EmailClaim.claim(uuid4(), "Alice@Example.com", uuid4(), T0)

    claimed = only(claim.collect_events(), EmailClaim.Claimed)
    assert claimed.email == "Alice@example.com"
    assert EmailClaim.forms_of("Alice@Example.com") == [
        "Alice@example.com",
        "alice@example.com",
    ]
