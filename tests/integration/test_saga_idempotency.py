"""Doing a thing twice does it once: a redelivered event (I4) and a retried POST with an Idempotency-Key."""
from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.support.kafka import Record, TopicReader
from tests.support.saga import (
    ALL_TOPICS,
    FREEZE_LIMIT,
    ORDER_TOPIC,
    by_type,
    cancel_order,
    frozen,
    get_account,
    handled_count,
    new_customer,
    new_sku,
    of_saga,
    order_body,
    orders_of_customer,
    place_order,
    post_order,
    read_for,
    redeliver,
    run_command,
    run_saga_async,
    saga_events,
    saga_state,
    seed_account,
    seed_stock,
    types,
    wait_for_count_above,
    wait_for_status,
    wait_until_handled,
)

pytestmark = pytest.mark.integration

QUIET_SECONDS = 0.5
"""After the consumers have committed the duplicate, how long to watch the topics for an event it
might have caused (the outbox → Kafka hop takes tens of milliseconds)."""


@dataclass(frozen=True)
class FinishedSaga:
    order_id: str
    sku: str
    customer: str
    events: list[Record]


LAST_EVENTS = {
    "confirmed": ["INVENTORY_COMMITTED"],
    "rejected": ["ORDER_CANCELLED"],
    "declined": ["INVENTORY_RELEASED", "ORDER_CANCELLED"],  # on different topics: either may be read last
    "cancelled": ["ORDER_CANCELLED"],
    "voided": ["ORDER_CANCELLED"],
}
CANCEL_ATTEMPTS = 10
"""Sagas cancelled while payment_svc is stopped until one is charged before its cancellation is read
(payment_svc reads the two in either order once it runs: docs/contract/flows.md, Cancellation
and the deadline): the refund path, C3."""


@pytest_asyncio.fixture(scope="module")
async def one_saga_per_flow(services) -> dict[str, FinishedSaga]:
    """One finished saga per flow, whose real events the tests below deliver a second time."""
    bootstrap = services.settings.kafka_bootstrap

    async def run(flow: str, reader: TopicReader) -> FinishedSaga:
        sku, customer = new_sku(), new_customer()
        await seed_stock(sku, 0 if flow == "rejected" else 5)
        await seed_account(customer, "10.00" if flow == "declined" else "100.00")
        if flow == "cancelled":
            for _ in range(CANCEL_ATTEMPTS):
                async with frozen("payment_svc"):
                    order_id = await place_order(customer, {sku: 1}, "33.33")
                    await saga_events(reader, order_id, until="INVENTORY_RESERVED", timeout=FREEZE_LIMIT)
                    assert (await cancel_order(order_id)).status_code == 200
                events = await saga_events(reader, order_id, until=LAST_EVENTS[flow])
                if "PAYMENT_REFUNDED" in types(events):
                    return FinishedSaga(order_id, sku, customer, events)
            raise AssertionError(f"payment_svc read the cancellation first {CANCEL_ATTEMPTS} times in a row")
        if flow == "voided":  # inventory_svc stopped: payment_svc voids the order before its reservation comes
            async with frozen("inventory_svc"):
                order_id = await place_order(customer, {sku: 1}, "33.33")
                assert (await cancel_order(order_id)).status_code == 200
                await saga_events(reader, order_id, until="ORDER_CONFIRMATION_FAILED", timeout=FREEZE_LIMIT)
        else:
            order_id = await place_order(customer, {sku: 1}, "40.00" if flow == "declined" else "33.33")
        return FinishedSaga(order_id, sku, customer, await saga_events(reader, order_id, until=LAST_EVENTS[flow]))

    async with TopicReader(bootstrap, *ALL_TOPICS) as reader:
        sagas = {flow: await run(flow, reader) for flow in ("cancelled", "voided", "confirmed", "declined", "rejected")}
    assert types(sagas["confirmed"].events)[-1] == "INVENTORY_COMMITTED"
    assert "PAYMENT_REFUNDED" in types(sagas["cancelled"].events)
    assert by_type(sagas["voided"].events, "PAYMENT_FAILED").value["reason"] == "cancelled_by_customer"
    return sagas


