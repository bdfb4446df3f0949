"""A participant stopped mid-saga (SIGSTOP): the order is given up without it, and the saga ends once it is back.

docs/contract/flows.md, Cancellation and the deadline, and docs/contract/invariants.md, I8:
order_svc never waits for a step that may not come. Past the order's
deadline (the running order_svc's ORDER_SVC_ORDER_DEADLINE_SECONDS, 30 s by default), or
as soon as the customer cancels, the order is CANCELLING and ORDER_CONFIRMATION_FAILED is
on events.order while the participant is still stopped. Once it runs again, payment_svc
refunds or voids, inventory_svc releases, and the order is CANCELLED with the reason it
was given up for — stock and money back (I1–I6).

The deadline case keeps payment_svc stopped for the whole deadline (about 31 s): other
people's sagas wait meanwhile, which is why it is the only test that freezes that long.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal

import pytest

from tests.support.invariants import Seeded, check_invariants
from tests.support.kafka import TopicReader
from tests.support.saga import (
    ALL_TOPICS,
    DEADLETTER_TOPIC,
    FREEZE_LIMIT,
    assert_headers_match_payloads,
    assert_one_trace,
    balance,
    by_type,
    cancel_order,
    frozen,
    get_order,
    new_customer,
    new_sku,
    of_saga,
    order_history,
    order_row,
    payment,
    place_order,
    reservation,
    saga_events,
    seed_account,
    seed_stock,
    stock,
    types,
)

pytestmark = pytest.mark.faults

TIMER_SLACK_S = 5.0
"""How late after its deadline the order may be given up: the timer runs every second (order_svc/app.py)."""
PUBLISH_SLACK_S = 10.0
"""How long its ORDER_CONFIRMATION_FAILED may then take from the outbox to events.order (Debezium)."""


async def payment_status_becomes(settings, order_id: str, status: str, timeout: float) -> dict:
    """payment_svc's row for the order once it has `status` (polled until `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        row = await payment(settings, order_id)
        if row is not None and row["status"] == status:
            return row
        assert time.monotonic() < deadline, f"payment of {order_id} is {row and row['status']}, not {status}"
        await asyncio.sleep(0.1)


def distinct(records: list) -> list:
    """Each event once: a stopped service may get a record again (at least once, I5), under the same id."""
    seen: set[str] = set()
    return [r for r in records if not (r.event_id in seen or seen.add(r.event_id))]


def given_up(reason: str):
    """Condition on the records read: the saga's ORDER_CONFIRMATION_FAILED with `reason` arrived."""
    def arrived(records) -> bool:
        return any(r.headers.get("eventType") == "ORDER_CONFIRMATION_FAILED" and r.value.get("reason") == reason
                   for r in records)
    return arrived


