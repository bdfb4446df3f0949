"""payment_svc's handlers and SQL against a real PostgreSQL: charges exact to the cent,
declines with their reasons, a refund exactly once, no overdraft under concurrency, voids
that decline a later reservation, one outcome whichever of a charge and a void comes first,
and a decision per order that a redelivery of any age (its inbox row purged) cannot change."""
from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from payment_svc import repository
from payment_svc.bootstrap import bind_handlers
from shared.migrations import service_schema_files
from shared.events import (
    InventoryReserved,
    OrderConfirmationFailed,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    utc_now,
)
from shared.settings import PaymentSettings
from shared.testing import scratch_database
from shared.tracing import new_traceparent
from shared.uow import Envelope, UnitOfWork

pytestmark = pytest.mark.integration

HANDLERS = bind_handlers(PaymentSettings(per_order_limit="500.00"))


@pytest.fixture(scope="module")
async def uow(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn, "payment_svc") as dsn:
        uow = await UnitOfWork.connect(dsn, "payment_svc", max_size=25)
        yield uow
        await uow.close()


async def customer(uow: UnitOfWork, balance: str, currency: str = "EUR") -> str:
    name = f"cust-{uuid.uuid4().hex[:10]}"
    async with uow.connection() as connection:
        await repository.set_account(connection, name, Decimal(balance), currency)
    return name


async def balance(uow: UnitOfWork, name: str) -> str:
    async with uow.connection() as connection:
        return (await repository.account(connection, name))["balance"]


async def payment_row(uow: UnitOfWork, order_id: uuid.UUID):
    async with uow.connection() as connection:
        return await connection.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)


async def deliver(uow: UnitOfWork, event, event_id: uuid.UUID | None = None) -> list:
    envelope = Envelope(event_id=event_id or uuid.uuid4(), event=event, traceparent=new_traceparent())
    tx = await uow.handle(envelope, HANDLERS)
    return [event for _, event in tx.emitted]


def reserved(name: str, amount: str, currency: str = "EUR") -> InventoryReserved:
    return InventoryReserved(
        order_id=uuid.uuid4(),
        occurred_at=utc_now(),
        reservation_id=uuid.uuid4(),
        items=[{"sku": "WIDGET-1", "quantity": 1}],
        customer_id=name,
        amount=amount,
        currency=currency,
    )


def confirmation_failed(order_id: uuid.UUID, reason: str = "cancelled_by_customer") -> OrderConfirmationFailed:
    return OrderConfirmationFailed(order_id=order_id, occurred_at=utc_now(), reason=reason)


async def forget_inbox(uow: UnitOfWork, order_id: uuid.UUID) -> int:
    """What the retention purge does to a saga's inbox rows once they are past the dedupe window."""
    async with uow.connection() as connection:
        status = await connection.execute("DELETE FROM inbox WHERE saga_id = $1", str(order_id))
    return int(status.split()[-1])


async def outbox_types(uow: UnitOfWork, order_id: uuid.UUID) -> list[str]:
    async with uow.connection() as connection:
        rows = await connection.fetch("SELECT event_type FROM outbox WHERE saga_id = $1 ORDER BY created_at", str(order_id))
    return [row["event_type"] for row in rows]


async def test_a_charge_debits_the_account_to_the_cent(uow):
    name = await customer(uow, "100.00")
    event = reserved(name, "33.33")

    [completed] = await deliver(uow, event)
    await deliver(uow, reserved(name, "0.10"))
    await deliver(uow, reserved(name, "0.20"))

    assert isinstance(completed, PaymentCompleted)
    assert (completed.amount, completed.currency) == (Decimal("33.33"), "EUR")
    assert await balance(uow, name) == "66.37"
    row = await payment_row(uow, event.order_id)
    assert (row["payment_id"], row["status"], row["amount"]) == (completed.payment_id, "CAPTURED", Decimal("33.33"))


