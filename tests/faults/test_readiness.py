"""Readiness means the service can do its job: a consumer that is assigned, has lag and settles
nothing (here: inventory_svc's handler waits on a table another session holds locked) turns
/readyz (and /health) to 503 with `progress: down` after consumer_stall_seconds, while /livez
stays 200; once the lock goes the backlog settles and readiness comes back by itself."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from shared.testing import with_database
from tests.support.load import Catalog, metric, place_orders, service_url, wait_terminal

pytestmark = pytest.mark.faults

STALL_SECONDS = 30.0
"""The running services' consumer_stall_seconds (the default)."""


async def probe(service: str, path: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{service_url(service)}{path}")
    return answer.status_code, answer.json()


async def until(service: str, path: str, status: int, timeout: float) -> tuple[float, dict]:
    began = time.monotonic()
    while True:
        code, body = await probe(service, path)
        if code == status:
            return time.monotonic() - began, body
        assert time.monotonic() - began < timeout, f"{service}{path} still {code} after {timeout:.0f}s: {body}"
        await asyncio.sleep(0.5)


async def test_a_stalled_consumer_is_not_ready_and_recovers_by_itself(services, pg_superuser_dsn) -> None:
    catalog = Catalog.new()
    await catalog.seed()
    assert (await probe("inventory_svc", "/readyz"))[0] == 200

    holder = await asyncpg.connect(with_database(pg_superuser_dsn, "inventory"))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE stock IN ACCESS EXCLUSIVE MODE")
        [order] = await place_orders(catalog, ["happy"])
        waited, body = await until("inventory_svc", "/readyz", 503, timeout=STALL_SECONDS + 30)
        print(f"inventory_svc not ready {waited:.1f}s after its handler began waiting: {body}")
        assert body["progress"] == "down" and body["lag"] >= 1 and body["database"] == "ok"
        assert (await probe("inventory_svc", "/health"))[0] == 503
        assert (await probe("inventory_svc", "/livez"))[0] == 200
        assert await metric("inventory_svc", "saga_ready") == 0
    finally:
        await holder.close()  # ends the transaction: the lock goes
    back, body = await until("inventory_svc", "/readyz", 200, timeout=60)
    print(f"inventory_svc ready again {back:.1f}s after the lock went: {body}")
    statuses = await wait_terminal(services.settings, [order.order_id], timeout=60)
    print(f"order {order.order_id}: {statuses[order.order_id]}")
