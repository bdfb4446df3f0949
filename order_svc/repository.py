"""order_svc's SQL. Every function takes the connection of the caller's transaction."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from order_svc.admission import SagaLoad
from order_svc.domain import Order, OrderStatus, PlaceOrder

# The new order and its first history row (recorded by event $11) in one round trip; nothing
# when the idempotency key is taken. Answers the order id, or no row.
_INSERT_ORDER = """
WITH placed AS (
    INSERT INTO orders (order_id, customer_id, items, amount, currency, status,
                        idempotency_key, request_sha256, deadline_at, traceparent)
    VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, now() + make_interval(secs => $9), $10)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING order_id, status)
INSERT INTO order_history (order_id, status, reason, event_id)
SELECT order_id, status, NULL, $11 FROM placed
RETURNING order_id
"""

_TRACEPARENT = """SELECT traceparent FROM orders WHERE order_id = $1"""

_LOCK_FINGERPRINT = """SELECT request_sha256 FROM orders WHERE order_id = $1 FOR UPDATE"""

_BY_IDEMPOTENCY_KEY = """
SELECT order_id, status, request_sha256 FROM orders WHERE idempotency_key = $1
"""

_ORDER_STATE = """
SELECT order_id, status, reason,
       cancel_requested_at IS NOT NULL AS cancel_requested,
       stock_released_at IS NOT NULL AS stock_released,
       now() > deadline_at AS past_deadline
FROM orders WHERE order_id = $1
"""
_LOCK_ORDER = _ORDER_STATE + "FOR UPDATE"
_LOCK_ORDER_SKIP_LOCKED = _ORDER_STATE + "FOR UPDATE SKIP LOCKED"

# In flight past the deadline, the most overdue first (index orders_overdue, schema.sql).
_OVERDUE_ORDERS = """
SELECT order_id FROM orders
WHERE status IN ('PENDING', 'CANCEL_REQUESTED') AND deadline_at < now()
ORDER BY deadline_at
LIMIT $1
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

# The order's new state and, when its status changed ($6), the history row of that change:
# one round trip. The history row is added only if the order row was there to update.
_SAVE_ORDER_WITH_HISTORY = """
WITH saved AS (""" + _SAVE_ORDER.strip() + """
    RETURNING order_id, status, reason)
INSERT INTO order_history (order_id, status, reason, event_id)
SELECT order_id, status, reason, $7 FROM saved WHERE $6
"""

_ORDER_DETAILS = """
SELECT order_id, customer_id, items, amount, currency, status, reason,
       cancel_requested_at, created_at, deadline_at, updated_at
FROM orders WHERE order_id = $1
"""

_ORDER_HISTORY = """
SELECT status, reason, event_id, at FROM order_history WHERE order_id = $1 ORDER BY id
"""

# Sagas by state, newest first. Three constant statements rather than one with a
# parameter in the WHERE clause, so each can use its index (see schema.sql).
_ORDER_COLUMNS = """
SELECT order_id, status, reason, customer_id, items, amount, currency, created_at, deadline_at, updated_at,
       status NOT IN ('CONFIRMED', 'CANCELLED') AND deadline_at < now() AS stuck
FROM orders
"""
_RECENT_ORDERS = {
    "all": _ORDER_COLUMNS + "ORDER BY created_at DESC, order_id LIMIT $1",
    "in_flight": _ORDER_COLUMNS
    + "WHERE status NOT IN ('CONFIRMED', 'CANCELLED') ORDER BY created_at DESC, order_id LIMIT $1",
    "stuck": _ORDER_COLUMNS
    + "WHERE status NOT IN ('CONFIRMED', 'CANCELLED') AND deadline_at < now() ORDER BY created_at DESC, order_id LIMIT $1",
}

_SAGA_COUNTS = """
SELECT count(*) AS in_flight, count(*) FILTER (WHERE deadline_at < now()) AS stuck
FROM orders WHERE status NOT IN ('CONFIRMED', 'CANCELLED')
"""