@pytest.mark.parametrize(
    ("account_balance", "account_currency", "amount", "currency", "reason"),
    [
        (None, "EUR", "10.00", "EUR", "unknown_customer"),
        ("1000.00", "EUR", "500.01", "EUR", "limit_exceeded"),
        ("10.00", "EUR", "10.01", "EUR", "insufficient_funds"),
        ("1000.00", "EUR", "10.00", "USD", "insufficient_funds"),
    ],
)
async def test_a_declined_charge_takes_nothing(uow, account_balance, account_currency, amount, currency, reason):
    name = await customer(uow, account_balance, account_currency) if account_balance else "nobody-" + uuid.uuid4().hex
    event = reserved(name, amount, currency)

    [failed] = await deliver(uow, event)

    assert isinstance(failed, PaymentFailed)
    assert failed.reason == reason
    if account_balance:
        assert await balance(uow, name) == account_balance
    row = await payment_row(uow, event.order_id)
    assert (row["status"], row["reason"]) == ("DECLINED", reason)


async def test_the_whole_balance_may_be_spent(uow):
    name = await customer(uow, "40.00")
    [completed] = await deliver(uow, reserved(name, "40.00"))
    assert isinstance(completed, PaymentCompleted)
    assert await balance(uow, name) == "0.00"


async def test_a_redelivered_reservation_charges_once(uow):
    name = await customer(uow, "100.00")
    event, event_id = reserved(name, "25.00"), uuid.uuid4()

    await deliver(uow, event, event_id)
    assert await deliver(uow, event, event_id) == []
    assert await deliver(uow, event) == []  # the same reservation under a new event id

    assert await balance(uow, name) == "75.00"


async def test_concurrent_charges_never_overdraw(uow):
    name = await customer(uow, "55.00")

    outcomes = await asyncio.gather(*(deliver(uow, reserved(name, "10.00")) for _ in range(10)))

    kinds = [type(emitted[0]) for emitted in outcomes]
    assert kinds.count(PaymentCompleted) == 5
    assert kinds.count(PaymentFailed) == 5
    assert await balance(uow, name) == "5.00"


async def test_a_refund_happens_exactly_once(uow):
    name = await customer(uow, "100.00")
    event = reserved(name, "12.34")
    [completed] = await deliver(uow, event)

    refunds = await asyncio.gather(*(deliver(uow, confirmation_failed(event.order_id)) for _ in range(5)))

    emitted = [e for batch in refunds for e in batch]
    assert len(emitted) == 1
    [refunded] = emitted
    assert isinstance(refunded, PaymentRefunded)
    assert (refunded.payment_id, refunded.amount, refunded.currency) == (completed.payment_id, Decimal("12.34"), "EUR")
    assert await balance(uow, name) == "100.00"
    assert (await payment_row(uow, event.order_id))["status"] == "REFUNDED"


async def test_no_refund_for_a_declined_payment(uow):
    name = await customer(uow, "1.00")
    event = reserved(name, "2.00")
    await deliver(uow, event)

    assert await deliver(uow, confirmation_failed(event.order_id)) == []
    assert await balance(uow, name) == "1.00"
    assert (await payment_row(uow, event.order_id))["status"] == "DECLINED"


@pytest.mark.parametrize("reason", ["cancelled_by_customer", "deadline_exceeded"])
async def test_an_order_given_up_before_its_reservation_is_voided_and_then_declined(uow, reason):
    name = await customer(uow, "100.00")
    event = reserved(name, "40.00")

    assert await deliver(uow, confirmation_failed(event.order_id, reason)) == []
    void = await payment_row(uow, event.order_id)
    assert (void["status"], void["reason"], void["customer_id"], void["amount"]) == ("VOIDED", reason, None, None)
    assert void["voided_at"] is not None
    [failed] = await deliver(uow, event)

    assert (type(failed), failed.reason) == (PaymentFailed, reason)
    assert await balance(uow, name) == "100.00"
    row = await payment_row(uow, event.order_id)
    assert (row["status"], row["reason"], row["customer_id"], row["amount"]) == ("DECLINED", reason, name, Decimal("40.00"))
    assert (row["payment_id"], row["voided_at"]) == (void["payment_id"], void["voided_at"])
    assert await outbox_types(uow, event.order_id) == ["PAYMENT_FAILED"]


