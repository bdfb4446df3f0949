"""Payment rules. Pure decide functions: each takes the order's payment (None: none yet) and
what happened, and returns the payment after the fact and the event to emit (`Outcome`); none
touches a database and no business outcome is an exception.

One payment row per order records every decision payment_svc made for it, and is what a
redelivered event of any age is checked against (docs/contract/invariants.md, I8):

    (none) ──INVENTORY_RESERVED, authorized──▶ CAPTURED ──ORDER_CONFIRMATION_FAILED──▶ REFUNDED
       │   └──INVENTORY_RESERVED, declined───▶ DECLINED (the decline's reason)
       └──ORDER_CONFIRMATION_FAILED──▶ VOIDED ──INVENTORY_RESERVED──▶ DECLINED (the void's reason)

A void is the order given up (cancelled by the customer, or past its deadline) before payment_svc
charged it: the reservation that comes later is declined with the void's reason, so the stock goes
back (docs/contract/flows.md, Cancellation and the deadline). Whichever of the two events arrives
first, the outcome is the same money: nothing held. Every other event meeting a row is a fact
already decided (a redelivery, or an order given up after its charge was declined) and changes
nothing. The handlers decide under one lock per order (the saga lock of shared/uow.py), so a
charge and a void of one order never interleave.

A charge is checked in this order, the first failing rule naming the decline (`authorize`
returns a `Decline` with that reason; no business outcome is an exception):
  1. the customer has an account            else unknown_customer
  2. amount <= the per-order limit          else limit_exceeded
  3. the account holds the order's currency else insufficient_funds
  4. balance >= amount                      else insufficient_funds

An account holds one currency and there is no conversion: a customer with a EUR
account has no USD to pay with, which is what `insufficient_funds` says (the decline's
message names the currency mismatch). The per-order limit is a plain number applied in
the order's own currency.

Money (I3): a payment holds its amount while CAPTURED and nothing in any other status; an
account's balance moves by exactly what its payments' holdings move (`Payment.held`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.errors import DomainError
from shared.events import (
    ConfirmationFailureReason,
    InventoryReserved,
    PaymentCompleted,
    PaymentDeclineReason,
    PaymentFailed,
    PaymentFailureReason,
    PaymentRefunded,
    utc_now,
)
from shared.money import Currency, Money


class PaymentStatus(StrEnum):
    """A payments row's status (the state diagram at the top of this module)."""

    CAPTURED = "CAPTURED"
    REFUNDED = "REFUNDED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"


@dataclass(frozen=True)
class Decline:
    """A refused charge: `reason` is the PAYMENT_FAILED reason, `detail` says why, for people."""

    reason: PaymentDeclineReason
    detail: str


class UnknownCustomer(DomainError):
    """Money was to be credited to a customer without an account (payment_svc/repository.py):
    never a decision of the rules, which decline a charge for such a customer (`authorize`), but
    a record that refers to an account that no longer exists. The record is a dead letter."""

    reason = "unknown_customer"


@dataclass(frozen=True)
class Account:
    """A customer's account as the rules see it: `balance` in `currency` (ISO 4217)."""

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
) -> Decimal | Decline:
    """The balance after charging `amount` `currency` to `account` (None: the customer has no
    account), or the Decline of the first rule that fails (see the module doc). `amount` and
    `per_order_limit` are in the order's currency, to the cent. Raises nothing."""
    if account is None:
        return Decline("unknown_customer", f"customer {customer_id} has no account")
    if amount > per_order_limit:
        return Decline("limit_exceeded", f"{amount} {currency} is above the per-order limit of {per_order_limit}")
    if currency != account.currency:
        return Decline("insufficient_funds", f"the account of {customer_id} holds {account.currency}, not {currency}")
    if account.balance < amount:
        return Decline("insufficient_funds", f"balance {account.balance} {currency} is below {amount}")
    return account.balance - amount


@dataclass(frozen=True)
class Payment:
    """What payment_svc decided for one order (its payments row, read under the order's lock).
    A void recorded before the reservation knows no customer, amount or currency yet."""

    order_id: UUID
    payment_id: UUID
    status: PaymentStatus
    customer_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    reason: PaymentFailureReason | None = None
    """Why it was DECLINED or VOIDED."""
    detail: str | None = None
    """The decline's message, for people."""

    @property
    def held(self) -> Decimal:
        """The money this payment holds from its customer: the amount while CAPTURED, else 0."""
        return self.amount if self.status == PaymentStatus.CAPTURED and self.amount is not None else Decimal(0)


Outcome = tuple[Payment | None, PaymentCompleted | PaymentFailed | PaymentRefunded | None]
"""The order's payment after the fact (None: still none), and the event to emit (if any)."""


def on_inventory_reserved(
    payment: Payment | None, account: Account | None, reserved: InventoryReserved, per_order_limit: Decimal,
    payment_id: UUID,
) -> Outcome:
    """Charge a reserved order once. No payment yet: `authorize` against `account` (the
    reservation's customer's, None if unknown) — CAPTURED and PAYMENT_COMPLETED, or DECLINED
    and PAYMENT_FAILED with the decline's reason; the new row gets `payment_id`. VOIDED (the
    order was given up first): DECLINED and PAYMENT_FAILED with the void's reason, nothing
    charged. Anything else was decided before: no change."""
    charge = dict(customer_id=reserved.customer_id, amount=reserved.amount, currency=reserved.currency)
    if payment is not None:
        if payment.status != PaymentStatus.VOIDED:
            return payment, None
        declined = replace(payment, status=PaymentStatus.DECLINED, **charge,
                           detail=f"the order was given up before it was charged ({payment.reason})")
        return declined, _failed(reserved, payment.reason)
    decision = authorize(account, reserved.customer_id, reserved.amount, reserved.currency, per_order_limit)
    if isinstance(decision, Decline):
        declined = Payment(reserved.order_id, payment_id, PaymentStatus.DECLINED, **charge, reason=decision.reason,
                           detail=decision.detail)
        return declined, _failed(reserved, decision.reason)
    captured = Payment(reserved.order_id, payment_id, PaymentStatus.CAPTURED, **charge)
    return captured, PaymentCompleted(order_id=reserved.order_id, occurred_at=utc_now(), payment_id=payment_id,
                                      amount=reserved.amount, currency=reserved.currency)


def on_order_given_up(
    payment: Payment | None, order_id: UUID, reason: ConfirmationFailureReason, payment_id: UUID
) -> Outcome:
    """ORDER_CONFIRMATION_FAILED: the order will not be confirmed. CAPTURED: refund in full
    (REFUNDED, PAYMENT_REFUNDED; C3). No payment yet: record a void (VOIDED with `reason`, a
    new row with `payment_id`), emitting nothing — the reservation, when it comes, is declined.
    DECLINED, REFUNDED, VOIDED: nothing is held, nothing to do."""
    if payment is None:
        return Payment(order_id, payment_id, PaymentStatus.VOIDED, reason=reason), None
    if payment.status != PaymentStatus.CAPTURED:
        return payment, None
    refunded = replace(payment, status=PaymentStatus.REFUNDED)
    return refunded, PaymentRefunded(order_id=order_id, occurred_at=utc_now(), payment_id=payment.payment_id,
                                     amount=payment.amount, currency=payment.currency)


def _failed(reserved: InventoryReserved, reason: PaymentFailureReason) -> PaymentFailed:
    return PaymentFailed(order_id=reserved.order_id, occurred_at=utc_now(), reason=reason)
