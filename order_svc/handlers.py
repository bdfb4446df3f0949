"""order_svc: the requests it serves, the deadlines it keeps and the events it reacts to.

Commands (from HTTP): `place_order`, `cancel_order`. Its own timer: `expire_overdue_orders`.
Events: see HANDLERS at the bottom. Each locks the order, lets `domain` decide, then stores
the new state, one history row per status change, and the event the rules asked for.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from order_svc import domain, repository
from order_svc.admission import Overloaded, Refusal
from order_svc.domain import Order, Outcome, OrderNotFound, OrderStatus, PlaceOrder
from shared.events import (
    InventoryRejected,
    InventoryReleased,
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    utc_now,
)
from shared.tracing import child_traceparent
from shared.uow import Transaction, UnitOfWork


@dataclass(frozen=True)
class PlacedOrder:
    """What place_order did: the order's id and current status."""

    order_id: UUID
    status: OrderStatus
    created: bool
    """False when an earlier request with the same Idempotency-Key placed it."""


async def place_order(
    uow: UnitOfWork,
    command: PlaceOrder,
    idempotency_key: str | None = None,
    *,
    deadline_seconds: float = domain.DEFAULT_DEADLINE_SECONDS,
    traceparent: str | None = None,
    admit: Callable[[], Refusal | None] | None = None,
) -> PlacedOrder:
    """Write a PENDING order, its first history row and ORDER_CREATED in one transaction.
    A request repeating an earlier Idempotency-Key gets that order back (created=False)
    and writes nothing; the same key with a different order is IdempotencyKeyReused.
    `admit` (order_svc/admission.py) is asked only for a new saga, never for a repeated key:
    Overloaded, with nothing written, when it refuses."""
    order_id = uuid.uuid4()
    if idempotency_key is None:
        _admit(admit)  # before taking a connection: a refusal costs the database nothing
    try:
        async with uow.starting(order_id, traceparent) as tx:
            if idempotency_key is not None:
                earlier = await repository.find_by_idempotency_key(tx.connection, idempotency_key)
                if earlier is not None:
                    return _replayed(earlier, command, idempotency_key)
                _admit(admit)
            event_id = await tx.emit(
                OrderCreated(
                    order_id=order_id,
                    occurred_at=utc_now(),
                    customer_id=command.customer_id,
                    items=command.items,
                    amount=command.amount,
                    currency=command.currency,
                )
            )
            if not await repository.insert_order(tx.connection, order_id, command, idempotency_key, deadline_seconds,
                                                 tx.traceparent, event_id):
                raise _KeyTakenMeanwhile  # rolls back the ORDER_CREATED emitted above
    except _KeyTakenMeanwhile:
        # a concurrent request with the same key committed first: answer with its order
        async with uow.bare_transaction() as connection:
            earlier = await repository.find_by_idempotency_key(connection, idempotency_key)
        return _replayed(earlier, command, idempotency_key)
    return PlacedOrder(order_id, OrderStatus.PENDING, created=True)


class _KeyTakenMeanwhile(Exception):
    """place_order's insert found its Idempotency-Key taken by a request that committed in between."""


def _admit(admit: Callable[[], Refusal | None] | None) -> None:
    if admit is not None and (refusal := admit()) is not None:
        raise Overloaded(refusal)


async def adopt_order(event: OrderCreated, tx: Transaction, *,
                      deadline_seconds: float = domain.DEFAULT_DEADLINE_SECONDS) -> None:
    """A foreign ORDER_CREATED — published to events.order by anyone, not signed by order_svc —
    becomes an order as if placed: PENDING, its deadline counted from now, and the saga's own
    ORDER_CREATED (signed, caused by the foreign event) emitted in the same transaction; the
    saga then runs like any other. The same order again (any event id, any time) changes
    nothing; another order under an existing order id is OrderIdTaken (a dead letter)."""
    command = PlaceOrder(customer_id=event.customer_id, items=event.items, amount=event.amount,
                         currency=event.currency)
    existing = await repository.lock_fingerprint(tx.connection, event.order_id)
    if existing is not None:
        if existing != command.fingerprint():
            raise domain.OrderIdTaken(event.order_id)
        return
    event_id = await tx.emit(
        OrderCreated(order_id=event.order_id, occurred_at=utc_now(), customer_id=command.customer_id,
                     items=command.items, amount=command.amount, currency=command.currency)
    )
    await repository.insert_order(tx.connection, event.order_id, command, None, deadline_seconds, tx.traceparent,
                                  event_id)


async def cancel_order(uow: UnitOfWork, order_id: UUID,
                       on_committed: Callable[[Transaction], None] | None = None) -> OrderStatus:
    """The customer's cancellation, decided at once whatever step the saga is at: an order in
    flight becomes CANCELLING and ORDER_CONFIRMATION_FAILED (cancelled_by_customer) goes out in
    the same transaction (domain.request_cancel). Returns the order's status afterwards; asking
    again changes nothing. Raises OrderNotFound, or OrderAlreadyFinal for a CONFIRMED or
    CANCELLED order. `on_committed(tx)` runs after the commit (the saga metrics)."""
    async with uow.starting(order_id) as tx:
        order = await _locked(tx, order_id)
        await _continue_saga_trace(tx)
        outcome = domain.request_cancel(order)
        await _record(tx, order, outcome)
    if on_committed is not None:
        on_committed(tx)
    return outcome[0].status