REDELIVERIES = [
    # (the saga it comes from, the event delivered twice, the services that handle it)
    ("confirmed", "ORDER_CREATED", ["inventory_svc"]),
    ("confirmed", "INVENTORY_RESERVED", ["payment_svc"]),
    ("confirmed", "PAYMENT_COMPLETED", ["order_svc"]),
    ("confirmed", "ORDER_CONFIRMED", ["inventory_svc"]),
    ("rejected", "INVENTORY_REJECTED", ["order_svc"]),
    ("declined", "PAYMENT_FAILED", ["inventory_svc", "order_svc"]),
    ("declined", "INVENTORY_RELEASED", ["order_svc"]),
    ("cancelled", "ORDER_CONFIRMATION_FAILED", ["payment_svc"]),
    ("cancelled", "PAYMENT_REFUNDED", ["inventory_svc"]),
    ("voided", "ORDER_CONFIRMATION_FAILED", ["payment_svc"]),
    ("voided", "INVENTORY_RESERVED", ["payment_svc"]),
    ("voided", "PAYMENT_FAILED", ["inventory_svc", "order_svc"]),
]


@pytest.mark.parametrize(
    "flow, event_type, consumers",
    [pytest.param(*case, id=f"{case[1]}->{'+'.join(case[2])}") for case in REDELIVERIES],
)
async def test_a_redelivered_event_changes_nothing(services, one_saga_per_flow, flow, event_type, consumers):
    settings, bootstrap = services.settings, services.settings.kafka_bootstrap
    saga = one_saga_per_flow[flow]
    original = by_type(saga.events, event_type)
    before = await saga_state(settings, saga.order_id, [saga.sku], saga.customer)
    duplicates_before = {service: await handled_count(service, event_type, "duplicate") for service in consumers}

    async with TopicReader(bootstrap, *ALL_TOPICS) as reader:
        partition, offset = await redeliver(bootstrap, original)
        for service in consumers:
            await wait_for_count_above(service, event_type, "duplicate", duplicates_before[service])
            await wait_until_handled(bootstrap, service, original.topic, partition, offset)
        seen_after = of_saga(await read_for(reader, QUIET_SECONDS), saga.order_id, ALL_TOPICS)

    assert [(r.topic, r.partition, r.offset) for r in seen_after] == [(original.topic, partition, offset)]
    copy = seen_after[0]
    assert (copy.key, copy.value, copy.headers) == (original.key, original.value, original.headers)
    assert await saga_state(settings, saga.order_id, [saga.sku], saga.customer) == before


