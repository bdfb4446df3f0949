"""inventory_svc's handlers and SQL against a real PostgreSQL: all-or-nothing
reservations without overselling, releases and commits that happen at most once, and a
decision per order that a redelivery of any age (its inbox row purged) cannot change."""
from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from inventory_svc import repository
from shared.migrations import service_schema_files
from inventory_svc.handlers import HANDLERS
from shared.events import (
    InventoryCommitted,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderConfirmed,
    OrderCreated,
    PaymentFailed,
    PaymentRefunded,
    decode_event,
    utc_now,
)
from shared.testing import scratch_database
from shared.tracing import new_traceparent
from shared.uow import Envelope, UnitOfWork

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def uow(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn, "inventory_svc") as dsn:
        uow = await UnitOfWork.connect(dsn, "inventory_svc", max_size=25)
        yield uow
        await uow.close()


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:10]}"


async def seed(uow: UnitOfWork, levels: dict[str, int]) -> None:
    async with uow.connection() as connection:
        for name, available in levels.items():
            await repository.set_available(connection, name, available)


async def level(uow: UnitOfWork, name: str) -> dict:
    async with uow.connection() as connection:
        return await repository.stock_level(connection, name)


async def deliver(uow: UnitOfWork, event, event_id: uuid.UUID | None = None) -> list:
    """Handle `event` as the consumer would; the events it emitted."""
    envelope = Envelope(event_id=event_id or uuid.uuid4(), event=event, traceparent=new_traceparent())
    tx = await uow.handle(envelope, HANDLERS)
    return [event for _, event in tx.emitted]


def order(items: dict[str, int], order_id: uuid.UUID | None = None) -> OrderCreated:
    return OrderCreated(
        order_id=order_id or uuid.uuid4(),
        occurred_at=utc_now(),
        customer_id="alice",
        items=[{"sku": name, "quantity": quantity} for name, quantity in items.items()],
        amount="19.99",
        currency="EUR",
    )


async def outbox_payloads(uow: UnitOfWork, order_id: uuid.UUID) -> list[dict]:
    async with uow.connection() as connection:
        rows = await connection.fetch("SELECT payload FROM outbox WHERE saga_id = $1 ORDER BY created_at", str(order_id))
    return [json.loads(row["payload"]) for row in rows]


async def test_an_order_is_reserved_whole_and_carries_the_order_on(uow):
    a, b = sku(), sku()
    await seed(uow, {a: 5, b: 3})
    created = order({a: 2, b: 3})

    [reserved] = await deliver(uow, created)

    assert isinstance(reserved, InventoryReserved)
    assert (reserved.customer_id, reserved.amount, reserved.currency) == ("alice", created.amount, "EUR")
    assert reserved.items == created.items
    assert await level(uow, a) == {"sku": a, "available": 3, "reserved": 2, "sold": 0}
    assert await level(uow, b) == {"sku": b, "available": 0, "reserved": 3, "sold": 0}
    [payload] = await outbox_payloads(uow, created.order_id)
    assert decode_event(payload) == reserved


async def reservation_row(uow: UnitOfWork, order_id: uuid.UUID):
    async with uow.connection() as connection:
        return await connection.fetchrow("SELECT * FROM reservations WHERE order_id = $1", order_id)


async def forget_inbox(uow: UnitOfWork, order_id: uuid.UUID) -> int:
    """What the retention purge does to a saga's inbox rows once they are past the dedupe window."""
    async with uow.connection() as connection:
        status = await connection.execute("DELETE FROM inbox WHERE saga_id = $1", str(order_id))
    return int(status.split()[-1])


async def test_an_unknown_sku_rejects_the_whole_order(uow):
    known, unknown = sku(), sku()
    await seed(uow, {known: 5})
    created = order({known: 1, unknown: 1})

    [rejected] = await deliver(uow, created)

    assert isinstance(rejected, InventoryRejected)
    assert (rejected.reason, rejected.skus) == ("unknown_sku", (unknown,))
    assert (await level(uow, known))["available"] == 5
    row = await reservation_row(uow, created.order_id)
    assert (row["status"], row["reason"], row["rejected_skus"]) == ("REJECTED", "unknown_sku", [unknown])