async def test_a_charge_and_a_void_arriving_together_agree(uow):
    """docs/contract/flows.md, Cancellation and the deadline: under one lock per order, whichever
    reaches payment_svc first: charged then refunded, or voided then declined — the money is back
    and exactly one event asks inventory to release."""
    name = await customer(uow, "1000.00")
    events = [reserved(name, "10.00") for _ in range(20)]

    outcomes = await asyncio.gather(*(
        asyncio.gather(deliver(uow, event), deliver(uow, confirmation_failed(event.order_id))) for event in events
    ))

    assert await balance(uow, name) == "1000.00"
    seen = set()
    for event, (charged, given_up) in zip(events, outcomes):
        kinds = tuple(sorted(type(e).__name__ for e in charged + given_up))
        status = (await payment_row(uow, event.order_id))["status"]
        assert (status, kinds) in {
            ("REFUNDED", ("PaymentCompleted", "PaymentRefunded")),
            ("DECLINED", ("PaymentFailed",)),
        }, (status, kinds)
        seen.add(status)
    print(f"outcomes of {len(events)} races: {sorted(seen)}")


async def test_a_declined_order_redelivered_after_its_inbox_row_was_purged_is_not_charged(uow):
    """docs/contract/invariants.md, I8: the payment row, not only the inbox, guards the order —
    even once the customer could pay, the same INVENTORY_RESERVED charges nothing and emits nothing."""
    name = await customer(uow, "5.00")
    event, event_id = reserved(name, "40.00"), uuid.uuid4()
    [failed] = await deliver(uow, event, event_id)
    async with uow.connection() as connection:
        await repository.set_account(connection, name, Decimal("500.00"), "EUR")
    assert await forget_inbox(uow, event.order_id) == 1

    assert await deliver(uow, event, event_id) == []
    assert await deliver(uow, event) == []

    assert failed.reason == "insufficient_funds"
    assert await balance(uow, name) == "500.00"
    assert (await payment_row(uow, event.order_id))["status"] == "DECLINED"
    assert await outbox_types(uow, event.order_id) == ["PAYMENT_FAILED"]


@pytest.mark.parametrize("given_up_first", [True, False], ids=["voided", "refunded"])
async def test_a_given_up_order_redelivered_after_its_inbox_rows_were_purged_changes_nothing(uow, given_up_first):
    name = await customer(uow, "100.00")
    event = reserved(name, "40.00")
    steps = [confirmation_failed(event.order_id), event]
    for step in steps if given_up_first else reversed(steps):
        await deliver(uow, step)
    before = (await balance(uow, name), dict(await payment_row(uow, event.order_id)), await outbox_types(uow, event.order_id))
    await forget_inbox(uow, event.order_id)

    for step in steps + steps:
        assert await deliver(uow, step) == []

    assert before[0] == "100.00"
    assert (await balance(uow, name), dict(await payment_row(uow, event.order_id)),
            await outbox_types(uow, event.order_id)) == before


async def test_the_schema_applies_again_over_itself(uow):
    """A changed schema.sql is applied again as a whole (shared/migrations.py)."""
    async with uow.connection() as connection:
        await connection.execute(service_schema_files("payment_svc")[1].read_text())
        assert await connection.fetchval("SELECT count(*) FROM payments") > 0


async def test_money_is_conserved_per_customer(uow):
    name = await customer(uow, "250.00")
    charges = [reserved(name, amount) for amount in ("19.99", "0.01", "80.00", "150.01", "30.00")]
    outcomes = [await deliver(uow, event) for event in charges]
    for event in charges[:2]:
        await deliver(uow, confirmation_failed(event.order_id))

    async with uow.connection() as connection:
        totals = await connection.fetchrow(
            """SELECT coalesce(sum(amount) FILTER (WHERE status IN ('CAPTURED', 'REFUNDED')), 0) AS captured,
                      coalesce(sum(amount) FILTER (WHERE status = 'REFUNDED'), 0) AS refunded
               FROM payments WHERE customer_id = $1""",
            name,
        )
    assert [type(batch[0]) for batch in outcomes].count(PaymentFailed) == 1  # 150.01 > 150.00 left
    assert Decimal(await balance(uow, name)) + totals["captured"] - totals["refunded"] == Decimal("250.00")
    assert await balance(uow, name) == "140.00"


async def test_accounts_are_listed_and_set(uow):
    name = await customer(uow, "5.50", "GBP")
    async with uow.connection() as connection:
        assert await repository.account(connection, name) == {"customer": name, "balance": "5.50", "currency": "GBP"}
        assert await repository.set_account(connection, name, Decimal("7"), "EUR") == {
            "customer": name, "balance": "7.00", "currency": "EUR"
        }
        assert name in {row["customer"] for row in await repository.accounts(connection)}
        assert await repository.account(connection, "no-such-customer") is None
