"""Money: exact two-place decimals and active ISO-4217 currencies."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.money import ACTIVE_CURRENCIES, Amount, Currency, Money, format_money, parse_money

pytestmark = pytest.mark.unit

MONEY = TypeAdapter(Money)
AMOUNT = TypeAdapter(Amount)
CURRENCY = TypeAdapter(Currency)


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [("40", "40.00"), ("40.5", "40.50"), ("40.50", "40.50"), ("0.01", "0.01"), (40, "40.00"),
     (Decimal("1.2"), "1.20"), (Decimal("7.000"), "7.00"), ("9999999999.99", "9999999999.99")],
)
def test_accepted_forms_become_exact_cents(given_value, expected):
    amount = parse_money(given_value)
    assert amount == Decimal(expected)
    assert amount.as_tuple().exponent == -2
    assert format_money(amount) == expected


@pytest.mark.parametrize(
    "bad", [40.0, 0.1, True, None, "1.001", Decimal("1.001"), Decimal("NaN"), Decimal("Infinity"), "-1", "+1",
            "1e2", "1.", ".5", " 1", "1 ", "1,00", "", "10000000000.00", -1]
)
def test_refused_forms(bad):
    with pytest.raises(ValueError):
        parse_money(bad)


def test_zero_is_money_but_not_an_amount():
    assert MONEY.validate_python("0") == Decimal("0.00")
    with pytest.raises(ValidationError):
        AMOUNT.validate_python("0.00")


def test_json_has_money_as_a_string_python_keeps_the_decimal():
    assert MONEY.dump_json(Decimal("3.10")) == b'"3.10"'
    assert MONEY.dump_python(Decimal("3.10")) == Decimal("3.10")


@given(st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False, allow_infinity=False))
def test_every_cent_value_survives_a_string_round_trip(value):
    assert parse_money(format_money(value)) == value


def test_sums_stay_exact():
    assert parse_money("0.10") + parse_money("0.20") == parse_money("0.30")


@pytest.mark.parametrize("code", ["EUR", "USD", "GBP", "JPY", "CHF", "XCG", "ZWG", "SLE", "VES"])
def test_active_currencies(code):
    assert CURRENCY.validate_python(code) == code


@pytest.mark.parametrize("code", ["eur", "Eur", "DEM", "HRK", "ANG", "CUC", "SLL", "ZWL", "XXX", "XTS", "XAU", "BOV", "EU", "", 978])
def test_not_active_currencies(code):
    with pytest.raises(ValidationError):
        CURRENCY.validate_python(code)


def test_the_list_is_plain_upper_case_codes():
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in ACTIVE_CURRENCIES)
    assert len(ACTIVE_CURRENCIES) > 150


@pytest.mark.parametrize("text", ["١٠.٥٠", "１０.００", "10.٥"])
def test_digits_of_other_scripts_are_not_money(text) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Amount).validate_python(text)
