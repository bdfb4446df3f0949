"""payment_svc's rules without a database: which decline, in which order."""
from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from payment_svc.domain import Account, InsufficientFunds, LimitExceeded, SetAccount, UnknownCustomer, authorize

pytestmark = pytest.mark.unit

LIMIT = Decimal("100.00")


def account(balance: str, currency: str = "EUR") -> Account:
    return Account("alice", Decimal(balance), currency)


def test_a_charge_returns_the_new_balance_to_the_cent():
    assert authorize(account("50.00"), "alice", Decimal("33.33"), "EUR", LIMIT) == Decimal("16.67")


def test_the_whole_balance_and_the_whole_limit_may_be_used():
    assert authorize(account("100.00"), "alice", Decimal("100.00"), "EUR", LIMIT) == Decimal("0.00")


@pytest.mark.parametrize(
    ("the_account", "amount", "currency", "decline"),
    [
        (None, "1.00", "EUR", UnknownCustomer),
        (None, "1000.00", "USD", UnknownCustomer),  # unknown first
        (account("5000.00"), "100.01", "EUR", LimitExceeded),
        (account("0.00"), "100.01", "EUR", LimitExceeded),  # limit before funds
        (account("10.00"), "10.01", "EUR", InsufficientFunds),
        (account("1000.00", "EUR"), "10.00", "USD", InsufficientFunds),  # no USD held
    ],
)
def test_declines_in_rule_order(the_account, amount, currency, decline):
    with pytest.raises(decline) as caught:
        authorize(the_account, "alice", Decimal(amount), currency, LIMIT)
    assert caught.value.reason == {
        UnknownCustomer: "unknown_customer", LimitExceeded: "limit_exceeded", InsufficientFunds: "insufficient_funds"
    }[decline]


def test_a_currency_mismatch_says_so():
    with pytest.raises(InsufficientFunds, match="holds EUR, not USD"):
        authorize(account("1000.00"), "alice", Decimal("1.00"), "USD", LIMIT)


def test_set_account_defaults_to_euro():
    assert SetAccount(balance="12.5") == SetAccount(balance=Decimal("12.50"), currency="EUR")


@pytest.mark.parametrize("body", [{"balance": "-1"}, {"balance": 1.5}, {"balance": "1.005"}, {"balance": "1", "currency": "eur"}, {}])
def test_set_account_refuses_bad_bodies(body):
    with pytest.raises(ValidationError):
        SetAccount.model_validate(body)
