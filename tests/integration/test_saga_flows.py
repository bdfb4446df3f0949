"""The choreographed saga end to end on the real stack (docs/contract/flows.md): each flow's
events on the topics, their causation chain and trace, and what it leaves in all three databases."""
from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest

from tests.support.kafka import TopicReader
from tests.support.saga import (
    ALL_TOPICS,
    FREEZE_LIMIT,
    DEADLETTER_TOPIC,
    assert_cancelled_after_release,
    assert_causation_chain,
    assert_headers_match_payloads,
    assert_one_trace,
    balance,
    by_type,
    cancel_order,
    frozen,
    new_customer,
    new_sku,
    of_saga,
    order_body,
    order_history,
    order_row,
    outbox_rows,
    payment,
    place_order,
    post_order,
    reservation,
    run_saga_async,
    saga_events,
    seed_account,
    seed_stock,
    stock,
    trace_id,
    types,
    wait_for_status,
)

pytestmark = pytest.mark.integration

HAPPY = ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED", "INVENTORY_COMMITTED"]
REJECTED = ["ORDER_CREATED", "INVENTORY_REJECTED", "ORDER_CANCELLED"]
DECLINED = ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED", "ORDER_CANCELLED"]
CANCELLED_IN_FLIGHT = [
    "ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED",
    "ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED",
]
CANCELLED_BEFORE_PAYMENT = [
    "ORDER_CREATED", "INVENTORY_RESERVED", "ORDER_CONFIRMATION_FAILED", "PAYMENT_FAILED", "INVENTORY_RELEASED",
    "ORDER_CANCELLED",
]


async def test_happy_path_confirms_the_order_sells_the_stock_and_keeps_the_money(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        order_id = await place_order(customer, {sku: 2}, "40.00")
        events = await saga_events(reader, order_id, until="INVENTORY_COMMITTED")

    assert types(events) == HAPPY
    assert_causation_chain(events)
    assert_one_trace(events)
    assert_headers_match_payloads(events, order_id)
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])
    created, reserved, completed, confirmed, committed = events
    assert created.value["customer_id"] == customer
    assert created.value["items"] == [{"sku": sku, "quantity": 2}]
    assert (created.value["amount"], created.value["currency"]) == ("40.00", "EUR")
    # event-carried state: payment_svc learns the customer and the amount from the reservation
    assert (reserved.value["customer_id"], reserved.value["amount"], reserved.value["currency"]) == (customer, "40.00", "EUR")
    assert (completed.value["amount"], completed.value["currency"]) == ("40.00", "EUR")
    assert committed.value["reservation_id"] == reserved.value["reservation_id"]

    order = await order_row(settings, order_id)
    assert (order["status"], order["reason"]) == ("CONFIRMED", None)
    assert await order_history(settings, order_id) == [
        ("PENDING", None, created.event_id),
        ("CONFIRMED", None, confirmed.event_id),
    ]
    assert await reservation(settings, order_id) == {
        "reservation_id": reserved.value["reservation_id"], "status": "COMMITTED", "items": [{"sku": sku, "quantity": 2}],
    }
    assert await stock(settings, sku) == (3, 0, 2)
    charged = await payment(settings, order_id)
    assert (charged["status"], charged["amount"], charged["currency"]) == ("CAPTURED", Decimal("40.00"), "EUR")
    assert charged["payment_id"] == completed.value["payment_id"]
    assert await balance(settings, customer) == Decimal("60.00")
    assert await outbox_rows(settings, order_id) == {"orders": 2, "inventory": 2, "payments": 1}


