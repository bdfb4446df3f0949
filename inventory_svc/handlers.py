"""inventory_svc: reserve stock for new orders or reject them, release it (C2) or sell it.

Each handler runs under the order's lock (the unit of work takes it first), loads its
reservation row together with the stock rows a decision may move, locked (one statement), lets
`domain` decide, then records: the reservation row, the order's units moved between the stock
columns exactly as the reservation's status moved them (`Reservation.units_in`), and the event.
A row already decided turns every later or repeated event into a no-op, whatever its age (docs/contract/invariants.md, I8).
"""
from __future__ import annotations

import uuid

from inventory_svc import domain, repository
from inventory_svc.domain import Outcome, Reservation
from shared.events import OrderConfirmed, OrderCreated, PaymentFailed, PaymentRefunded
from shared.uow import Transaction


async def reserve_stock(event: OrderCreated, tx: Transaction) -> None:
    """All items or none (INVENTORY_RESERVED or INVENTORY_REJECTED), once per order: the SKU
    rows are locked and read only for an order not decided yet."""
    reservation, locked = await repository.reservation_and_locked_stock(
        tx.connection, event.order_id, (item.sku for item in event.items))
    available = {} if reservation is not None else locked
    await _record(tx, reservation, domain.on_order_created(reservation, available, event, uuid.uuid4()))


async def release_stock(event: PaymentFailed | PaymentRefunded, tx: Transaction) -> None:
    """Compensation C2: the reserved stock goes back to available."""
    reservation, _ = await repository.reservation_and_locked_stock(tx.connection, event.order_id)
    await _record(tx, reservation, domain.release(reservation))


async def commit_stock(event: OrderConfirmed, tx: Transaction) -> None:
    """The order is confirmed: reserved stock becomes sold."""
    reservation, _ = await repository.reservation_and_locked_stock(tx.connection, event.order_id)
    await _record(tx, reservation, domain.commit(reservation))


async def _record(tx: Transaction, before: Reservation | None, outcome: Outcome) -> None:
    """Store the reservation after the fact, move its units to the stock column its new status
    puts them in, and emit the event the rules asked for. The SKU rows whose units move were
    locked, in SKU order, with the reservation (`reservation_and_locked_stock`): a new order's
    when its availability was read, a RESERVED one's (the only status whose units move again)."""
    after, event = outcome
    if after is None or after == before:
        return
    was_in = before.units_in if before is not None else "available"
    moves = (was_in, after.units_in) if after.units_in != was_in else None
    await repository.record(tx.connection, after, moves)
    if event is not None:
        await tx.emit(event)


HANDLERS = {
    OrderCreated: reserve_stock,
    PaymentFailed: release_stock,
    PaymentRefunded: release_stock,
    OrderConfirmed: commit_stock,
}
