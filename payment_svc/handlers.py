"""payment_svc: charge reserved orders, refund or void those given up (C3; docs/contract/flows.md,
Cancellation and the deadline).

Each handler runs under the order's lock (the unit of work takes it first: one lock per order
for every decision, so a charge and a void never interleave), loads its payment row, lets
`domain` decide, then records: the payment row, the account moved by exactly what the
payment's holding moved, and the event.
"""
from __future__ import annotations

import uuid
from decimal import Decimal

from payment_svc import domain, repository
from payment_svc.domain import Outcome, Payment
from shared.events import InventoryReserved, OrderConfirmationFailed
from shared.settings import DEFAULT_PER_ORDER_LIMIT
from shared.uow import Transaction


async def charge_payment(
    event: InventoryReserved, tx: Transaction, per_order_limit: Decimal = DEFAULT_PER_ORDER_LIMIT
) -> None:
    """Charge the reservation once (PAYMENT_COMPLETED or PAYMENT_FAILED), decline it if the
    order was voided, ignore it if already decided (domain.on_inventory_reserved).
    `per_order_limit` comes from PaymentSettings (bound in bootstrap)."""
    payment, account = await repository.payment_and_locked_account(tx.connection, event.order_id, event.customer_id)
    outcome = domain.on_inventory_reserved(payment, account, event, per_order_limit, uuid.uuid4())
    await _record(tx, payment, outcome)


async def refund_or_void(event: OrderConfirmationFailed, tx: Transaction) -> None:
    """The order was given up: refund a captured payment exactly once (PAYMENT_REFUNDED), or
    void an order not charged yet (domain.on_order_given_up)."""
    payment = await _locked(tx, event.order_id)
    await _record(tx, payment, domain.on_order_given_up(payment, event.order_id, event.reason, uuid.uuid4()))


async def _locked(tx: Transaction, order_id: uuid.UUID) -> Payment | None:
    """The order's payment row, read under the order's lock (shared/uow.py took it)."""
    return await repository.payment(tx.connection, order_id)


async def _record(tx: Transaction, before: Payment | None, outcome: Outcome) -> None:
    """Store the payment after the fact, move its customer's balance by what it stopped (or
    started) holding, and emit the event the rules asked for."""
    after, event = outcome
    if after is None or after == before:
        return
    credit = (before.held if before is not None else Decimal(0)) - after.held
    await repository.save_payment(tx.connection, after, credit)
    if event is not None:
        await tx.emit(event)


HANDLERS = {
    InventoryReserved: charge_payment,
    OrderConfirmationFailed: refund_or_void,
}
