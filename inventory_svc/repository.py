"""inventory_svc's SQL. Every function takes the connection of the caller's transaction.

Lock order, everywhere: a reservation row first (if any), then stock rows in SKU
order — so concurrent reservations, releases and commits wait for each other but
never deadlock.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from inventory_svc.domain import ReservationStatus
from shared.events import OrderItem

_LOCK_STOCK = """
SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE
"""

_RESERVATION_EXISTS = """
SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)
"""

_INSERT_RESERVATION = """
INSERT INTO reservations (reservation_id, order_id, status, items) VALUES ($1, $2, $3, $4::jsonb)
"""

_SETTLE_RESERVATION = """
UPDATE reservations SET status = $2, updated_at = now()
WHERE order_id = $1 AND status = 'RESERVED'
RETURNING reservation_id, items
"""

# $3/$4/$5: how available/reserved/sold change per unit of each item (see _RESERVE, ...)
_MOVE_STOCK = """
UPDATE stock AS s
SET available = s.available + $3::bigint * i.quantity,
    reserved = s.reserved + $4::bigint * i.quantity,
    sold = s.sold + $5::bigint * i.quantity,
    updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS i (sku, quantity)
WHERE s.sku = i.sku
"""
_RESERVE, _RELEASE, _COMMIT = (-1, 1, 0), (1, -1, 0), (0, -1, 1)

_SET_AVAILABLE = """
INSERT INTO stock (sku, available) VALUES ($1, $2)
ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now()
RETURNING sku, available, reserved, sold
"""

_STOCK_LEVEL = """
SELECT sku, available, reserved, sold FROM stock WHERE sku = $1
"""

_STOCK_LEVELS = """
SELECT sku, available, reserved, sold FROM stock ORDER BY sku
"""


async def lock_stock(connection: asyncpg.Connection, skus: Iterable[str]) -> dict[str, int]:
    """SKU → available for those of `skus` that exist, their rows locked (in SKU order)."""
    rows = await connection.fetch(_LOCK_STOCK, sorted(set(skus)))
    return {row["sku"]: row["available"] for row in rows}


async def reservation_exists(connection: asyncpg.Connection, order_id: UUID) -> bool:
    return await connection.fetchval(_RESERVATION_EXISTS, order_id)


async def reserve(
    connection: asyncpg.Connection, reservation_id: UUID, order_id: UUID, items: Sequence[OrderItem]
) -> None:
    """Move each item's quantity from available to reserved and record the reservation.
    The caller holds the SKU locks and has checked availability."""
    await _move(connection, items, _RESERVE)
    payload = json.dumps([item.model_dump() for item in items])
    await connection.execute(_INSERT_RESERVATION, reservation_id, order_id, ReservationStatus.RESERVED, payload)


async def release(connection: asyncpg.Connection, order_id: UUID) -> UUID | None:
    """RESERVED → RELEASED, stock back to available. The reservation id, or None if the
    order has no RESERVED reservation (never reserved, or already released/committed)."""
    return await _settle(connection, order_id, ReservationStatus.RELEASED, _RELEASE)


async def commit(connection: asyncpg.Connection, order_id: UUID) -> UUID | None:
    """RESERVED → COMMITTED, reserved stock becomes sold. As `release` for the result."""
    return await _settle(connection, order_id, ReservationStatus.COMMITTED, _COMMIT)


async def set_available(connection: asyncpg.Connection, sku: str, available: int) -> dict[str, Any]:
    """Create the SKU or set its available count; reserved and sold are kept."""
    return dict(await connection.fetchrow(_SET_AVAILABLE, sku, available))


async def stock_level(connection: asyncpg.Connection, sku: str) -> dict[str, Any] | None:
    """{sku, available, reserved, sold}, or None for an unknown SKU."""
    row = await connection.fetchrow(_STOCK_LEVEL, sku)
    return dict(row) if row else None


async def stock_levels(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in await connection.fetch(_STOCK_LEVELS)]


async def _settle(
    connection: asyncpg.Connection, order_id: UUID, status: ReservationStatus, deltas: tuple[int, int, int]
) -> UUID | None:
    row = await connection.fetchrow(_SETTLE_RESERVATION, order_id, status)
    if row is None:
        return None
    items = [OrderItem(**item) for item in json.loads(row["items"])]
    await lock_stock(connection, (item.sku for item in items))
    await _move(connection, items, deltas)
    return row["reservation_id"]


async def _move(connection: asyncpg.Connection, items: Sequence[OrderItem], deltas: tuple[int, int, int]) -> None:
    skus = [item.sku for item in items]
    quantities = [item.quantity for item in items]
    await connection.execute(_MOVE_STOCK, skus, quantities, *deltas)
