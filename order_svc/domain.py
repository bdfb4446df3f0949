"""Order rules: what an order becomes when something happens to it. Pure functions.

Status (the public state) and what moves it:

    PENDING ──PAYMENT_COMPLETED, still wanted──────────────▶ CONFIRMED
       │  └───PAYMENT_COMPLETED, past its deadline──▶ CANCELLING (deadline_exceeded)
       ├──customer cancels──▶ CANCEL_REQUESTED ──PAYMENT_COMPLETED──▶ CANCELLING (cancelled_by_customer)
       ├──PAYMENT_FAILED──▶ CANCELLING (the payment's reason)
       └──INVENTORY_REJECTED──▶ CANCELLED (out_of_stock / unknown_sku)
    CANCELLING ──INVENTORY_RELEASED──▶ CANCELLED (the reason recorded before)

CANCEL_REQUESTED moves exactly like PENDING on every event but PAYMENT_COMPLETED.
Compensation is last-in, first-out: an order whose payment failed or could not be
confirmed is cancelled only once its stock is back (INVENTORY_RELEASED). Because
PAYMENT_FAILED and INVENTORY_RELEASED travel on different topics, either may arrive
first: the order is cancelled by whichever comes second. Events that do not apply to
an order's current state (a late or repeated fact) change nothing and emit nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import DomainError
from shared.events import (
    CancellationReason,
    CustomerId,
    InventoryRejectionReason,
    Items,
    OrderCancelled,
    OrderConfirmationFailed,
    OrderConfirmed,
    PaymentFailureReason,
    utc_now,
)
from shared.money import Amount, Currency

DEFAULT_DEADLINE_SECONDS = 30.0


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLING = "CANCELLING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


IN_FLIGHT = frozenset({OrderStatus.PENDING, OrderStatus.CANCEL_REQUESTED})
TERMINAL = frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED})


class OrderNotFound(DomainError):
    def __init__(self, order_id: UUID | str) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id


class OrderAlreadyFinal(DomainError):
    """A customer asked to cancel an order that is already CONFIRMED or CANCELLED."""

    def __init__(self, order_id: UUID, status: OrderStatus) -> None:
        super().__init__(f"order {order_id} is already {status}")
        self.order_id, self.status = order_id, status


class OrderIdTaken(DomainError):
    """A foreign ORDER_CREATED names an existing order's id with other content: not adopted."""

    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"order {order_id} already exists with other content; this ORDER_CREATED is not adopted")
        self.order_id = order_id


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key came back with a different order than the one it placed."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different order")
        self.key = key


MAX_IDEMPOTENCY_KEY_CHARS = 255

IdempotencyKey = Annotated[
    str, Field(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS, pattern=r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")
]
"""An Idempotency-Key header: 1-255 printable ASCII characters (letters, digits, punctuation,
spaces inside). Header values are ASCII; control characters, NUL and invalid UTF-8 are
refused; the length keeps the key well inside what the UNIQUE index of orders.idempotency_key
can hold (about 2.7 kB)."""


class PlaceOrder(BaseModel):
    """The command to place an order (the body of POST /orders)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: CustomerId
    items: Items
    amount: Amount
    currency: Currency

    def fingerprint(self) -> str:
        """Equal for the same order whatever the order of its items."""
        data = self.model_dump(mode="json")
        data["items"] = sorted(data["items"], key=lambda item: item["sku"])
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Order:
    """What the rules need to know about an order, read under its row lock."""

    order_id: UUID
    status: OrderStatus
    reason: CancellationReason | None = None
    cancel_requested: bool = False
    stock_released: bool = False
    past_deadline: bool = False


Outcome = tuple[Order, OrderConfirmed | OrderConfirmationFailed | OrderCancelled | None]
"""The order after the fact, and the event to emit (if any)."""


def request_cancel(order: Order) -> Order:
    """The customer asks to cancel. In flight: CANCEL_REQUESTED (decided when payment
    completes). Already being cancelled: only remembered. Final: OrderAlreadyFinal."""
    if order.status in TERMINAL:
        raise OrderAlreadyFinal(order.order_id, order.status)
    if order.status == OrderStatus.PENDING:
        return replace(order, status=OrderStatus.CANCEL_REQUESTED, cancel_requested=True)
    return replace(order, cancel_requested=True)


def on_inventory_rejected(order: Order, reason: InventoryRejectionReason) -> Outcome:
    """Nothing was reserved, nothing was charged: cancel now."""
    if order.status not in IN_FLIGHT:
        return order, None
    return _cancelled(order, reason)


def on_payment_completed(order: Order) -> Outcome:
    """Confirm, unless the customer asked to cancel or the deadline passed: then the
    payment must be refunded first (ORDER_CONFIRMATION_FAILED starts C3)."""
    if order.status not in IN_FLIGHT:
        return order, None
    if order.cancel_requested:
        reason = "cancelled_by_customer"
    elif order.past_deadline:
        reason = "deadline_exceeded"
    else:
        confirmed = replace(order, status=OrderStatus.CONFIRMED)
        return confirmed, OrderConfirmed(order_id=order.order_id, occurred_at=utc_now())
    failed = replace(order, status=OrderStatus.CANCELLING, reason=reason)
    return failed, OrderConfirmationFailed(order_id=order.order_id, occurred_at=utc_now(), reason=reason)


def on_payment_failed(order: Order, reason: PaymentFailureReason) -> Outcome:
    """Remember the root cause; cancel only once the stock is back."""
    if order.status not in IN_FLIGHT:
        return order, None
    if order.stock_released:
        return _cancelled(order, reason)
    return replace(order, status=OrderStatus.CANCELLING, reason=reason), None


def on_inventory_released(order: Order) -> Outcome:
    """The stock is back: cancel with the recorded root cause, or, if that cause has not
    arrived yet, remember the release until it does."""
    if order.status == OrderStatus.CANCELLING and order.reason is not None:
        return _cancelled(order, order.reason)
    if order.status in IN_FLIGHT:
        return replace(order, stock_released=True), None
    return order, None


def _cancelled(order: Order, reason: CancellationReason) -> Outcome:
    cancelled = replace(order, status=OrderStatus.CANCELLED, reason=reason)
    return cancelled, OrderCancelled(order_id=order.order_id, occurred_at=utc_now(), reason=reason)