async def test_a_rejected_order_redelivered_after_its_inbox_row_was_purged_reserves_nothing(uow):
    """docs/contract/invariants.md, I8: the rejection's row, not only the inbox, guards the order —
    even once the SKUs exist and are plentiful, the same ORDER_CREATED reserves nothing and emits
    nothing."""
    short, unknown = sku(), sku()
    await seed(uow, {short: 1})
    created, event_id = order({short: 2, unknown: 1}), uuid.uuid4()
    [rejected] = await deliver(uow, created, event_id)
    await seed(uow, {short: 100, unknown: 100})
    assert await forget_inbox(uow, created.order_id) == 1

    assert await deliver(uow, created, event_id) == []
    assert await deliver(uow, created) == []  # under another event id too

    assert isinstance(rejected, InventoryRejected)
    assert await level(uow, short) == {"sku": short, "available": 100, "reserved": 0, "sold": 0}
    assert await level(uow, unknown) == {"sku": unknown, "available": 100, "reserved": 0, "sold": 0}
    assert (await reservation_row(uow, created.order_id))["status"] == "REJECTED"
    assert len(await outbox_payloads(uow, created.order_id)) == 1


@pytest.mark.parametrize("settle", ["released", "committed"])
async def test_a_settled_order_redelivered_after_its_inbox_rows_were_purged_changes_nothing(uow, settle):
    item = sku()
    await seed(uow, {item: 5})
    created = order({item: 2})
    [reserved] = await deliver(uow, created)
    settling = (PaymentFailed(order_id=created.order_id, occurred_at=utc_now(), reason="deadline_exceeded")
                if settle == "released" else OrderConfirmed(order_id=created.order_id, occurred_at=utc_now()))
    await deliver(uow, settling)
    before = await level(uow, item)
    await forget_inbox(uow, created.order_id)

    for event in (created, settling,
                  PaymentRefunded(order_id=created.order_id, occurred_at=utc_now(), payment_id=uuid.uuid4(),
                                  amount="19.99", currency="EUR")):
        assert await deliver(uow, event) == []

    assert await level(uow, item) == before
    assert (await reservation_row(uow, created.order_id))["reservation_id"] == reserved.reservation_id
    assert len(await outbox_payloads(uow, created.order_id)) == 2


async def test_the_schema_applies_again_over_itself(uow):
    """A changed schema.sql is applied again as a whole (shared/migrations.py)."""
    async with uow.connection() as connection:
        await connection.execute(service_schema_files("inventory_svc")[1].read_text())
        assert await connection.fetchval("SELECT count(*) FROM reservations") >= 0


async def test_a_short_item_rejects_the_whole_order(uow):
    plenty, short = sku(), sku()
    await seed(uow, {plenty: 10, short: 1})

    [rejected] = await deliver(uow, order({plenty: 2, short: 2}))

    assert (rejected.reason, rejected.skus) == ("out_of_stock", (short,))
    assert (await level(uow, plenty))["available"] == 10
    assert (await level(uow, short))["available"] == 1


async def test_concurrent_orders_never_oversell(uow):
    scarce = sku()
    await seed(uow, {scarce: 5})

    outcomes = await asyncio.gather(*(deliver(uow, order({scarce: 1})) for _ in range(20)))

    kinds = [type(emitted[0]) for emitted in outcomes]
    assert kinds.count(InventoryReserved) == 5
    assert kinds.count(InventoryRejected) == 15
    assert await level(uow, scarce) == {"sku": scarce, "available": 0, "reserved": 5, "sold": 0}


async def test_orders_locking_the_same_skus_in_opposite_orders_do_not_deadlock(uow):
    a, b = sku(), sku()
    await seed(uow, {a: 100, b: 100})

    orders = [order({a: 1, b: 1}) if n % 2 else order({b: 1, a: 1}) for n in range(20)]
    outcomes = await asyncio.gather(*(deliver(uow, created) for created in orders))

    assert all(isinstance(emitted[0], InventoryReserved) for emitted in outcomes)
    assert (await level(uow, a))["available"] == (await level(uow, b))["available"] == 80