async def test_out_of_stock_cancels_the_order_and_holds_nothing(services):
    settings = services.settings
    plenty, short, customer = new_sku(), new_sku(), new_customer()
    await seed_stock(plenty, 5)
    await seed_stock(short, 1)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        order_id = await place_order(customer, {plenty: 2, short: 2}, "40.00")
        events = await saga_events(reader, order_id, until="ORDER_CANCELLED")

    assert types(events) == REJECTED
    assert_causation_chain(events)
    assert_one_trace(events)
    assert_headers_match_payloads(events, order_id)
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])
    _, rejected, cancelled = events
    assert (rejected.value["reason"], rejected.value["skus"]) == ("out_of_stock", [short])
    assert cancelled.value["reason"] == "out_of_stock"

    order = await order_row(settings, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "out_of_stock")
    assert [status for status, _, _ in await order_history(settings, order_id)] == ["PENDING", "CANCELLED"]
    assert (await reservation(settings, order_id))["status"] == "REJECTED"  # the decision is kept: it guards redeliveries
    assert await stock(settings, plenty) == (5, 0, 0)  # all items or none
    assert await stock(settings, short) == (1, 0, 0)
    assert await payment(settings, order_id) is None
    assert await balance(settings, customer) == Decimal("100.00")
    assert await outbox_rows(settings, order_id) == {"orders": 2, "inventory": 1, "payments": 0}


async def test_unknown_sku_cancels_the_whole_order_and_leaves_known_stock_alone(services):
    settings = services.settings
    known, unknown, customer = new_sku(), new_sku(), new_customer()
    await seed_stock(known, 5)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        order_id = await place_order(customer, {known: 1, unknown: 1}, "40.00")
        events = await saga_events(reader, order_id, until="ORDER_CANCELLED")

    assert types(events) == REJECTED
    assert_causation_chain(events)
    assert_one_trace(events)
    _, rejected, cancelled = events
    assert (rejected.value["reason"], rejected.value["skus"]) == ("unknown_sku", [unknown])
    assert cancelled.value["reason"] == "unknown_sku"

    order = await order_row(settings, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "unknown_sku")
    assert (await reservation(settings, order_id))["status"] == "REJECTED"
    assert await stock(settings, known) == (5, 0, 0)
    assert await stock(settings, unknown) is None
    assert await payment(settings, order_id) is None
    assert await balance(settings, customer) == Decimal("100.00")


@pytest.mark.parametrize(
    "reason, account_balance, amount",
    [
        pytest.param("insufficient_funds", "10.00", "40.00", id="insufficient_funds"),
        pytest.param("limit_exceeded", "20000.00", "10000.01", id="limit_exceeded"),  # the per-order limit is 10000.00
        pytest.param("unknown_customer", None, "40.00", id="unknown_customer"),
        # an account holds one currency, no conversion: a EUR account has no USD (payment_svc/domain.py)
        pytest.param("insufficient_funds", "100.00 USD", "40.00", id="other_currency"),
    ],
)
async def test_declined_payment_releases_the_stock_then_cancels_the_order(services, reason, account_balance, amount):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    if account_balance is not None:
        await seed_account(customer, *account_balance.split())

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        order_id = await place_order(customer, {sku: 2}, amount)
        events = await saga_events(reader, order_id, until=["INVENTORY_RELEASED", "ORDER_CANCELLED"])

    assert types(events) == DECLINED
    assert_causation_chain(events[:4])
    assert_one_trace(events)
    assert_headers_match_payloads(events, order_id)
    failed, released, cancelled = events[2:]
    assert failed.value["reason"] == reason
    assert released.value["reservation_id"] == by_type(events, "INVENTORY_RESERVED").value["reservation_id"]
    assert cancelled.value["reason"] == reason
    order = await order_row(settings, order_id)
    assert_cancelled_after_release(events, root_cause=failed, order=order)

    assert (order["status"], order["reason"]) == ("CANCELLED", reason)
    assert [status for status, _, _ in await order_history(settings, order_id)][-1] == "CANCELLED"
    assert (await reservation(settings, order_id))["status"] == "RELEASED"
    assert await stock(settings, sku) == (5, 0, 0)
    declined = await payment(settings, order_id)
    assert (declined["status"], declined["reason"], declined["amount"]) == ("DECLINED", reason, Decimal(amount))
    expected_balance = Decimal(account_balance.split()[0]) if account_balance is not None else None
    assert await balance(settings, customer) == expected_balance
    assert await outbox_rows(settings, order_id) == {"orders": 2, "inventory": 2, "payments": 1}
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])


