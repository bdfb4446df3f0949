"""Redelivery at any age (docs/contract/invariants.md, I8): the business rows, not only the
inbox, make a late duplicate a no-op.

A rejected order (out of stock) and a declined one (insufficient funds) run to CANCELLED on
the real stack. Then what the retention purge does past the dedupe window is done by hand:
every inbox row of both sagas is deleted, in all three databases. The stock is refilled and
the customer's balance raised, so that a handler that only trusted its inbox would now
reserve and charge. Every event of both sagas is published again, exactly as it was (key,
value, signed headers), and each consumer group is waited for until it is past the copies:
no row of either saga changes, nothing is dead-lettered, and the invariants hold.
"""
from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
import pytest

from shared.testing import with_database
from tests.support.invariants import Seeded, check_invariants
from tests.support.kafka import TopicReader
from tests.support.saga import (
    ALL_TOPICS,
    DEADLETTER_TOPIC,
    SAGA_TOPICS,
    new_customer,
    new_sku,
    of_saga,
    place_order,
    redeliver,
    saga_events,
    saga_state,
    seed_account,
    seed_stock,
    types,
    wait_until_handled,
)

pytestmark = pytest.mark.faults

CONSUMERS = {
    "events.order": ("order_svc", "inventory_svc", "payment_svc"),
    "events.inventory": ("order_svc", "payment_svc"),
    "events.payment": ("order_svc", "inventory_svc"),
}
"""topic → the consumer groups that read it."""

DATABASES = ("orders", "inventory", "payments")


async def forget_inbox_rows(superuser_dsn: str, order_ids: list[str]) -> dict[str, int]:
    """What the retention purge does once the sagas' inbox rows are past the dedupe window: database → rows deleted."""
    deleted = {}
    for database in DATABASES:
        connection = await asyncpg.connect(with_database(superuser_dsn, database))
        try:
            status = await connection.execute("DELETE FROM inbox WHERE saga_id = ANY($1::text[])", order_ids)
        finally:
            await connection.close()
        deleted[database] = int(status.split()[-1])
    return deleted


async def dead_letters_of(superuser_dsn: str, order_ids: list[str]) -> int:
    count = 0
    for database in DATABASES:
        connection = await asyncpg.connect(with_database(superuser_dsn, database))
        try:
            count += await connection.fetchval("SELECT count(*) FROM dead_letters WHERE message_key = ANY($1::text[])",
                                               order_ids)
        finally:
            await connection.close()
    return count


async def test_a_rejected_and_a_declined_saga_redelivered_after_their_inbox_rows_were_purged_change_nothing(
    services, pg_superuser_dsn
):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 1)
    await seed_account(customer, "10.00")
    started_ms = int(time.time() * 1000)

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        rejected = await place_order(customer, {sku: 2}, "5.00")  # 2 units of 1: out_of_stock
        rejected_events = await saga_events(reader, rejected, until="ORDER_CANCELLED")
        declined = await place_order(customer, {sku: 1}, "40.00")  # 40.00 of 10.00: insufficient_funds
        declined_events = await saga_events(reader, declined, until="ORDER_CANCELLED")
        assert types(rejected_events) == ["ORDER_CREATED", "INVENTORY_REJECTED", "ORDER_CANCELLED"]
        assert set(types(declined_events)) == {
            "ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED", "ORDER_CANCELLED"}
        order_ids = [rejected, declined]

        # Whatever would be reserved or charged now is there: only the business rows stand in the way.
        await seed_stock(sku, 100)
        await seed_account(customer, "1000.00")
        before = {o: await saga_state(settings, o, [sku], customer) for o in order_ids}
        purged = await forget_inbox_rows(pg_superuser_dsn, order_ids)
        print(f"injected: inbox rows of both sagas deleted {purged}")
        # order_svc: the rejection, the decline, the release; inventory_svc: both ORDER_CREATED and the
        # decline; payment_svc: the one reservation
        assert purged == {"orders": 3, "inventory": 3, "payments": 1}

        copies = []
        for record in rejected_events + declined_events:
            partition, offset = await redeliver(settings.kafka_bootstrap, record)
            copies.append((record, partition, offset))
        for record, partition, offset in copies:
            for group in CONSUMERS[record.topic]:
                await wait_until_handled(settings.kafka_bootstrap, group, record.topic, partition, offset)
        print(f"redelivered {len(copies)} events: {', '.join(r.headers['eventType'] for r, _, _ in copies)}; "
              "every consumer group is past them")

        after = {o: await saga_state(settings, o, [sku], customer) for o in order_ids}
        assert after == before
        assert before[rejected].reservation["status"] == "REJECTED"
        assert before[rejected].payment is None
        assert (before[declined].payment["status"], before[declined].payment["reason"]) == ("DECLINED", "insufficient_funds")
        assert before[declined].reservation["status"] == "RELEASED"
        assert before[declined].stock[sku] == (100, 0, 0) and before[declined].balance == Decimal("1000.00")
        assert await dead_letters_of(pg_superuser_dsn, order_ids) == 0
        assert not [r for o in order_ids for r in of_saga(reader.records, o, [DEADLETTER_TOPIC])]
        originals = {r.event_id for r in rejected_events + declined_events}
        assert {r.event_id for o in order_ids for r in of_saga(reader.records, o, SAGA_TOPICS)} == originals

    seeded = Seeded(stock={sku: 100}, balances={customer: Decimal("1000.00")})
    assert await check_invariants(settings, order_ids, seeded, since_ms=started_ms) == []