async def test_payment_stopped_past_the_deadline_the_order_is_given_up_and_ends_once_payment_is_back(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    started_ms = int(time.time() * 1000)

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        async with frozen("payment_svc"):
            order_id = await place_order(customer, {sku: 2}, "40.00")
            await saga_events(reader, order_id, until="INVENTORY_RESERVED", timeout=FREEZE_LIMIT)
            shown = await get_order(order_id)
            deadline_at = datetime.fromisoformat(shown.json()["deadline_at"])
            wait_s = deadline_at.timestamp() - time.time()
            print(f"payment_svc stopped; the order's deadline is in {wait_s:.1f}s")
            await reader.read_until(lambda rs: given_up("deadline_exceeded")(of_saga(rs, order_id)),
                                    timeout=wait_s + TIMER_SLACK_S + PUBLISH_SLACK_S)
            assert (await order_row(settings, order_id))["status"] == "CANCELLING"
            [cancelling] = [step for step in (await get_order(order_id)).json()["history"] if step["status"] == "CANCELLING"]
            late_s = datetime.fromisoformat(cancelling["at"]).timestamp() - deadline_at.timestamp()
            published_s = by_type(of_saga(reader.records, order_id), "ORDER_CONFIRMATION_FAILED").timestamp_ms / 1000
            print(f"given up {late_s:.2f}s after the deadline, on events.order {published_s - deadline_at.timestamp():.2f}s "
                  "after it; payment_svc still stopped")
            assert 0 <= late_s < TIMER_SLACK_S
        events = distinct(await saga_events(reader, order_id, until="ORDER_CANCELLED"))

    assert_one_trace(events)
    assert_headers_match_payloads(events, order_id)
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])
    cancelled = by_type(events, "ORDER_CANCELLED")
    assert cancelled.value["reason"] == "deadline_exceeded"
    assert "ORDER_CONFIRMED" not in types(events)
    charged = await payment(settings, order_id)
    print(f"payment_svc, back, read {'the reservation' if charged['status'] == 'REFUNDED' else 'the void'} first: "
          f"{' → '.join(types(events))}")
    assert (charged["status"], charged["reason"]) in {("REFUNDED", None), ("DECLINED", "deadline_exceeded")}

    order = await order_row(settings, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "deadline_exceeded")
    assert [status for status, _, _ in await order_history(settings, order_id)] == ["PENDING", "CANCELLING", "CANCELLED"]
    assert (await reservation(settings, order_id))["status"] == "RELEASED"
    assert await stock(settings, sku) == (5, 0, 0)
    assert await balance(settings, customer) == Decimal("100.00")
    seeded = Seeded(stock={sku: 5}, balances={customer: Decimal("100.00")})
    assert await check_invariants(settings, [order_id], seeded, since_ms=started_ms) == []


async def test_a_cancel_before_inventory_reserved_voids_the_payment_and_the_reservation_is_declined(services):
    """inventory_svc stopped: the cancellation reaches payment_svc before any reservation, which
    records a void; once inventory_svc is back it reserves, payment_svc declines the reservation
    with the customer's reason (nothing charged), the stock goes back, the order is CANCELLED."""
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    started_ms = int(time.time() * 1000)

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        async with frozen("inventory_svc"):
            order_id = await place_order(customer, {sku: 1}, "25.00")
            answer = await cancel_order(order_id)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "CANCELLING"
            await reader.read_until(lambda rs: given_up("cancelled_by_customer")(of_saga(rs, order_id)),
                                    timeout=FREEZE_LIMIT)
            voided = await payment_status_becomes(settings, order_id, "VOIDED", timeout=FREEZE_LIMIT)
            assert (voided["reason"], voided["customer_id"]) == ("cancelled_by_customer", None)
        events = distinct(await saga_events(reader, order_id, until="ORDER_CANCELLED"))

    assert types(events)[0] == "ORDER_CREATED"
    assert sorted(types(events)) == sorted([
        "ORDER_CREATED", "ORDER_CONFIRMATION_FAILED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED",
        "ORDER_CANCELLED"])
    assert_one_trace(events)
    reserved, failed = by_type(events, "INVENTORY_RESERVED"), by_type(events, "PAYMENT_FAILED")
    released, cancelled = by_type(events, "INVENTORY_RELEASED"), by_type(events, "ORDER_CANCELLED")
    assert (failed.headers["causationId"], failed.value["reason"]) == (reserved.event_id, "cancelled_by_customer")
    assert released.headers["causationId"] == failed.event_id
    assert (cancelled.headers["causationId"], cancelled.value["reason"]) == (released.event_id, "cancelled_by_customer")
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])

    declined = await payment(settings, order_id)
    assert (declined["status"], declined["reason"], declined["customer_id"], declined["amount"]) == (
        "DECLINED", "cancelled_by_customer", customer, Decimal("25.00"))
    assert (await order_row(settings, order_id))["reason"] == "cancelled_by_customer"
    assert await stock(settings, sku) == (5, 0, 0)
    assert await balance(settings, customer) == Decimal("100.00")
    seeded = Seeded(stock={sku: 5}, balances={customer: Decimal("100.00")})
    assert await check_invariants(settings, [order_id], seeded, since_ms=started_ms) == []
