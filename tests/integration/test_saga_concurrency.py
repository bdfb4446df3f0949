"""Many sagas racing for the same stock or the same money: never oversold, never negative (I2, I3), each one finished (I1)."""
from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from decimal import Decimal

import pytest

from tests.support.kafka import TopicReader
from tests.support.saga import (
    ALL_TOPICS,
    balance,
    database,
    finished_sagas,
    new_customer,
    new_sku,
    order_row,
    payment,
    place_order,
    seed_account,
    seed_stock,
    stock,
)

pytestmark = pytest.mark.integration

ORDERS, UNITS = 20, 5
HAPPY = ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED", "INVENTORY_COMMITTED"]
REJECTED = ["ORDER_CREATED", "INVENTORY_REJECTED", "ORDER_CANCELLED"]
DECLINED = ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED", "ORDER_CANCELLED"]


async def test_twenty_orders_for_five_units_sell_exactly_five(services):
    settings = services.settings
    sku, customers = new_sku(), [new_customer() for _ in range(ORDERS)]
    await seed_stock(sku, UNITS)
    await asyncio.gather(*(seed_account(customer, "1000.00") for customer in customers))
    samples: list[tuple[int, int, int]] = []
    watching = asyncio.create_task(_watch_stock(settings, sku, samples))

    try:
        async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
            order_ids = await asyncio.gather(*(place_order(customer, {sku: 1}, "10.00") for customer in customers))
            sequences = await finished_sagas(reader, order_ids, [HAPPY, REJECTED])
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    assert Counter(sequences.values()) == {tuple(HAPPY): UNITS, tuple(REJECTED): ORDERS - UNITS}
    orders = {o: await order_row(settings, o) for o in order_ids}
    assert Counter((row["status"], row["reason"]) for row in orders.values()) == {
        ("CONFIRMED", None): UNITS,
        ("CANCELLED", "out_of_stock"): ORDERS - UNITS,
    }
    assert await stock(settings, sku) == (0, 0, UNITS)
    assert samples, "the stock was never sampled"
    assert all(min(sample) >= 0 and sum(sample) == UNITS for sample in samples), samples
    for order_id, row in orders.items():
        paid = await payment(settings, order_id)
        left = await balance(settings, row["customer_id"])
        if row["status"] == "CONFIRMED":
            assert (paid["status"], paid["amount"], left) == ("CAPTURED", Decimal("10.00"), Decimal("990.00"))
        else:
            assert (paid, left) == (None, Decimal("1000.00"))


async def _watch_stock(settings, sku: str, samples: list[tuple[int, int, int]]) -> None:
    """Sample (available, reserved, sold) of `sku` as fast as the database answers, until cancelled."""
    async with database(settings, "inventory") as db:
        while True:
            row = await db.fetchrow("SELECT available, reserved, sold FROM stock WHERE sku = $1", sku)
            samples.append((row["available"], row["reserved"], row["sold"]))
            await asyncio.sleep(0.005)


async def test_twenty_orders_against_a_balance_for_five_charge_exactly_five(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, ORDERS)
    await seed_account(customer, "50.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        order_ids = await asyncio.gather(*(place_order(customer, {sku: 1}, "10.00") for _ in range(ORDERS)))
        sequences = await finished_sagas(reader, order_ids, [HAPPY, DECLINED])

    assert Counter(sequences.values()) == {tuple(HAPPY): 5, tuple(DECLINED): ORDERS - 5}
    orders = [await order_row(settings, o) for o in order_ids]
    assert Counter((row["status"], row["reason"]) for row in orders) == {
        ("CONFIRMED", None): 5,
        ("CANCELLED", "insufficient_funds"): ORDERS - 5,
    }
    payments = Counter((p["status"], p["amount"]) for p in [await payment(settings, o) for o in order_ids])
    assert payments == {("CAPTURED", Decimal("10.00")): 5, ("DECLINED", Decimal("10.00")): ORDERS - 5}
    assert await balance(settings, customer) == Decimal("0.00")  # never below zero, nothing left over
    assert await stock(settings, sku) == (ORDERS - 5, 0, 5)
