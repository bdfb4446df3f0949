"""Order rules: what an order becomes when something happens to it. Pure functions.

Status (the public state) and what moves it:

    PENDING ──PAYMENT_COMPLETED, within its deadline───────────────────────────▶ CONFIRMED
       ├──customer cancels / deadline passes / PAYMENT_COMPLETED past deadline──▶ CANCELLING
       │     (emits ORDER_CONFIRMATION_FAILED cancelled_by_customer / deadline_exceeded)
       ├──PAYMENT_FAILED──▶ CANCELLING (the payment's reason; emits nothing)
       └──INVENTORY_REJECTED──▶ CANCELLED (out_of_stock / unknown_sku)
    CANCELLING ──INVENTORY_RELEASED or INVENTORY_REJECTED──▶ CANCELLED (the reason recorded before)

Cancellation and the deadline never wait for a step that may not come (docs/contract/flows.md): the
moment the customer cancels or the deadline passes (order_svc's own timer, see
`on_deadline`), a PENDING order becomes CANCELLING and ORDER_CONFIRMATION_FAILED goes out,
whatever step the saga is at. payment_svc answers it with a refund if it charged the order,
else it voids the order so that a later reservation is declined (PAYMENT_FAILED with the same
reason); either way inventory_svc releases the stock, or had rejected it, and the order ends
CANCELLED with the reason it was given up for. A CANCELLING order is never confirmed: a
PAYMENT_COMPLETED reaching it changes nothing here, the refund is already asked for.

The first root cause recorded is the one the order keeps: a cancellation after a decline
does not rename it, a decline after a cancellation neither.

Compensation is last-in, first-out: an order whose stock was reserved is cancelled only
once the stock is back (INVENTORY_RELEASED). PAYMENT_FAILED and INVENTORY_RELEASED travel
on different topics, so either may arrive first: a release reaching a PENDING order is
remembered (`stock_released`), and then the decline, a cancellation or the deadline cancels
the order at once — nothing is held any more (a PENDING order's stock is released only after
a declined payment). Events that do not apply to an order's current state (a late or
repeated fact) change nothing and emit nothing.

CANCEL_REQUESTED is what an earlier version recorded for a cancellation in flight. No order
enters it any more; one left in it is moved on like a PENDING order that the customer
cancelled (by the next event, or by the deadline timer).
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
    ConfirmationFailureReason,
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
    """An order's status, `orders.status` (docs/contract/flows.md, The order's states)."""

    PENDING = "PENDING"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLING = "CANCELLING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


IN_FLIGHT = frozenset({OrderStatus.PENDING, OrderStatus.CANCEL_REQUESTED})
"""Not given up yet: the order may still be confirmed."""
TERMINAL = frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED})


class OrderNotFound(DomainError):
    """No order with this id: a 404 over HTTP, a dead letter when an event names it."""

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


def request_cancel(order: Order) -> Outcome:
    """The customer cancels. In flight: given up at once (CANCELLING, ORDER_CONFIRMATION_FAILED
    cancelled_by_customer; CANCELLED at once if its stock is already back). Already being
    cancelled: only remembered, the earlier reason stays. Final: OrderAlreadyFinal."""
    if order.status in TERMINAL:
        raise OrderAlreadyFinal(order.order_id, order.status)
    asked = replace(order, cancel_requested=True)
    if order.status not in IN_FLIGHT:
        return asked, None
    return _given_up(asked, "cancelled_by_customer")


def on_deadline(order: Order) -> Outcome:
    """order_svc's timer found the order past its deadline (`past_deadline`, read under the
    row lock). In flight: given up as `request_cancel` does, with deadline_exceeded (a legacy
    CANCEL_REQUESTED order with cancelled_by_customer). Anything else: nothing."""
    if order.status not in IN_FLIGHT or not order.past_deadline:
        return order, None
    return _given_up(order, _in_flight_reason(order))


def on_inventory_rejected(order: Order, reason: InventoryRejectionReason) -> Outcome:
    """Nothing was reserved, nothing was charged (payment_svc only charges reserved orders):
    cancel now, with the rejection's reason, or the cancellation's if the order was given up."""
    if order.status in IN_FLIGHT:
        return _cancelled(order, reason)
    if order.status == OrderStatus.CANCELLING:
        return _cancelled(order, order.reason)
    return order, None


def on_payment_completed(order: Order) -> Outcome:
    """Confirm, unless the deadline passed before the timer saw it (then give the order up,
    which starts the refund, C3). A CANCELLING order is never confirmed: its
    ORDER_CONFIRMATION_FAILED is already out, payment_svc refunds this payment."""
    if order.status not in IN_FLIGHT:
        return order, None
    if order.status == OrderStatus.PENDING and not order.past_deadline:
        confirmed = replace(order, status=OrderStatus.CONFIRMED)
        return confirmed, OrderConfirmed(order_id=order.order_id, occurred_at=utc_now())
    return _given_up(order, _in_flight_reason(order))


def on_payment_failed(order: Order, reason: PaymentFailureReason) -> Outcome:
    """Remember the root cause; cancel only once the stock is back. An order already given up
    keeps its own reason (a voided order's decline carries that reason anyway)."""
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


def _in_flight_reason(order: Order) -> ConfirmationFailureReason:
    """Why an in-flight order is given up when nobody just asked: the customer's request if
    one is recorded (legacy CANCEL_REQUESTED), else the deadline."""
    return "cancelled_by_customer" if order.cancel_requested else "deadline_exceeded"


def _given_up(order: Order, reason: ConfirmationFailureReason) -> Outcome:
    """An in-flight order may no longer be confirmed. Its stock already back means its payment
    failed and nothing is held: CANCELLED at once. Otherwise CANCELLING, and
    ORDER_CONFIRMATION_FAILED asks payment_svc to refund or void."""
    if order.stock_released:
        return _cancelled(order, reason)
    failed = replace(order, status=OrderStatus.CANCELLING, reason=reason)
    return failed, OrderConfirmationFailed(order_id=order.order_id, occurred_at=utc_now(), reason=reason)


def _cancelled(order: Order, reason: CancellationReason) -> Outcome:
    cancelled = replace(order, status=OrderStatus.CANCELLED, reason=reason)
    return cancelled, OrderCancelled(order_id=order.order_id, occurred_at=utc_now(), reason=reason)
