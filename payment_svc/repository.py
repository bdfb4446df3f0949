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

_PAYMENT = """
SELECT order_id, payment_id, status, customer_id, amount, currency, reason, detail
FROM payments WHERE order_id = $1
"""

# The order's payment row (NULLs when there is none) and its customer's account row, locked (NULLs
# when there is none): what a charge decides on, in one round trip. The lock is taken in a CTE, so
# the outer join never applies FOR UPDATE to its nullable side.
_PAYMENT_AND_LOCKED_ACCOUNT = """
WITH account AS (SELECT customer_id, balance, currency FROM accounts WHERE customer_id = $2 FOR UPDATE)
SELECT p.order_id, p.payment_id, p.status, p.customer_id, p.amount, p.currency, p.reason, p.detail,
       a.customer_id AS account_customer_id, a.balance AS account_balance, a.currency AS account_currency
FROM (VALUES (1)) AS one (x)
LEFT JOIN payments AS p ON p.order_id = $1
LEFT JOIN account AS a ON true
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


async def payment(connection: asyncpg.Connection, order_id: UUID) -> Payment | None:
    """The order's payment row, or None if payment_svc has decided nothing for it yet.
    Read it under the order's lock (a handler's transaction holds it) to act on it."""
    row = await connection.fetchrow(_PAYMENT, order_id)
    return _payment(row) if row is not None else None


async def payment_and_locked_account(
    connection: asyncpg.Connection, order_id: UUID, customer_id: str
) -> tuple[Payment | None, Account | None]:
    """`payment(order_id)` and the customer's account in one statement: the order's payment row
    (None if none yet) and the account, its row locked until the transaction ends (None for an
    unknown customer)."""
    row = await connection.fetchrow(_PAYMENT_AND_LOCKED_ACCOUNT, order_id, customer_id)
    payment = _payment(row) if row["order_id"] is not None else None
    account = (Account(row["account_customer_id"], row["account_balance"], row["account_currency"])
               if row["account_customer_id"] is not None else None)
    return payment, account


def _payment(row: asyncpg.Record) -> Payment:
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