# Admission control's reading (order_svc/admission.py): indexes orders_in_flight and orders_finished.
_SAGA_LOAD = """
SELECT (SELECT count(*) FROM orders WHERE status NOT IN ('CONFIRMED', 'CANCELLED')
               AND created_at > now() - make_interval(secs => $2)) AS in_flight,
       (SELECT count(*) FROM orders WHERE status IN ('CONFIRMED', 'CANCELLED')
               AND updated_at > now() - make_interval(secs => $1)) AS finished
"""

_IS_STUCK = """
SELECT status NOT IN ('CONFIRMED', 'CANCELLED') AND deadline_at < now() FROM orders WHERE order_id = $1
"""

_EVENTS_EMITTED = """
SELECT id, event_type, causation_id, created_at,
       payload->>'error' AS error, payload->'headers'->>'eventType' AS dead_event_type
FROM outbox WHERE saga_id = $1
"""

_EVENTS_CONSUMED = """
SELECT event_id, event_type, processed_at FROM inbox WHERE consumer = $2 AND saga_id = $1
"""

ORDER_FILTERS = tuple(_RECENT_ORDERS)
"""What GET /orders?status= accepts: all, in_flight (not CONFIRMED or CANCELLED), stuck (in flight past its deadline)."""


async def insert_order(
    connection: asyncpg.Connection,
    order_id: UUID,
    command: PlaceOrder,
    idempotency_key: str | None,
    deadline_seconds: float,
    traceparent: str | None,
    event_id: UUID,
) -> bool:
    """Insert a PENDING order, its deadline `deadline_seconds` from now, `traceparent` the trace
    its saga runs in, and its first history row (PENDING, recorded by `event_id`, its
    ORDER_CREATED) in one statement; False, with nothing written, if `idempotency_key` is
    already taken."""
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
        traceparent,
        event_id,
    )
    return inserted is not None


async def saga_traceparent(connection: asyncpg.Connection, order_id: UUID) -> str | None:
    """The traceparent the order's saga started with (None for an order placed before it was kept)."""
    return await connection.fetchval(_TRACEPARENT, order_id)


async def lock_fingerprint(connection: asyncpg.Connection, order_id: UUID) -> str | None:
    """The request fingerprint of order `order_id` (row locked until the transaction ends), or None."""
    return await connection.fetchval(_LOCK_FINGERPRINT, order_id)


