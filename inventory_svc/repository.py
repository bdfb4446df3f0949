"""inventory_svc's SQL. Every function takes the connection of the caller's transaction.

Lock order, everywhere: the order's lock first (the saga lock the unit of work takes before a
handler runs, shared/uow.py, held until the transaction ends), then stock rows in SKU order — so concurrent reservations, releases and commits wait
for each other but never deadlock, and two deliveries of one order's events never decide
side by side.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from inventory_svc.domain import Reservation, ReservationStatus, StockColumn
from shared.events import OrderItem

# The order's reservation row (NULLs when there is none) and the stock rows a decision on it may
# move, locked in SKU order: for an order without a reservation the SKUs asked for ($2), for a
# RESERVED one its own SKUs (only a RESERVED reservation's units move again). One round trip; the
# locks are taken in a CTE, after the order's lock (the module's lock order).
_RESERVATION_AND_LOCKED_STOCK = """
WITH r AS (
    SELECT order_id, reservation_id, status, items, reason, rejected_skus FROM reservations WHERE order_id = $1),
locked AS (
    SELECT sku, available FROM stock
    WHERE sku = ANY (CASE WHEN EXISTS (SELECT FROM r)
                          THEN ARRAY(SELECT item ->> 'sku' FROM r, jsonb_array_elements(r.items) AS item
                                     WHERE r.status = 'RESERVED')
                          ELSE $2::text[] END)
    ORDER BY sku FOR UPDATE)
SELECT r.order_id, r.reservation_id, r.status, r.items, r.reason, r.rejected_skus,
       (SELECT coalesce(array_agg(sku ORDER BY sku), '{}') FROM locked) AS locked_skus,
       (SELECT coalesce(array_agg(available ORDER BY sku), '{}') FROM locked) AS locked_available
FROM (VALUES (1)) AS one (x) LEFT JOIN r ON true
"""

# One row per order; after its first decision only the status changes (under the order's lock).
_SAVE_RESERVATION = """
INSERT INTO reservations (reservation_id, order_id, status, items, reason, rejected_skus)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()
"""

# $3/$4/$5: how available/reserved/sold change per unit of each item (move_units)
_MOVE_STOCK = """
UPDATE stock AS s
SET available = s.available + $3::bigint * i.quantity,
    reserved = s.reserved + $4::bigint * i.quantity,
    sold = s.sold + $5::bigint * i.quantity,
    updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS i (sku, quantity)
WHERE s.sku = i.sku
"""
_COLUMNS: tuple[StockColumn, ...] = ("available", "reserved", "sold")

# The order's units moved ($7–$11: skus, quantities and the three per-unit deltas; empty arrays
# move nothing) and its reservation row saved, in one round trip.
_RECORD = """
WITH moved AS (""" + _MOVE_STOCK.replace("$1", "$7").replace("$2", "$8").replace("$3", "$9").replace(
    "$4", "$10").replace("$5", "$11").strip() + """)
""" + _SAVE_RESERVATION.strip()

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


async def reservation_and_locked_stock(
    connection: asyncpg.Connection, order_id: UUID, skus: Iterable[str] = ()
) -> tuple[Reservation | None, dict[str, int]]:
    """The order's reservation row, read under the order's lock (a handler's transaction holds
    it), and in the same statement the stock rows a decision on it may move, locked in SKU
    order: `skus` (those that exist) when the order has no reservation yet, the reservation's own
    SKUs when it is RESERVED, none otherwise. Returns the reservation (None if inventory_svc has
    decided nothing for it yet) and SKU → available of the rows locked."""
    row = await connection.fetchrow(_RESERVATION_AND_LOCKED_STOCK, order_id, sorted(set(skus)))
    reservation = _reservation(row) if row["order_id"] is not None else None
    return reservation, dict(zip(row["locked_skus"], row["locked_available"], strict=True))


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(
        order_id=row["order_id"],
        reservation_id=row["reservation_id"],
        status=ReservationStatus(row["status"]),
        items=tuple(OrderItem(**item) for item in json.loads(row["items"])),
        reason=row["reason"],
        skus=tuple(row["rejected_skus"] or ()),
    )


async def record(
    connection: asyncpg.Connection, reservation: Reservation, moves: tuple[StockColumn, StockColumn] | None
) -> None:
    """Insert the order's reservation row, or set its status; and, with `moves` (source, target),
    move each of its items' quantity from the `source` stock column to `target`: one statement.
    The caller holds the SKU rows' locks (`reservation_and_locked_stock`); the table refuses a count below zero."""
    items = reservation.items if moves is not None else ()
    deltas = _deltas(*moves) if moves is not None else (0, 0, 0)
    await connection.execute(
        _RECORD, *_reservation_values(reservation), [item.sku for item in items],
        [item.quantity for item in items], *deltas,
    )


def _deltas(source: StockColumn, target: StockColumn) -> tuple[int, int, int]:
    """Per unit, how available, reserved and sold change when units go from `source` to `target`."""
    return tuple((-1 if column == source else 0) + (1 if column == target else 0) for column in _COLUMNS)


def _reservation_values(reservation: Reservation) -> tuple:
    items = json.dumps([item.model_dump() for item in reservation.items])
    return (reservation.reservation_id, reservation.order_id, reservation.status, items, reservation.reason,
            list(reservation.skus) if reservation.status == ReservationStatus.REJECTED else None)


async def set_available(connection: asyncpg.Connection, sku: str, available: int) -> dict[str, Any]:
    """Create the SKU or set its available count; reserved and sold are kept."""
    return dict(await connection.fetchrow(_SET_AVAILABLE, sku, available))


async def stock_level(connection: asyncpg.Connection, sku: str) -> dict[str, Any] | None:
    """{sku, available, reserved, sold}, or None for an unknown SKU."""
    row = await connection.fetchrow(_STOCK_LEVEL, sku)
    return dict(row) if row else None


async def stock_levels(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every SKU as {sku, available, reserved, sold} (units), in SKU order."""
    return [dict(row) for row in await connection.fetch(_STOCK_LEVELS)]
