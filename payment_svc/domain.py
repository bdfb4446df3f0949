"""Payment rules. Pure functions.

A charge is checked in this order, the first failing rule naming the decline:
  1. the customer has an account            else UnknownCustomer   (unknown_customer)
  2. amount <= the per-order limit          else LimitExceeded     (limit_exceeded)
  3. the account holds the order's currency else InsufficientFunds (insufficient_funds)
  4. balance >= amount                      else InsufficientFunds (insufficient_funds)

An account holds one currency and there is no conversion: a customer with a EUR
account has no USD to pay with, which is what `insufficient_funds` says (the decline's
message names the currency mismatch). The per-order limit is a plain number applied in
the order's own currency.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.errors import DomainError
from shared.money import Currency, Money


class PaymentStatus(StrEnum):
    CAPTURED = "CAPTURED"
    REFUNDED = "REFUNDED"
    DECLINED = "DECLINED"


class PaymentDeclined(DomainError):
    """The charge was refused; `reason` is the PAYMENT_FAILED reason."""


class UnknownCustomer(PaymentDeclined):
    reason = "unknown_customer"


class LimitExceeded(PaymentDeclined):
    reason = "limit_exceeded"


class InsufficientFunds(PaymentDeclined):
    reason = "insufficient_funds"


@dataclass(frozen=True)
class Account:
    customer_id: str
    balance: Decimal
    currency: str


class SetAccount(BaseModel):
    """The body of PUT /accounts/{customer}: the account's balance (a seed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    balance: Money
    currency: Currency = "EUR"


def authorize(
    account: Account | None, customer_id: str, amount: Decimal, currency: str, per_order_limit: Decimal
) -> Decimal:
    """The balance after charging `amount` `currency` to `account`, or the
    PaymentDeclined subclass of the first rule that fails (see the module doc)."""
    if account is None:
        raise UnknownCustomer(f"customer {customer_id} has no account")
    if amount > per_order_limit:
        raise LimitExceeded(f"{amount} {currency} is above the per-order limit of {per_order_limit}")
    if currency != account.currency:
        raise InsufficientFunds(f"the account of {customer_id} holds {account.currency}, not {currency}")
    if account.balance < amount:
        raise InsufficientFunds(f"balance {account.balance} {currency} is below {amount}")
    return account.balance - amount