async def test_customer_cancel_in_flight_gives_the_order_up_at_once_and_payment_agrees_whatever_comes_first(services):
    """docs/contract/flows.md, Cancellation and the deadline: the customer cancels while payment_svc
    is stopped — the order is CANCELLING and ORDER_CONFIRMATION_FAILED is on the topic at once,
    without waiting for payment. Once payment_svc is back it meets the reservation and the
    cancellation in whichever order it reads them: charged then refunded (C3, C2, C1), or voided
    then declined with the customer's reason (C2, C1). Either way the stock and the money are back
    and the order is CANCELLED cancelled_by_customer."""
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        async with frozen("payment_svc"):
            order_id = await place_order(customer, {sku: 1}, "33.33")
            await saga_events(reader, order_id, until="INVENTORY_RESERVED", timeout=FREEZE_LIMIT)
            cancelled_request = await cancel_order(order_id)
            assert cancelled_request.status_code == 200, cancelled_request.text
            assert cancelled_request.json()["status"] == "CANCELLING"
            await reader.read_until(
                lambda rs: "ORDER_CONFIRMATION_FAILED" in types(of_saga(rs, order_id)), timeout=FREEZE_LIMIT)
        events = await saga_events(reader, order_id, until="ORDER_CANCELLED")

    assert set(types(events)) in (set(CANCELLED_IN_FLIGHT), set(CANCELLED_BEFORE_PAYMENT)), types(events)
    assert len(events) == len(set(types(events)))
    assert_one_trace(events)
    assert_headers_match_payloads(events, order_id)
    created, reserved = by_type(events, "ORDER_CREATED"), by_type(events, "INVENTORY_RESERVED")
    confirmation_failed, released = by_type(events, "ORDER_CONFIRMATION_FAILED"), by_type(events, "INVENTORY_RELEASED")
    cancelled = by_type(events, "ORDER_CANCELLED")
    assert confirmation_failed.value["reason"] == "cancelled_by_customer"
    assert confirmation_failed.headers["causationId"] == ""  # the customer caused it, no event
    if "PAYMENT_COMPLETED" in types(events):  # payment_svc read the reservation first: charge, then refund
        completed, refunded = by_type(events, "PAYMENT_COMPLETED"), by_type(events, "PAYMENT_REFUNDED")
        assert completed.headers["causationId"] == reserved.event_id
        assert refunded.headers["causationId"] == confirmation_failed.event_id
        assert (refunded.value["payment_id"], refunded.value["amount"]) == (completed.value["payment_id"], "33.33")
        root_cause, payment_status, payment_events = refunded, "REFUNDED", 2
        print("payment_svc read the reservation first: charged, then refunded")
    else:  # the cancellation first: a void, and the reservation declined with the customer's reason
        failed = by_type(events, "PAYMENT_FAILED")
        assert failed.headers["causationId"] == reserved.event_id
        assert failed.value["reason"] == "cancelled_by_customer"
        root_cause, payment_status, payment_events = failed, "DECLINED", 1
        print("payment_svc read the cancellation first: voided, then the reservation declined")
    assert released.headers["causationId"] == root_cause.event_id
    assert released.value["reservation_id"] == reserved.value["reservation_id"]
    assert cancelled.headers["causationId"] == released.event_id
    assert cancelled.value["reason"] == "cancelled_by_customer"
    assert created.headers["causationId"] == ""

    order = await order_row(settings, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "cancelled_by_customer")
    assert [status for status, _, _ in await order_history(settings, order_id)] == ["PENDING", "CANCELLING", "CANCELLED"]
    assert (await reservation(settings, order_id))["status"] == "RELEASED"
    assert await stock(settings, sku) == (5, 0, 0)
    assert (await payment(settings, order_id))["status"] == payment_status
    assert await balance(settings, customer) == Decimal("100.00")  # exactly, to the cent
    assert await outbox_rows(settings, order_id) == {"orders": 3, "inventory": 2, "payments": payment_events}
    assert not of_saga(reader.records, order_id, [DEADLETTER_TOPIC])


