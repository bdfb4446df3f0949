"""payment_svc's SQL. Every function takes the connection of the caller's transaction.

Lock order: a payment row first (refund), then the account row — a charge locks only
the account and inserts a new payment, so the two never wait on each other in a cycle.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from payment_svc.domain import Account, PaymentStatus, UnknownCustomer

_LOCK_ACCOUNT = """
SELECT customer_id, balance, currency FROM accounts WHERE customer_id = $1 FOR UPDATE
"""

_ADD_TO_BALANCE = """
UPDATE accounts SET balance = balance + $2, updated_at = now() WHERE customer_id = $1
"""

_PAYMENT_EXISTS = """
SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1)
"""

_INSERT_PAYMENT = """
INSERT INTO payments (payment_id, order_id, customer_id, amount, currency, status, reason, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

_REFUND_PAYMENT = """
UPDATE payments SET status = 'REFUNDED', updated_at = now()
WHERE order_id = $1 AND status = 'CAPTURED'
RETURNING payment_id, customer_id, amount, currency
"""

_SET_ACCOUNT = """
INSERT INTO accounts (customer_id, balance, currency) VALUES ($1, $2, $3)
ON CONFLICT (customer_id) DO UPDATE
SET balance = EXCLUDED.balance, currency = EXCLUDED.currency, updated_at = now()
RETURNING customer_id, balance, currency
"""

_ACCOUNT = """
SELECT customer_id, balance, currency FROM accounts WHERE customer_id = $1
"""

_ACCOUNTS = """
SELECT customer_id, balance, currency FROM accounts ORDER BY customer_id
"""


async def lock_account(connection: asyncpg.Connection, customer_id: str) -> Account | None:
    """The customer's account, its row locked until the transaction ends; None if none."""
    row = await connection.fetchrow(_LOCK_ACCOUNT, customer_id)
    return Account(row["customer_id"], row["balance"], row["currency"]) if row else None


async def add_to_balance(connection: asyncpg.Connection, customer_id: str, delta: Decimal) -> None:
    """Credit (delta > 0) or debit (delta < 0) the account; the table refuses a negative
    balance, and a missing account is UnknownCustomer (money is never credited to nobody)."""
    if await connection.execute(_ADD_TO_BALANCE, customer_id, delta) != "UPDATE 1":
        raise UnknownCustomer(f"customer {customer_id} has no account")


async def payment_exists(connection: asyncpg.Connection, order_id: UUID) -> bool:
    return await connection.fetchval(_PAYMENT_EXISTS, order_id)


async def insert_payment(
    connection: asyncpg.Connection,
    payment_id: UUID,
    order_id: UUID,
    customer_id: str,
    amount: Decimal,
    currency: str,
    status: PaymentStatus,
    reason: str | None = None,
    detail: str | None = None,
) -> None:
    await connection.execute(
        _INSERT_PAYMENT, payment_id, order_id, customer_id, amount, currency, status, reason, detail
    )


async def mark_refunded(connection: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    """CAPTURED → REFUNDED; (payment_id, customer_id, amount, currency) of the payment,
    or None if the order has no captured payment (none, declined, or already refunded)."""
    return await connection.fetchrow(_REFUND_PAYMENT, order_id)


async def set_account(connection: asyncpg.Connection, customer_id: str, balance: Decimal, currency: str) -> dict[str, Any]:
    """Create the account or set its balance and currency."""
    return _account_view(await connection.fetchrow(_SET_ACCOUNT, customer_id, balance, currency))


async def account(connection: asyncpg.Connection, customer_id: str) -> dict[str, Any] | None:
    """{customer, balance, currency} (JSON-ready), or None for an unknown customer."""
    row = await connection.fetchrow(_ACCOUNT, customer_id)
    return _account_view(row) if row else None


async def accounts(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    return [_account_view(row) for row in await connection.fetch(_ACCOUNTS)]


def _account_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"customer": row["customer_id"], "balance": f"{row['balance']:.2f}", "currency": row["currency"]}