EXPIRY_BATCH = 50
"""Overdue orders read per query of `expire_overdue_orders` (each then handled in its own transaction)."""


async def expire_overdue_orders(uow: UnitOfWork, batch: int = EXPIRY_BATCH, limit: int = 1000,
                                on_committed: Callable[[Transaction], None] | None = None) -> int:
    """Give up every order in flight past its deadline (domain.on_deadline: CANCELLING,
    ORDER_CONFIRMATION_FAILED deadline_exceeded), at most `limit` in one call, reading `batch`
    candidates at a time. Each order is claimed in its own transaction through the unit of
    work (`uow.starting`, so the event is signed and in the outbox), its row locked with
    SKIP LOCKED: an order another order_svc instance or an event handler holds is left to
    them (or to the next call), so several instances never give one order up twice.

    Returns how many orders were given up. TransientError when the database is away (the
    caller, a timer, tries again on its next tick). `on_committed(tx)` runs after each commit."""
    expired = 0
    seen: set[UUID] = set()
    while expired < limit:
        async with uow.connection() as connection:
            overdue = await repository.overdue_orders(connection, batch)
        fresh = [order_id for order_id in overdue if order_id not in seen]
        for order_id in fresh:
            seen.add(order_id)
            if await _expire(uow, order_id, on_committed):
                expired += 1
        if len(overdue) < batch or not fresh:
            break
    return expired


async def _expire(uow: UnitOfWork, order_id: UUID, on_committed: Callable[[Transaction], None] | None) -> bool:
    async with uow.starting(order_id) as tx:
        order = await repository.lock_order(tx.connection, order_id, skip_locked=True)
        if order is None:  # someone else holds it now: they, or the next tick, decide
            return False
        await _continue_saga_trace(tx)
        outcome = domain.on_deadline(order)
        await _record(tx, order, outcome)
    if on_committed is not None:
        on_committed(tx)
    return outcome[0] != order


async def on_inventory_rejected(event: InventoryRejected, tx: Transaction) -> None:
    """INVENTORY_REJECTED: lock the order, let the rules decide (C1), record; OrderNotFound if unknown."""
    order = await _locked(tx, event.order_id)
    await _record(tx, order, domain.on_inventory_rejected(order, event.reason))


async def on_payment_completed(event: PaymentCompleted, tx: Transaction) -> None:
    """PAYMENT_COMPLETED: lock the order, let the rules decide (confirm, or give up past the deadline),
    record; OrderNotFound if unknown."""
    order = await _locked(tx, event.order_id)
    await _record(tx, order, domain.on_payment_completed(order))


async def on_payment_failed(event: PaymentFailed, tx: Transaction) -> None:
    """PAYMENT_FAILED: lock the order, let the rules decide (remember the cause), record; OrderNotFound if unknown."""
    order = await _locked(tx, event.order_id)
    await _record(tx, order, domain.on_payment_failed(order, event.reason))


async def on_inventory_released(event: InventoryReleased, tx: Transaction) -> None:
    """INVENTORY_RELEASED: lock the order, let the rules decide (cancel), record; OrderNotFound if unknown."""
    order = await _locked(tx, event.order_id)
    await _record(tx, order, domain.on_inventory_released(order))


async def _continue_saga_trace(tx: Transaction) -> None:
    """What order_svc emits on its own (no event caused it) continues the trace its saga started in."""
    tx.traceparent = child_traceparent(await repository.saga_traceparent(tx.connection, UUID(tx.saga_id)))


async def _locked(tx: Transaction, order_id: UUID) -> Order:
    order = await repository.lock_order(tx.connection, order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def _record(tx: Transaction, before: Order, outcome: Outcome) -> None:
    """Store the order after the fact; emit the event the rules asked for; add a history
    row if the status changed, pointing at the emitted event, else at the handled one."""
    after, event = outcome
    if after == before:
        return
    event_id = await tx.emit(event) if event is not None else None
    caused_by = event_id or (UUID(tx.causation_id) if tx.causation_id else None)
    await repository.save_order(tx.connection, after, status_changed=after.status != before.status,
                                caused_by=caused_by)


def _replayed(earlier: Mapping[str, Any], command: PlaceOrder, key: str) -> PlacedOrder:
    if earlier["request_sha256"] != command.fingerprint():
        raise domain.IdempotencyKeyReused(key)
    return PlacedOrder(earlier["order_id"], OrderStatus(earlier["status"]), created=False)


HANDLERS = {
    InventoryRejected: on_inventory_rejected,
    PaymentCompleted: on_payment_completed,
    PaymentFailed: on_payment_failed,
    InventoryReleased: on_inventory_released,
}