async def test_the_callers_traceparent_carries_through_the_whole_saga(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    callers_trace = uuid.uuid4().hex
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        placed = await post_order(
            order_body(customer, {sku: 1}, "1.00"), {"traceparent": f"00-{callers_trace}-{uuid.uuid4().hex[:16]}-01"}
        )
        assert placed.status_code == 201, placed.text
        events = await saga_events(reader, placed.json()["order_id"], until="INVENTORY_COMMITTED")

    assert types(events) == HAPPY
    assert {trace_id(record) for record in events} == {callers_trace}


async def test_charges_are_exact_to_the_cent(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 10)
    await seed_account(customer, "100.00")

    first = await place_order(customer, {sku: 1}, "0.01")
    assert (await wait_for_status(first))["status"] == "CONFIRMED"
    assert await balance(settings, customer) == Decimal("99.99")

    # 0.10 + 0.20 is not 0.30 in binary floating point; in money it is
    second, third = await asyncio.gather(place_order(customer, {sku: 1}, "0.10"), place_order(customer, {sku: 1}, "0.20"))
    for order_id in (second, third):
        assert (await wait_for_status(order_id))["status"] == "CONFIRMED"
    assert await balance(settings, customer) == Decimal("99.69")
    assert [(await payment(settings, o))["amount"] for o in (first, second, third)] == [
        Decimal("0.01"), Decimal("0.10"), Decimal("0.20"),
    ]
    assert (await wait_for_status(third))["amount"] == "0.20"


async def test_an_order_of_exactly_the_per_order_limit_is_charged(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 1)
    await seed_account(customer, "10000.00")

    order_id = await place_order(customer, {sku: 1}, "10000.00")

    assert (await wait_for_status(order_id))["status"] == "CONFIRMED"
    assert await balance(settings, customer) == Decimal("0.00")
    assert (await payment(settings, order_id))["amount"] == Decimal("10000.00")


async def test_cli_shows_and_traces_a_finished_saga(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader:
        placed = await run_saga_async("order", "place", "--customer", customer, "--item", f"{sku}:2", "--amount", "40", "--json")
        assert placed.returncode == 0, placed.stderr
        order_id = json.loads(placed.stdout)["order_id"]
        assert json.loads(placed.stdout)["status"] == "PENDING"
        events = await saga_events(reader, order_id, until="INVENTORY_COMMITTED")
    shown, traced = await asyncio.gather(
        run_saga_async("order", "show", order_id, "--json"), run_saga_async("trace", order_id, "--json")
    )

    assert shown.returncode == 0, shown.stderr
    order = json.loads(shown.stdout)
    assert {k: order[k] for k in ("order_id", "status", "reason", "customer_id", "amount", "currency", "items")} == {
        "order_id": order_id,
        "status": "CONFIRMED",
        "reason": None,
        "customer_id": customer,
        "amount": "40.00",
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": 2}],
    }
    assert [(step["status"], step["event_id"]) for step in order["history"]] == [
        ("PENDING", by_type(events, "ORDER_CREATED").event_id),
        ("CONFIRMED", by_type(events, "ORDER_CONFIRMED").event_id),
    ]
    assert all(step["at"] for step in order["history"])

    assert traced.returncode == 0, traced.stderr
    trace = json.loads(traced.stdout)
    assert trace["order_id"] == order_id
    assert [
        (e["event_type"], e["service"], e["topic"], e["event_id"], e["causation_id"] or "") for e in trace["events"]
    ] == [
        (r.headers["eventType"], _service_of(r.topic), r.topic, r.event_id, r.headers["causationId"]) for r in events
    ]
    assert all(e["at"] for e in trace["events"])


def _service_of(topic: str) -> str:
    return {"events.order": "order_svc", "events.inventory": "inventory_svc", "events.payment": "payment_svc"}[topic]