async def test_a_post_repeated_with_its_idempotency_key_places_one_order(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    body, key = order_body(customer, {sku: 1}, "12.34"), f"key-{new_sku()}"

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        first = await post_order(body, {"Idempotency-Key": key})
        again = await post_order(body, {"Idempotency-Key": key})
        order_id = first.json()["order_id"]
        await wait_for_status(order_id)
        await saga_events(reader, order_id, until="ORDER_CONFIRMED")
        after_retry = await post_order(body, {"Idempotency-Key": key})
        records = await read_for(reader, QUIET_SECONDS)

    assert (first.status_code, again.status_code, after_retry.status_code) == (201, 200, 200)
    assert again.json()["order_id"] == after_retry.json()["order_id"] == order_id
    assert after_retry.json()["status"] == "CONFIRMED"
    assert types(of_saga(records, order_id, [ORDER_TOPIC])) == ["ORDER_CREATED", "ORDER_CONFIRMED"]
    created = [r for r in records if r.headers.get("eventType") == "ORDER_CREATED" and isinstance(r.value, dict) and r.value.get("customer_id") == customer]
    assert [r.key for r in created] == [order_id]
    assert await orders_of_customer(settings, customer) == 1


async def test_concurrent_posts_with_one_idempotency_key_place_one_order(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    body, key = order_body(customer, {sku: 1}, "1.00"), f"key-{new_sku()}"

    answers = await asyncio.gather(*(post_order(body, {"Idempotency-Key": key}) for _ in range(5)))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert len({a.json()["order_id"] for a in answers}) == 1
    assert await orders_of_customer(settings, customer) == 1


async def test_an_idempotency_key_reused_for_another_order_is_a_conflict(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    key = f"key-{new_sku()}"

    first = await post_order(order_body(customer, {sku: 1}, "1.00"), {"Idempotency-Key": key})
    other = await post_order(order_body(customer, {sku: 2}, "1.00"), {"Idempotency-Key": key})

    assert first.status_code == 201
    assert other.status_code == 409
    assert key in other.json()["detail"]
    assert await orders_of_customer(settings, customer) == 1


async def test_cli_place_repeated_with_its_idempotency_key_prints_the_same_order(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    args = ("order", "place", "--customer", customer, "--item", f"{sku}:1", "--amount", "5.00",
            "--idempotency-key", f"key-{new_sku()}")

    first = await run_saga_async(*args)
    again = await run_saga_async(*args)

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert first.stdout.strip() == again.stdout.strip()
    assert await orders_of_customer(settings, customer) == 1


async def test_an_empty_idempotency_key_is_not_a_key_everyone_shares(services):
    # An empty header is no key at all: refused (422) or ignored (each request its own order), never
    # one global key "" that hands one customer's retry a 409 or another request's order.
    settings = services.settings
    first_customer, second_customer = new_customer(), new_customer()

    first = await post_order(order_body(first_customer, {new_sku(): 1}, "1.00"), {"Idempotency-Key": ""})
    second = await post_order(order_body(second_customer, {new_sku(): 1}, "1.00"), {"Idempotency-Key": ""})

    assert first.status_code in (201, 422), first.text
    assert second.status_code in (201, 422), second.text
    if first.status_code == second.status_code == 201:
        assert first.json()["order_id"] != second.json()["order_id"]
    assert await orders_of_customer(settings, second_customer) == (1 if second.status_code == 201 else 0)


async def test_cli_place_without_an_answer_says_the_outcome_is_unknown_and_its_retry_charges_once(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    args = ("order", "place", "--customer", customer, "--item", f"{sku}:1", "--amount", "7.00")

    async with frozen("order_svc"):  # connections are accepted, nothing is answered; SIGCONT on the way out
        unknown = await run_saga_async(*args, env={"SAGA_HTTP_TIMEOUT": "1"}, timeout=FREEZE_LIMIT)

    assert unknown.returncode == 75, (unknown.stdout, unknown.stderr)
    assert unknown.stdout == "" and len(unknown.stderr.splitlines()) == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("saga: outcome unknown: order_svc at http://127.0.0.1:8001 did not answer POST /orders within 1s")
    retry = shlex.split(unknown.stderr.split("retry safely with: ", 1)[1])
    assert retry[1:-2] == list(args) and retry[-2] == "--idempotency-key"
    # order_svc, continued, may still place the order it was sent: the retry returns that one, or
    # places it if it comes first; the late one then finds it by its key. Either way: one order.
    retried = await asyncio.to_thread(run_command, retry)
    again = await asyncio.to_thread(run_command, retry)

    assert (retried.returncode, again.returncode) == (0, 0), retried.stderr + again.stderr
    order_id = retried.stdout.strip()
    assert again.stdout.strip() == order_id
    assert (await wait_for_status(order_id))["status"] == "CONFIRMED"
    assert await orders_of_customer(services.settings, customer) == 1
    account = await get_account(customer)
    assert account.status_code == 200 and account.json()["balance"] == "93.00"
