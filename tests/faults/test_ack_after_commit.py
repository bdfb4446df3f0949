"""A consumer acks a message only after the transaction it caused committed.

inventory_svc is made to hang inside its transaction (its stock table is locked by
another session), so its handler cannot commit: the consumer group's committed offset
must stay at the message. Then the worker is killed there with SIGKILL — before its
commit — and restarted: the message is delivered again and handled exactly once.
"""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from saga_cli import services as service_processes
from saga_cli.services import Service
from shared.testing import with_database
from tests.support.kafka import TopicReader, eventually
from tests.support import saga

pytestmark = pytest.mark.faults

OBSERVATION_SECONDS = 4.0  # several of faust's 0.5 s commit intervals


async def test_offset_stays_until_commit_and_a_kill_before_commit_redelivers(services):
    settings = services.settings
    sku, customer = saga.new_sku(), saga.new_customer()
    await saga.seed_stock(sku, 3)
    await saga.seed_account(customer, "100.00")

    blocker = await asyncpg.connect(with_database(services.pg_superuser_dsn, "inventory"))
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE stock IN EXCLUSIVE MODE")  # SELECT … FOR UPDATE on stock now waits
    inventory = Service("inventory_svc", settings)
    try:
        async with TopicReader(settings.kafka_bootstrap, saga.ORDER_TOPIC, saga.INVENTORY_TOPIC) as reader:
            order_id = await saga.place_order(customer, {sku: 1}, "10.00")
            created = saga.by_type(await saga.saga_events(reader, order_id, until="ORDER_CREATED"), "ORDER_CREATED")
            await _until_waiting_on_lock(blocker)

            deadline = time.monotonic() + OBSERVATION_SECONDS
            while time.monotonic() < deadline:
                committed = await saga.committed_offset(settings.kafka_bootstrap, "inventory_svc", created.topic, created.partition)
                assert committed <= created.offset, "the offset moved past a message whose transaction has not committed"
                await asyncio.sleep(0.25)

            victim = inventory.find()
            victim.kill()
            victim.wait(10)
            print(f"injected: kill -9 inventory_svc pid {victim.pid} inside its transaction for {order_id}")
        await lock.rollback()
        await asyncio.to_thread(service_processes.up, settings, print)  # starts only what is down, like `saga up`

        order = await saga.wait_for_status(order_id)
        await saga.wait_until_handled(settings.kafka_bootstrap, "inventory_svc", created.topic, created.partition, created.offset)
        assert order["status"] == "CONFIRMED"
        await eventually(lambda: saga.stock(settings, sku), what="stock committed")
        assert await eventually(lambda: _equals(saga.stock(settings, sku), (2, 0, 1)), what="stock 2/0/1")
        async with saga.database(settings, "inventory") as db:
            reserved = await db.fetchval(
                "SELECT count(*) FROM outbox WHERE saga_id = $1 AND event_type = 'INVENTORY_RESERVED'", order_id
            )
        assert reserved == 1, "the redelivered ORDER_CREATED was handled twice"
    finally:
        if not blocker.is_closed():
            await blocker.close()
        await asyncio.to_thread(service_processes.up, settings, print)


async def _equals(value, expected) -> bool:
    return await value == expected


async def _until_waiting_on_lock(blocker: asyncpg.Connection, timeout: float = 30.0) -> None:
    """Until inventory_svc's handler is inside its transaction, waiting for our lock."""
    deadline = time.monotonic() + timeout
    while not await blocker.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'inventory_svc' AND wait_event_type = 'Lock'"
    ):
        if time.monotonic() > deadline:
            raise AssertionError("inventory_svc never reached the locked stock table")
        await asyncio.sleep(0.1)