async def test_a_redelivered_order_reserves_once(uow):
    item = sku()
    await seed(uow, {item: 5})
    created, event_id = order({item: 2}), uuid.uuid4()

    await deliver(uow, created, event_id)
    assert await deliver(uow, created, event_id) == []

    assert (await level(uow, item))["reserved"] == 2
    assert len(await outbox_payloads(uow, created.order_id)) == 1


@pytest.mark.parametrize("failure", [PaymentFailed, PaymentRefunded])
async def test_a_reservation_is_released_once(uow, failure):
    item = sku()
    await seed(uow, {item: 4})
    created = order({item: 3})
    [reserved] = await deliver(uow, created)
    if failure is PaymentFailed:
        compensation = PaymentFailed(order_id=created.order_id, occurred_at=utc_now(), reason="insufficient_funds")
    else:
        compensation = PaymentRefunded(
            order_id=created.order_id, occurred_at=utc_now(), payment_id=uuid.uuid4(), amount="19.99", currency="EUR"
        )

    [released] = await deliver(uow, compensation)
    assert await deliver(uow, compensation) == []  # the same fact again, under a new event id

    assert isinstance(released, InventoryReleased)
    assert released.reservation_id == reserved.reservation_id
    assert await level(uow, item) == {"sku": item, "available": 4, "reserved": 0, "sold": 0}


async def test_a_confirmed_order_sells_its_reservation_once(uow):
    item = sku()
    await seed(uow, {item: 4})
    created = order({item: 3})
    [reserved] = await deliver(uow, created)
    confirmed = OrderConfirmed(order_id=created.order_id, occurred_at=utc_now())

    [committed] = await deliver(uow, confirmed)
    assert await deliver(uow, confirmed) == []
    assert await deliver(uow, PaymentFailed(order_id=created.order_id, occurred_at=utc_now(), reason="limit_exceeded")) == []

    assert isinstance(committed, InventoryCommitted)
    assert committed.reservation_id == reserved.reservation_id
    assert await level(uow, item) == {"sku": item, "available": 1, "reserved": 0, "sold": 3}


async def test_nothing_to_release_for_an_order_that_was_never_reserved(uow):
    assert await deliver(uow, PaymentFailed(order_id=uuid.uuid4(), occurred_at=utc_now(), reason="unknown_customer")) == []


async def test_on_hand_stock_is_conserved_through_a_busy_mix(uow):
    item = sku()
    await seed(uow, {item: 10})
    orders = [order({item: 1}) for _ in range(12)]
    outcomes = await asyncio.gather(*(deliver(uow, created) for created in orders))
    reserved = [created for created, emitted in zip(orders, outcomes) if isinstance(emitted[0], InventoryReserved)]

    settle = [
        OrderConfirmed(order_id=created.order_id, occurred_at=utc_now())
        if n % 2
        else PaymentFailed(order_id=created.order_id, occurred_at=utc_now(), reason="insufficient_funds")
        for n, created in enumerate(reserved)
    ]
    await asyncio.gather(*(deliver(uow, event) for event in settle + settle))

    stock = await level(uow, item)
    assert stock["available"] + stock["reserved"] + stock["sold"] == 10
    assert stock == {"sku": item, "available": 5, "reserved": 0, "sold": 5}


async def test_setting_stock_keeps_reserved_and_sold(uow):
    item = sku()
    await seed(uow, {item: 5})
    await deliver(uow, order({item: 2}))
    async with uow.connection() as connection:
        assert await repository.set_available(connection, item, 7) == {"sku": item, "available": 7, "reserved": 2, "sold": 0}
        assert await repository.stock_level(connection, "NO-SUCH-SKU") is None
        assert item in {row["sku"] for row in await repository.stock_levels(connection)}


async def test_the_table_refuses_a_negative_count(uow):
    item = sku()
    await seed(uow, {item: 1})
    async with uow.connection() as connection:
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE stock SET available = available - 2 WHERE sku = $1", item)
