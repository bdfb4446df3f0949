"""payment_svc's SQL. Every function takes the connection of the caller's transaction.

Lock order, everywhere: the order's lock first (the saga lock the unit of work takes before
a handler runs, shared/uow.py, held until the transaction ends), then the account row. Every
decision about one order — charge, refund, void — is taken under that order's lock,
whichever event reached payment_svc first.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from payment_svc.domain import Account, Payment, PaymentStatus, UnknownCustomer

_LOCK_ACCOUNT = """
SELECT customer_id, balance, currency FROM accounts WHERE customer_id = $1 FOR UPDATE
"""

_PAYMENT = """
SELECT order_id, payment_id, status, customer_id, amount, currency, reason, detail
FROM payments WHERE order_id = $1
"""

# One row per order, rewritten as its decisions follow each other (under the order's lock).
_SAVE_PAYMENT = """
INSERT INTO payments (order_id, payment_id, status, customer_id, amount, currency, reason, detail, voided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $3 = 'VOIDED' THEN now() END)
ON CONFLICT (order_id) DO UPDATE
SET status = EXCLUDED.status, customer_id = EXCLUDED.customer_id, amount = EXCLUDED.amount,
    currency = EXCLUDED.currency, reason = EXCLUDED.reason, detail = EXCLUDED.detail, updated_at = now()
"""

# The payment's new state and the balance moved by `credit` ($9, 0: untouched), in one round trip;
# it answers how many accounts were credited.
_SAVE_PAYMENT_AND_BALANCE = """
WITH credited AS (
    UPDATE accounts SET balance = balance + $9::numeric, updated_at = now() WHERE customer_id = $4 AND $9::numeric <> 0
    RETURNING customer_id),
saved AS (""" + _SAVE_PAYMENT.strip() + """)
SELECT count(*) FROM credited
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


async def payment(connection: asyncpg.Connection, order_id: UUID) -> Payment | None:
    """The order's payment row, or None if payment_svc has decided nothing for it yet.
    Read it under the order's lock (a handler's transaction holds it) to act on it."""
    row = await connection.fetchrow(_PAYMENT, order_id)
    if row is None:
        return None
    return Payment(
        order_id=row["order_id"], payment_id=row["payment_id"], status=PaymentStatus(row["status"]),
        customer_id=row["customer_id"], amount=row["amount"], currency=row["currency"], reason=row["reason"],
        detail=row["detail"],
    )


async def save_payment(connection: asyncpg.Connection, payment: Payment, credit: Decimal = Decimal(0)) -> None:
    """Insert or rewrite the order's payment row as `payment` (a void also stamps voided_at) and
    credit (credit > 0) or debit (credit < 0) its customer's balance by `credit`, in one
    statement. The table refuses a negative balance; crediting a customer without an account is
    UnknownCustomer (money is never credited to nobody)."""
    credited = await connection.fetchval(
        _SAVE_PAYMENT_AND_BALANCE, payment.order_id, payment.payment_id, payment.status, payment.customer_id,
        payment.amount, payment.currency, payment.reason, payment.detail, credit,
    )
    if credit and credited != 1:
        raise UnknownCustomer(f"customer {payment.customer_id} has no account")


async def set_account(connection: asyncpg.Connection, customer_id: str, balance: Decimal, currency: str) -> dict[str, Any]:
    """Create the account or set its balance and currency."""
    return _account_view(await connection.fetchrow(_SET_ACCOUNT, customer_id, balance, currency))


async def account(connection: asyncpg.Connection, customer_id: str) -> dict[str, Any] | None:
    """{customer, balance, currency} (JSON-ready), or None for an unknown customer."""
    row = await connection.fetchrow(_ACCOUNT, customer_id)
    return _account_view(row) if row else None


async def accounts(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every account as {customer, balance ("12.50"), currency}, in customer order."""
    return [_account_view(row) for row in await connection.fetch(_ACCOUNTS)]


def _account_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"customer": row["customer_id"], "balance": f"{row['balance']:.2f}", "currency": row["currency"]}
