"""payment_svc: charge reserved orders, refund those that could not be confirmed (C3)."""
from __future__ import annotations

import uuid
from decimal import Decimal

from payment_svc import domain, repository
from payment_svc.domain import PaymentStatus
from shared.events import (
    InventoryReserved,
    OrderConfirmationFailed,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    utc_now,
)
from shared.settings import DEFAULT_PER_ORDER_LIMIT
from shared.uow import Transaction


async def charge_payment(
    event: InventoryReserved, tx: Transaction, per_order_limit: Decimal = DEFAULT_PER_ORDER_LIMIT
) -> None:
    """Debit the customer's account and emit PAYMENT_COMPLETED, or record the decline and
    emit PAYMENT_FAILED. At most one payment per order. `per_order_limit` comes from
    PaymentSettings (bound in bootstrap)."""
    if await repository.payment_exists(tx.connection, event.order_id):
        return
    account = await repository.lock_account(tx.connection, event.customer_id)
    payment_id = uuid.uuid4()
    try:
        domain.authorize(account, event.customer_id, event.amount, event.currency, per_order_limit)
    except domain.PaymentDeclined as decline:
        await repository.insert_payment(
            tx.connection, payment_id, event.order_id, event.customer_id, event.amount, event.currency,
            PaymentStatus.DECLINED, decline.reason, str(decline),
        )
        await tx.emit(PaymentFailed(order_id=event.order_id, occurred_at=utc_now(), reason=decline.reason))
        return
    await repository.add_to_balance(tx.connection, event.customer_id, -event.amount)
    await repository.insert_payment(
        tx.connection, payment_id, event.order_id, event.customer_id, event.amount, event.currency,
        PaymentStatus.CAPTURED,
    )
    await tx.emit(
        PaymentCompleted(
            order_id=event.order_id, occurred_at=utc_now(), payment_id=payment_id,
            amount=event.amount, currency=event.currency,
        )
    )


async def refund_payment(event: OrderConfirmationFailed, tx: Transaction) -> None:
    """Compensation C3: credit a captured payment back, exactly once."""
    payment = await repository.mark_refunded(tx.connection, event.order_id)
    if payment is None:
        return
    await repository.add_to_balance(tx.connection, payment["customer_id"], payment["amount"])
    await tx.emit(
        PaymentRefunded(
            order_id=event.order_id, occurred_at=utc_now(), payment_id=payment["payment_id"],
            amount=payment["amount"], currency=payment["currency"],
        )
    )


HANDLERS = {
    InventoryReserved: charge_payment,
    OrderConfirmationFailed: refund_payment,
}
