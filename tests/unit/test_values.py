"""Unit tests for email normalisation and the EmailClaim aggregate."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.email_claim import EmailClaim
from domain.errors import InvalidEmailError
from domain.values import normalise_email
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
    ],
)
def test_claim_id_is_the_same_for_spellings_that_normalise_equally(
    first: str, second: str
) -> None:
    # Given
    normalised = (normalise_email(first), normalise_email(second))

    # When
    ids = {EmailClaim.create_id(email) for email in normalised}

    # Then
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@example.com", "bob@example.com"),
        ("alice@example.com", "alice@example.org"),
        ("alice@example.com", "Alice@example.com"),
    ],
)
def test_claim_id_differs_for_addresses_that_normalise_differently(
    first: str, second: str
) -> None:
    # Given
    normalised = (normalise_email(first), normalise_email(second))

    # When
    ids = {EmailClaim.create_id(email) for email in normalised}

    # Then
    assert len(ids) == 2


def test_claiming_an_email_records_the_claiming_user() -> None:
    # Given
    user_id = uuid4()
    now = T0 + timedelta(minutes=3)

    # When
    claim = EmailClaim.claim("alice@example.com", user_id, now)

    # Then
    claimed = only(claim.collect_events(), EmailClaim.Claimed)
    assert claimed.email == "alice@example.com"
    assert claimed.user_id == user_id
    assert claimed.originator_id == EmailClaim.create_id("alice@example.com")
    assert claimed.timestamp == now
