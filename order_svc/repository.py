"""order_svc's SQL. Every function takes the connection of the caller's transaction."""
from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from order_svc.domain import Order, OrderStatus, PlaceOrder

_INSERT_ORDER = """
INSERT INTO orders (order_id, customer_id, items, amount, currency, status,
                    idempotency_key, request_sha256, deadline_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING order_id
"""

_BY_IDEMPOTENCY_KEY = """
SELECT order_id, status, request_sha256 FROM orders WHERE idempotency_key = $1
"""

_LOCK_ORDER = """
SELECT order_id, status, reason,
       cancel_requested_at IS NOT NULL AS cancel_requested,
       stock_released_at IS NOT NULL AS stock_released,
       now() > deadline_at AS past_deadline
FROM orders WHERE order_id = $1
FOR UPDATE
"""

_SAVE_ORDER = """
UPDATE orders
SET status = $2,
    reason = $3,
    cancel_requested_at = CASE WHEN $4 THEN coalesce(cancel_requested_at, now()) END,
    stock_released_at = CASE WHEN $5 THEN coalesce(stock_released_at, now()) END,
    updated_at = now()
WHERE order_id = $1
"""

_ADD_HISTORY = """
INSERT INTO order_history (order_id, status, reason, event_id) VALUES ($1, $2, $3, $4)
"""

_ORDER_DETAILS = """
SELECT order_id, customer_id, items, amount, currency, status, reason,
       cancel_requested_at, created_at, deadline_at, updated_at
FROM orders WHERE order_id = $1
"""

_ORDER_HISTORY = """
SELECT status, reason, event_id, at FROM order_history WHERE order_id = $1 ORDER BY id
"""


async def insert_order(
    connection: asyncpg.Connection,
    order_id: UUID,
    command: PlaceOrder,
    idempotency_key: str | None,
    deadline_seconds: float,
) -> bool:
    """Insert a PENDING order; False if `idempotency_key` is already taken."""
    items = json.dumps([item.model_dump() for item in command.items])
    inserted = await connection.fetchval(
        _INSERT_ORDER,
        order_id,
        command.customer_id,
        items,
        command.amount,
        command.currency,
        OrderStatus.PENDING,
        idempotency_key,
        command.fingerprint(),
        deadline_seconds,
    )
    return inserted is not None


async def find_by_idempotency_key(connection: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    """(order_id, status, request_sha256) of the order placed with `key`, if any."""
    return await connection.fetchrow(_BY_IDEMPOTENCY_KEY, key)


async def lock_order(connection: asyncpg.Connection, order_id: UUID) -> Order | None:
    """The order, its row locked until the transaction ends; None if unknown."""
    row = await connection.fetchrow(_LOCK_ORDER, order_id)
    if row is None:
        return None
    return Order(
        order_id=row["order_id"],
        status=OrderStatus(row["status"]),
        reason=row["reason"],
        cancel_requested=row["cancel_requested"],
        stock_released=row["stock_released"],
        past_deadline=row["past_deadline"],
    )


async def save_order(connection: asyncpg.Connection, order: Order) -> None:
    await connection.execute(
        _SAVE_ORDER, order.order_id, order.status, order.reason, order.cancel_requested, order.stock_released
    )


async def add_history(
    connection: asyncpg.Connection, order_id: UUID, status: OrderStatus, reason: str | None, event_id: UUID | None
) -> None:
    await connection.execute(_ADD_HISTORY, order_id, status, reason, event_id)


async def order_details(connection: asyncpg.Connection, order_id: UUID) -> dict[str, Any] | None:
    """The order as GET /orders/{id} shows it (JSON-ready), or None if unknown.
    `reason` is the root cause once CANCELLED, else null; each history entry is one
    status change with the event that records it."""
    row = await connection.fetchrow(_ORDER_DETAILS, order_id)
    if row is None:
        return None
    history = await connection.fetch(_ORDER_HISTORY, order_id)
    return {
        "order_id": str(row["order_id"]),
        "status": row["status"],
        "reason": row["reason"] if row["status"] == OrderStatus.CANCELLED else None,
        "customer_id": row["customer_id"],
        "amount": f"{row['amount']:.2f}",
        "currency": row["currency"],
        "items": json.loads(row["items"]),
        "cancel_requested": row["cancel_requested_at"] is not None,
        "created_at": row["created_at"].isoformat(),
        "deadline_at": row["deadline_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "history": [
            {
                "status": step["status"],
                "at": step["at"].isoformat(),
                "event_id": str(step["event_id"]) if step["event_id"] else None,
                "reason": step["reason"],
            }
            for step in history
        ],
    }
