"""Admission control end to end: an order_svc whose limit is its floor (a tiny target) admits
sagas while fewer than the floor are in flight, then answers POST /orders 503 with
Retry-After and a one-line reason; every admitted saga still finishes (nothing admitted is
shed), and once they have, new orders are admitted again. The sagas are held in flight by
pausing the orders-outbox connector (their ORDER_CREATED waits in the WAL), as a
participant that cannot keep up would."""
from __future__ import annotations


import asyncpg
import httpx
import pytest

from tests.faults.test_scale_out import SecondInstance, wait_for
from tests.support.load import wait_terminal
from tests.support.saga import new_customer, new_sku, seed_account, seed_stock

pytestmark = pytest.mark.faults

ORDERS_CONNECTOR = "orders-outbox"
HEADROOM = 3
"""The instance's floor is the sagas already in flight plus this: it admits about this many."""


async def in_flight(settings) -> int:
    connection = await asyncpg.connect(settings.service_dsn("orders"))
    try:
        return await connection.fetchval("SELECT count(*) FROM orders WHERE status NOT IN ('CONFIRMED', 'CANCELLED')")
    finally:
        await connection.close()


async def test_past_its_limit_order_svc_answers_503_with_retry_after_and_sheds_no_admitted_saga(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 1000)
    await seed_account(customer, "1000.00")
    floor = await in_flight(settings) + HEADROOM
    instance = SecondInstance("order_svc", settings, env={"ORDER_SVC_ADMISSION_FLOOR": str(floor),
                                                          "ORDER_SVC_ADMISSION_TARGET_SECONDS": "0.001"})
    instance.start()
    connect = services.stack.connect
    paused = False
    try:
        async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
            async def healthy() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(healthy, "the second order_svc healthy", 60)
            order = {"customer_id": customer, "items": [{"sku": sku, "quantity": 1}], "amount": "1.00",
                     "currency": "EUR"}
            connect.pause_connector(ORDERS_CONNECTOR)
            paused = True
            admitted, refusal = [], None
            for _ in range(floor + HEADROOM):
                answer = await client.post("/orders", json=order)
                if answer.status_code == 503:
                    refusal = answer
                    break
                assert answer.status_code == 201, answer.text
                admitted.append(answer.json()["order_id"])

            assert refusal is not None, f"{len(admitted)} orders admitted with a floor of {floor}"
            assert len(admitted) >= HEADROOM - 1  # a saga that finished meanwhile may leave one more room
            assert 1 <= int(refusal.headers["Retry-After"]) <= 30
            detail = refusal.json()["detail"]
            assert detail.startswith("overloaded: ") and "\n" not in detail and "retry after" in detail

            connect.resume_connector(ORDERS_CONNECTOR)
            paused = False
            statuses = await wait_terminal(settings, admitted, timeout=60)
            assert {status for status, _ in statuses.values()} == {"CONFIRMED"}  # none shed, none timed out

            async def admitted_again() -> bool:
                answer = await client.post("/orders", json=order)
                assert answer.status_code in (201, 503), answer.text
                return answer.status_code == 201

            await wait_for(admitted_again, "an order admitted again once the sagas finished", 30)
    finally:
        if paused:
            connect.resume_connector(ORDERS_CONNECTOR)
        instance.stop()
