"""A replication slot lost while Kafka Connect was down, and `saga stack recover` (docs/contract/invariants.md, I5).

Connect is stopped, the orders database's slot `orders_outbox` is dropped (what a failover to a
server without it, or an operator freeing WAL during a long outage, does), orders are placed, and
Connect comes back. Debezium refuses to stream the orders connector from a slot that no longer
holds its stored position (FAILED, offset.mismatch.strategy=trust_offset) instead of skipping the
orders' rows, so the orders stay PENDING; `saga stack status` and `saga up` name the connector and
the command. `saga stack recover orders-outbox` brings it back and republishes the outbox rows:
every saga ends, each order's events are on events.order, I1–I6 hold, a second run changes
nothing but duplicates, and `saga up` is clean again. Whatever happens, the test leaves Connect
running with every connector RUNNING.
"""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from saga_cli.stack.errors import ConnectorsFailed
from saga_cli.stack.recovery import recover
from tests.support.invariants import Seeded, check_invariants
from tests.support.kafka import TopicReader
from tests.support.saga import (
    ORDER_TOPIC,
    TERMINAL,
    database,
    get_order,
    new_customer,
    new_sku,
    place_order,
    run_saga_async,
    seed_account,
    seed_stock,
    wait_for_status,
    wait_until_healthy,
)

pytestmark = pytest.mark.faults

CONNECTOR, SLOT, DATABASE = "orders-outbox", "orders_outbox", "orders"
ORDERS = 3


@pytest.mark.timeout(600)
async def test_a_dropped_slot_is_refused_then_recovered_without_a_gap(services):
    stack = services
    settings, connect = stack.settings, stack.stack.connect
    sku, customer = new_sku(), new_customer()
    await wait_until_healthy("order_svc", "inventory_svc", "payment_svc")  # another test may have one stalled
    await seed_stock(sku, 10)
    await seed_account(customer, "100.00")
    seeded = Seeded(stock={sku: 10}, balances={customer: Decimal("100.00")})
    started_ms = int(time.time() * 1000)
    since_ms = started_ms - 5_000  # the recovery republishes what was written since just before the slot was lost

    try:
        async with TopicReader(settings.kafka_bootstrap, ORDER_TOPIC) as reader:
            # --- the slot is lost while Connect is down, and orders are placed ----------------------------
            t0 = time.monotonic()
            await asyncio.to_thread(connect.stop)
            assert connect.find() is None
            await wait_slot(stack, active=False)
            async with superuser(stack) as admin:
                await admin.execute("SELECT pg_drop_replication_slot($1)", SLOT)
            print(f"injected: kafka-connect stopped, slot {SLOT} dropped ({time.monotonic() - t0:.1f}s)")

            order_ids = [await place_order(customer, {sku: 1}, "10.00") for _ in range(ORDERS)]
            created = await order_created_rows(settings, order_ids)
            assert set(created) == set(order_ids), created  # each ORDER_CREATED sits in the orders outbox

            # --- Connect back: the orders connector refuses, the others stream -------------------------------
            t0 = time.monotonic()
            await asyncio.to_thread(connect.start)
            with pytest.raises(ConnectorsFailed) as refused:
                await asyncio.to_thread(connect.register_connectors)
            assert [(f.connector, f.slot_lost) for f in refused.value.failures] == [(CONNECTOR, True)]
            print(f"kafka-connect back in {time.monotonic() - t0:.1f}s; {refused.value}")
            await wait_slot(stack, active=True, slot="inventory_outbox")
            await wait_slot(stack, active=True, slot="payments_outbox")
            assert await slot_exists(stack) is False  # Debezium refused before creating one
            for order_id in order_ids:
                assert (await get_order(order_id)).json()["status"] == "PENDING"
            assert not {r.event_id for r in reader.records} & set(created.values())

            # --- what the CLI says about it ------------------------------------------------------------------
            status = await run_saga_async("stack", "status")
            assert status.returncode == 0, status.stderr
            assert f"saga stack recover {CONNECTOR}" in status.stdout, status.stdout
            document = json.loads((await run_saga_async("stack", "status", "--json")).stdout)
            connect_status = next(c for c in document["components"] if c["name"] == "kafka-connect")
            [failure] = connect_status["connector_failures"]
            assert (failure["connector"], failure["slot_lost"], failure["fix"]) == (
                CONNECTOR, True, f"saga stack recover {CONNECTOR}")
            up = await run_saga_async("up", timeout=300)
            assert up.returncode != 0
            assert "Traceback" not in up.stderr
            [said] = [line for line in up.stderr.splitlines() if line.startswith("saga: ")]
            assert said.endswith(f"recover with: saga stack recover {CONNECTOR}"), up.stderr
            print(f"saga up: {said}")

            # --- the recovery ---------------------------------------------------------------------------------
            t0 = time.monotonic()
            done = await run_saga_async("stack", "recover", CONNECTOR, "--since", str(since_ms), "--json", timeout=300)
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            print(f"saga stack recover took {time.monotonic() - t0:.1f}s (its own count {report['seconds']}s), "
                  f"republished {report['republished']} rows:\n{done.stderr}")
            assert report["slot_created"] is True
            assert report["republished"] >= ORDERS
            assert report["seen_on_topics"] == report["republished"]
            assert ORDER_TOPIC in report["topics"]

            outcomes = {order_id: (await wait_for_status(order_id, TERMINAL))["status"] for order_id in order_ids}
            print(f"orders after the recovery: {outcomes} ({time.monotonic() - t0:.1f}s after it began)")
            records = await reader.read_until(lambda rs: every_saga_ended(rs, order_ids, outcomes), timeout=60)
            for order_id in order_ids:
                mine = [r for r in records if r.key == order_id]
                assert created[order_id] in {r.event_id for r in mine}, f"ORDER_CREATED of {order_id} not published"
        assert await check_invariants(settings, order_ids, seeded, since_ms=started_ms) == []

        # --- again: only duplicates --------------------------------------------------------------------------
        again = await run_saga_async("stack", "recover", CONNECTOR, "--since", str(since_ms), "--json", timeout=300)
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert second["slot_created"] is False and second["republished"] >= ORDERS
        assert second["seen_on_topics"] == second["republished"]
        print(f"second run: {second['republished']} rows republished in {second['seconds']}s")
        for order_id, status in outcomes.items():
            assert (await get_order(order_id)).json()["status"] == status
        assert await check_invariants(settings, order_ids, seeded, since_ms=started_ms) == []

        up = await run_saga_async("up", timeout=300)
        assert up.returncode == 0, up.stderr
        document = json.loads((await run_saga_async("stack", "status", "--json")).stdout)
        connect_status = next(c for c in document["components"] if c["name"] == "kafka-connect")
        assert set(connect_status["connectors"].values()) == {"RUNNING"}
        assert connect_status["connector_failures"] == []
    finally:
        await asyncio.to_thread(leave_healthy, stack, since_ms)


