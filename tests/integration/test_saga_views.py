"""Seeing sagas on the real stack: order_svc's GET /orders by state and GET /orders/{id}/timeline,
and `saga sagas` as a user runs it. A saga is kept in flight by freezing inventory_svc for a
moment (at most FREEZE_LIMIT seconds, so only HTTP calls happen meanwhile)."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from tests.support.saga import (
    SERVICE_URLS,
    frozen,
    new_customer,
    new_sku,
    place_order,
    run_saga_async,
    seed_account,
    seed_stock,
    wait_for_status,
)

pytestmark = pytest.mark.integration

LOTS = "1000"  # other people's sagas share the stack: look far enough back to find ours


async def get(path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=SERVICE_URLS["order_svc"].url, timeout=10) as http:
        return await http.get(path)


async def listed(status: str) -> dict[str, dict]:
    answer = await get(f"/orders?status={status}&limit={LOTS}")
    assert answer.status_code == 200, answer.text
    return {order["order_id"]: order for order in answer.json()}


async def test_a_saga_in_flight_is_listed_until_it_finishes(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")

    async with frozen("inventory_svc"):  # ORDER_CREATED waits: the saga stays PENDING meanwhile
        order_id = await place_order(customer, {sku: 2}, "40.00")
        in_flight, stuck = await listed("in_flight"), await listed("stuck")

    assert in_flight[order_id]["status"] == "PENDING"
    assert in_flight[order_id]["stuck"] is False
    assert (in_flight[order_id]["customer_id"], in_flight[order_id]["amount"]) == (customer, "40.00")
    assert order_id not in stuck  # its deadline is 30 s away

    await wait_for_status(order_id, ["CONFIRMED"])
    assert order_id not in await listed("in_flight")
    assert (await listed("all"))[order_id]["status"] == "CONFIRMED"


async def test_saga_sagas_shows_what_order_svc_lists(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    order_id = await place_order(customer, {sku: 1}, "10.00")
    await wait_for_status(order_id, ["CONFIRMED"])

    every, in_flight, plain = await asyncio.gather(
        run_saga_async("sagas", "--all", "--json", "--limit", LOTS),
        run_saga_async("sagas", "--json", "--limit", LOTS),
        run_saga_async("sagas", "--all", "--limit", "100"),
    )

    assert every.returncode == 0, every.stderr
    assert {order["order_id"]: order["status"] for order in json.loads(every.stdout)}[order_id] == "CONFIRMED"
    assert in_flight.returncode == 0, in_flight.stderr
    statuses = {order["order_id"]: order["status"] for order in json.loads(in_flight.stdout)}
    assert order_id not in statuses
    assert not set(statuses.values()) & {"CONFIRMED", "CANCELLED"}
    assert plain.returncode == 0 and order_id in plain.stdout


async def test_the_timeline_shows_what_order_svc_saw_with_the_topics_event_ids(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    order_id = await place_order(customer, {sku: 1}, "10.00")
    await wait_for_status(order_id, ["CONFIRMED"])

    answer = await get(f"/orders/{order_id}/timeline")

    assert answer.status_code == 200, answer.text
    timeline = answer.json()
    assert (timeline["order_id"], timeline["status"], timeline["stuck"]) == (order_id, "CONFIRMED", False)
    steps = [(step["kind"], step["event_type"], step["status"]) for step in timeline["steps"]]
    assert steps == [
        ("emitted", "ORDER_CREATED", "PENDING"),
        ("consumed", "PAYMENT_COMPLETED", None),
        ("emitted", "ORDER_CONFIRMED", "CONFIRMED"),
    ]
    traced = await run_saga_async("trace", order_id, "--json")
    assert traced.returncode == 0, traced.stderr
    on_topics = {event["event_type"]: event["event_id"] for event in json.loads(traced.stdout)["events"]}
    for step in timeline["steps"]:
        assert step["event_id"] == on_topics[step["event_type"]], step


async def test_bad_queries_and_unknown_orders(services):
    bad = await get("/orders?status=finished&limit=0")
    assert bad.status_code == 422
    assert {tuple(error["loc"]) for error in bad.json()["detail"]} == {("query", "status"), ("query", "limit")}
    assert (await get(f"/orders/{uuid.uuid4()}/timeline")).status_code == 404
    assert (await get("/orders/not-an-id/timeline")).status_code == 422
    refused = await run_saga_async("sagas", "--limit", "0")
    assert refused.returncode == 1 and refused.stderr.startswith("saga: ") and len(refused.stderr.splitlines()) == 1
