"""inventory_svc: reserve stock for new orders, release it (C1) or sell it.

Releasing and committing move a reservation out of RESERVED at most once: a second
PAYMENT_FAILED / PAYMENT_REFUNDED / ORDER_CONFIRMED for the same order finds nothing
to move and emits nothing.
"""
from __future__ import annotations

import uuid

from inventory_svc import domain, repository
from shared.events import (
    InventoryCommitted,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderConfirmed,
    OrderCreated,
    PaymentFailed,
    PaymentRefunded,
    utc_now,
)
from shared.uow import Transaction


async def reserve_stock(event: OrderCreated, tx: Transaction) -> None:
    """All items or none: lock the SKU rows, check, move available → reserved."""
    if await repository.reservation_exists(tx.connection, event.order_id):
        return
    available = await repository.lock_stock(tx.connection, (item.sku for item in event.items))
    try:
        domain.check_availability(event.items, available)
    except domain.StockUnavailable as rejection:
        await tx.emit(
            InventoryRejected(order_id=event.order_id, occurred_at=utc_now(), reason=rejection.reason, skus=rejection.skus)
        )
        return
    reservation_id = uuid.uuid4()
    await repository.reserve(tx.connection, reservation_id, event.order_id, event.items)
    await tx.emit(
        InventoryReserved(
            order_id=event.order_id,
            occurred_at=utc_now(),
            reservation_id=reservation_id,
            items=event.items,
            customer_id=event.customer_id,
            amount=event.amount,
            currency=event.currency,
        )
    )


async def release_stock(event: PaymentFailed | PaymentRefunded, tx: Transaction) -> None:
    """Compensation C1: the reserved stock goes back to available."""
    reservation_id = await repository.release(tx.connection, event.order_id)
    if reservation_id is not None:
        await tx.emit(InventoryReleased(order_id=event.order_id, occurred_at=utc_now(), reservation_id=reservation_id))


async def commit_stock(event: OrderConfirmed, tx: Transaction) -> None:
    """The order is confirmed: reserved stock becomes sold."""
    reservation_id = await repository.commit(tx.connection, event.order_id)
    if reservation_id is not None:
        await tx.emit(InventoryCommitted(order_id=event.order_id, occurred_at=utc_now(), reservation_id=reservation_id))


HANDLERS = {
    OrderCreated: reserve_stock,
    PaymentFailed: release_stock,
    PaymentRefunded: release_stock,
    OrderConfirmed: commit_stock,
}