# --- helpers ---------------------------------------------------------------------------------------

def every_saga_ended(records, order_ids, outcomes) -> bool:
    """Each order's ORDER_CREATED and its final event (ORDER_CONFIRMED or ORDER_CANCELLED) were read on events.order."""
    final = {"CONFIRMED": "ORDER_CONFIRMED", "CANCELLED": "ORDER_CANCELLED"}
    seen = {(r.key, r.headers.get("eventType")) for r in records}
    return all({(o, "ORDER_CREATED"), (o, final[outcomes[o]])} <= seen for o in order_ids)


async def order_created_rows(settings, order_ids) -> dict[str, str]:
    """order id → the id of its ORDER_CREATED row in the orders outbox."""
    async with database(settings, DATABASE) as db:
        rows = await db.fetch("SELECT saga_id, id FROM outbox WHERE event_type = 'ORDER_CREATED' AND saga_id = ANY($1::text[])",
                              order_ids)
    return {row["saga_id"]: str(row["id"]) for row in rows}


class superuser:
    """A superuser connection to the orders database (a logical slot is dropped from its own database)."""

    def __init__(self, stack, name: str = DATABASE) -> None:
        self.dsn = urlunsplit(urlsplit(stack.pg_superuser_dsn)._replace(path=f"/{name}"))

    async def __aenter__(self) -> asyncpg.Connection:
        self.connection = await asyncpg.connect(self.dsn)
        return self.connection

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()


async def slot_exists(stack, slot: str = SLOT) -> bool:
    async with superuser(stack) as admin:
        return bool(await admin.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot))


async def wait_slot(stack, *, active: bool, slot: str = SLOT, timeout: float = 60.0) -> None:
    """Until `slot` is streaming to a walsender (`active`) or free."""
    deadline = time.monotonic() + timeout
    async with superuser(stack) as admin:
        while (await admin.fetchval("SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot) or False) != active:
            assert time.monotonic() < deadline, f"slot {slot} not {'active' if active else 'free'} within {timeout:.0f}s"
            await asyncio.sleep(0.2)


def leave_healthy(stack, since_ms: int) -> None:
    """Kafka Connect running and every connector RUNNING: a connector that still fails is recovered."""
    connect = stack.stack.connect
    if connect.find() is None:
        connect.start()
    try:
        connect.register_connectors()
    except ConnectorsFailed as failed:
        for failure in failed.failures:
            recover(stack.settings, failure.connector, since_ms=since_ms - 60_000, say=print)
        connect.register_connectors()