async def find_by_idempotency_key(connection: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    """(order_id, status, request_sha256) of the order placed with `key`, if any."""
    return await connection.fetchrow(_BY_IDEMPOTENCY_KEY, key)


async def lock_order(connection: asyncpg.Connection, order_id: UUID, *, skip_locked: bool = False) -> Order | None:
    """The order, its row locked until the transaction ends; None if unknown, or, with
    `skip_locked`, if another transaction holds its row (instead of waiting for it)."""
    row = await connection.fetchrow(_LOCK_ORDER_SKIP_LOCKED if skip_locked else _LOCK_ORDER, order_id)
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


async def overdue_orders(connection: asyncpg.Connection, limit: int) -> list[UUID]:
    """Ids of at most `limit` orders in flight (PENDING, or a legacy CANCEL_REQUESTED) whose
    deadline has passed, the most overdue first. Nothing is locked: whoever acts on one locks
    it (`lock_order`) and checks again."""
    return [row["order_id"] for row in await connection.fetch(_OVERDUE_ORDERS, limit)]


async def save_order(connection: asyncpg.Connection, order: Order, *, status_changed: bool = False,
                     caused_by: UUID | None = None) -> None:
    """Store the order's state; when `status_changed`, its history row too (pointing at the event
    `caused_by`, None when no event caused it), in the same statement."""
    await connection.execute(
        _SAVE_ORDER_WITH_HISTORY, order.order_id, order.status, order.reason, order.cancel_requested,
        order.stock_released, status_changed, caused_by,
    )


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


async def recent_orders(connection: asyncpg.Connection, which: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` orders of `which` (one of ORDER_FILTERS), JSON-ready; `reason`
    as in `order_details`, `stuck` true for an order in flight past its deadline."""
    rows = await connection.fetch(_RECENT_ORDERS[which], limit)
    return [
        {
            "order_id": str(row["order_id"]),
            "status": row["status"],
            "reason": _public_reason(row),
            "customer_id": row["customer_id"],
            "items": json.loads(row["items"]),
            "amount": f"{row['amount']:.2f}",
            "currency": row["currency"],
            "created_at": row["created_at"].isoformat(),
            "deadline_at": row["deadline_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat(),
            "stuck": row["stuck"],
        }
        for row in rows
    ]


@dataclass(frozen=True)
class SagaCounts:
    """Orders in flight and stuck, for the saga gauges."""

    in_flight: int
    """Orders not CONFIRMED or CANCELLED."""
    stuck: int
    """Of those, the ones past their deadline."""


async def saga_load(connection: asyncpg.Connection, window_s: float, recent_s: float) -> SagaLoad:
    """Sagas in flight now that were placed in the last `recent_s` seconds (every instance's), and
    those that finished over the last `window_s` seconds."""
    row = await connection.fetchrow(_SAGA_LOAD, window_s, recent_s)
    return SagaLoad(in_flight=row["in_flight"], finished=row["finished"], window_s=window_s)


async def saga_counts(connection: asyncpg.Connection) -> SagaCounts:
    """Every order in flight and those of them past their deadline, every instance's."""
    row = await connection.fetchrow(_SAGA_COUNTS)
    return SagaCounts(in_flight=row["in_flight"], stuck=row["stuck"])


async def order_timeline(connection: asyncpg.Connection, order_id: UUID, consumer: str) -> dict[str, Any] | None:
    """The order with its timeline as this database saw it (JSON-ready), or None if unknown.

    Steps, oldest first: each event order_svc consumed (its inbox, as `consumer`) or
    emitted (its outbox, dead letters included) for this saga, and each status change
    (order_history) attached to the event that records it. A status change without an
    event (the customer's cancellation request) or whose event rows were purged by the
    retention is a step of its own. No Kafka here: what the topics say is `saga trace`'s."""
    order = await order_details(connection, order_id)
    if order is None:
        return None
    saga_id = str(order_id)
    by_event_id: dict[str, dict[str, Any]] = {}
    for row in await connection.fetch(_EVENTS_CONSUMED, saga_id, consumer):
        by_event_id[str(row["event_id"])] = _step("consumed", row["processed_at"], row["event_type"], row["event_id"])
    for row in await connection.fetch(_EVENTS_EMITTED, saga_id):
        step = _step("emitted", row["created_at"], row["event_type"], row["id"], row["causation_id"] or None)
        if row["error"] is not None:
            step.update(error=row["error"], dead_event_type=row["dead_event_type"])
        by_event_id[str(row["id"])] = step
    steps = list(by_event_id.values())
    for change in order.pop("history"):
        step = by_event_id.get(change["event_id"] or "")
        if step is None or step["status"] is not None:
            kind = "status" if change["event_id"] else "request"
            step = _step(kind, datetime.fromisoformat(change["at"]), None, change["event_id"])
            steps.append(step)
        step.update(status=change["status"], reason=change["reason"])
    steps.sort(key=lambda step: (step["at"], _KIND_ORDER[step["kind"]]))
    started = datetime.fromisoformat(order["created_at"])
    for step in steps:
        step["since_start_ms"] = round((step["at"] - started).total_seconds() * 1000)
        step["at"] = step["at"].isoformat()
    stuck = await connection.fetchval(_IS_STUCK, order_id)
    return {**order, "stuck": stuck, "steps": steps}


_KIND_ORDER = {"request": 0, "consumed": 1, "status": 2, "emitted": 3}
"""Within one instant: what came in before what it caused, what went out last."""


def _step(kind: str, at: datetime, event_type: str | None, event_id: Any, causation_id: str | None = None) -> dict[str, Any]:
    return {
        "at": at,
        "kind": kind,
        "event_type": event_type,
        "event_id": str(event_id) if event_id else None,
        "causation_id": causation_id,
        "status": None,
        "reason": None,
    }


def _public_reason(row: Mapping[str, Any]) -> str | None:
    return row["reason"] if row["status"] == OrderStatus.CANCELLED else None
