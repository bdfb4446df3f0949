"""Stock rules. Pure decide functions: each takes the order's reservation (None: none yet) and
what happened, and returns the reservation after the fact and the event to emit (`Outcome`);
none touches a database and no business outcome is an exception.

One reservation row per order records what inventory_svc decided for it, and is what a
redelivered event of any age is checked against (docs/contract/invariants.md, I8):

    (none) ──ORDER_CREATED, every item available──▶ RESERVED ──PAYMENT_FAILED / PAYMENT_REFUNDED──▶ RELEASED (C2)
       │                                               └──────ORDER_CONFIRMED──────────────────────▶ COMMITTED
       └──ORDER_CREATED, any item short or unknown──▶ REJECTED (reason, skus)

Each move out of RESERVED happens at most once; every other event meeting a row (a
redelivered ORDER_CREATED of a rejected order, a second PAYMENT_FAILED, a release after a
commit) changes nothing and emits nothing.

An order is reserved whole or not at all. Unknown SKUs are reported before short
ones: an order naming an unknown SKU is rejected `unknown_sku` even if another item
is also short. The rejected SKUs are listed in sorted order (`check_availability` returns
the `Rejection`).

Stock (I2): a reservation's units sit in `available` until it is RESERVED, in `reserved`
while it is, and go back to `available` (RELEASED) or on to `sold` (COMMITTED); a REJECTED
order never moved any (`Reservation.units_in`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events import (
    InventoryCommitted,
    InventoryRejected,
    InventoryRejectionReason,
    InventoryReleased,
    InventoryReserved,
    OrderCreated,
    OrderItem,
    utc_now,
)


class ReservationStatus(StrEnum):
    """A reservations row's status (the state diagram at the top of this module)."""

    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class Rejection:
    """Why an order cannot be reserved: `reason` and the offending SKUs, sorted."""

    reason: InventoryRejectionReason
    skus: tuple[str, ...]


class SetStock(BaseModel):
    """The body of PUT /stock/{sku}: the SKU's new available count (a seed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    available: Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]


def check_availability(items: Iterable[OrderItem], available: Mapping[str, int]) -> Rejection | None:
    """None when every item can be reserved from `available` (SKU → available units, listing
    only SKUs that exist), else the Rejection: unknown_sku naming the unknown SKUs if any,
    else out_of_stock naming the short ones. Raises nothing."""
    items = list(items)
    unknown = [item.sku for item in items if item.sku not in available]
    if unknown:
        return Rejection("unknown_sku", tuple(sorted(unknown)))
    short = [item.sku for item in items if available[item.sku] < item.quantity]
    if short:
        return Rejection("out_of_stock", tuple(sorted(short)))
    return None


StockColumn = Literal["available", "reserved", "sold"]


@dataclass(frozen=True)
class Reservation:
    """What inventory_svc decided for one order (its reservations row, read under the order's lock)."""

    order_id: UUID
    reservation_id: UUID
    status: ReservationStatus
    items: tuple[OrderItem, ...]
    reason: InventoryRejectionReason | None = None
    """Why it was REJECTED."""
    skus: tuple[str, ...] = ()
    """The SKUs that were unknown or short (REJECTED only), sorted."""

    @property
    def units_in(self) -> StockColumn:
        """The stock column that holds this order's units."""
        return _UNITS_IN[self.status]


_UNITS_IN: dict[ReservationStatus, StockColumn] = {
    ReservationStatus.RESERVED: "reserved",
    ReservationStatus.RELEASED: "available",
    ReservationStatus.COMMITTED: "sold",
    ReservationStatus.REJECTED: "available",
}

Outcome = tuple[Reservation | None, InventoryReserved | InventoryRejected | InventoryReleased | InventoryCommitted | None]
"""The order's reservation after the fact (None: still none), and the event to emit (if any)."""


def on_order_created(
    reservation: Reservation | None, available: Mapping[str, int], created: OrderCreated, reservation_id: UUID
) -> Outcome:
    """Reserve a new order whole (RESERVED, INVENTORY_RESERVED carrying the order's customer and
    amount on to payment_svc) or reject it (REJECTED, INVENTORY_REJECTED with the reason and
    SKUs); `available` is SKU → available count of the order's SKUs that exist, read under
    their row locks; the new row gets `reservation_id`. An order already decided: no change."""
    if reservation is not None:
        return reservation, None
    items = tuple(created.items)
    rejection = check_availability(items, available)
    if rejection is not None:
        rejected = Reservation(created.order_id, reservation_id, ReservationStatus.REJECTED, items,
                               reason=rejection.reason, skus=rejection.skus)
        return rejected, InventoryRejected(order_id=created.order_id, occurred_at=utc_now(), reason=rejection.reason,
                                           skus=rejection.skus)
    reserved = Reservation(created.order_id, reservation_id, ReservationStatus.RESERVED, items)
    return reserved, InventoryReserved(
        order_id=created.order_id, occurred_at=utc_now(), reservation_id=reservation_id, items=items,
        customer_id=created.customer_id, amount=created.amount, currency=created.currency,
    )


def release(reservation: Reservation | None) -> Outcome:
    """PAYMENT_FAILED or PAYMENT_REFUNDED (C2): a RESERVED order's units go back to available
    (RELEASED, INVENTORY_RELEASED). Anything else — none, rejected, already released or
    committed: no change."""
    if reservation is None or reservation.status != ReservationStatus.RESERVED:
        return reservation, None
    released = replace(reservation, status=ReservationStatus.RELEASED)
    return released, InventoryReleased(order_id=reservation.order_id, occurred_at=utc_now(),
                                       reservation_id=reservation.reservation_id)


def commit(reservation: Reservation | None) -> Outcome:
    """ORDER_CONFIRMED: a RESERVED order's units are sold (COMMITTED, INVENTORY_COMMITTED).
    Anything else: no change."""
    if reservation is None or reservation.status != ReservationStatus.RESERVED:
        return reservation, None
    committed = replace(reservation, status=ReservationStatus.COMMITTED)
    return committed, InventoryCommitted(order_id=reservation.order_id, occurred_at=utc_now(),
                                         reservation_id=reservation.reservation_id)
