"""Fifty orders race for the last seven units of a SKU, in the middle of a mixed load.

All fifty are placed at once while a few hundred other sagas run. Exactly seven are
confirmed and forty-three cancelled out_of_stock; the SKU ends with 0 available, 0
reserved and 7 sold, and no sample taken during the race ever shows a negative count
or units that do not add up to seven. I1–I6 hold for every saga.
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from decimal import Decimal

import asyncpg
import httpx
import pytest

from tests.support.invariants import Seeded
from tests.support.load import Catalog, Placed, service_url
from tests.support.under_load import LoadRun, run_under_load

pytestmark = pytest.mark.faults

RACERS, UNITS = 50, 7


async def test_fifty_orders_for_the_last_seven_units_sell_exactly_seven(services):
    settings = services.settings
    catalog = Catalog.new(contended_units=40)
    sku, customer = f"last-{catalog.tag}", f"racer-{catalog.tag}"
    seeded = Seeded(stock={**catalog.seeded.stock, sku: UNITS},
                    balances={**catalog.seeded.balances, customer: Decimal("10000.00")})
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.put(f"{service_url('inventory_svc')}/stock/{sku}", json={"available": UNITS})).raise_for_status()
        (await client.put(f"{service_url('payment_svc')}/accounts/{customer}",
                          json={"balance": "10000.00", "currency": "EUR"})).raise_for_status()
    samples: list[tuple[int, int, int]] = []
    racers: list[Placed] = []

    async def race(run: LoadRun) -> list[Placed]:
        await run.placed_at_least(80)
        body = {"customer_id": customer, "items": [{"sku": sku, "quantity": 1}], "amount": "9.00", "currency": "EUR"}
        async with httpx.AsyncClient(base_url=service_url("order_svc"), timeout=30) as client:
            answers = await asyncio.gather(*(
                client.post("/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}) for _ in range(RACERS)))
        assert [a.status_code for a in answers] == [201] * RACERS
        racers.extend(Placed(a.json()["order_id"], "race") for a in answers)
        run.injected(f"{RACERS} orders placed at once for the last {UNITS} units of {sku}")
        return list(racers)

    async def nothing(run: LoadRun) -> None:
        return None

    watching = asyncio.create_task(watch_stock(settings, sku, samples))
    try:
        outcome = await run_under_load(settings, nothing, sagas=250, per_second=25, catalog=catalog,
                                       extra_orders=race, seeded=seeded)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    ends = Counter(outcome.statuses[p.order_id] for p in racers)
    print(f"the race: {dict(ends)}; stock of {sku} sampled {len(samples)} times, final {samples[-1] if samples else None}")
    assert ends == {("CONFIRMED", None): UNITS, ("CANCELLED", "out_of_stock"): RACERS - UNITS}
    assert samples and all(min(s) >= 0 and sum(s) == UNITS for s in samples), [s for s in samples if min(s) < 0 or sum(s) != UNITS]
    assert samples[-1] == (0, 0, UNITS)
    assert outcome.violations == []


async def watch_stock(settings, sku: str, samples: list[tuple[int, int, int]]) -> None:
    """Sample (available, reserved, sold) of `sku` as fast as the database answers, until cancelled."""
    connection = await asyncpg.connect(settings.service_dsn("inventory"))
    try:
        while True:
            row = await connection.fetchrow("SELECT available, reserved, sold FROM stock WHERE sku = $1", sku)
            if row is not None:
                samples.append((row["available"], row["reserved"], row["sold"]))
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
