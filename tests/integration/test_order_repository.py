"""order_svc's commands, handlers and SQL against a real PostgreSQL: placing (with
Idempotency-Key), cancelling, the deadline timer, and every flow of the saga as order_svc sees it."""
from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest

from order_svc import repository
from order_svc.domain import IdempotencyKeyReused, OrderAlreadyFinal, OrderNotFound, OrderStatus, PlaceOrder
from order_svc.handlers import HANDLERS, cancel_order, expire_overdue_orders, place_order
from shared.events import (
    InventoryRejected,
    InventoryReleased,
    OrderCancelled,
    OrderConfirmationFailed,
    OrderConfirmed,
    PaymentCompleted,
    PaymentFailed,
    decode_event,
    utc_now,
)
from shared.auth import KeyRing, ensure_keys
from shared.testing import scratch_database
from shared.tracing import new_traceparent, parse_traceparent, trace_id_of
from shared.uow import Envelope, UnitOfWork

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def uow(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn, "order_svc") as dsn:
        uow = await UnitOfWork.connect(dsn, "order_svc", max_size=20)
        yield uow
        await uow.close()


COMMAND = PlaceOrder(customer_id="alice", items=[{"sku": "WIDGET-1", "quantity": 2}], amount="40.00", currency="EUR")


async def placed(uow: UnitOfWork, **kwargs) -> uuid.UUID:
    return (await place_order(uow, COMMAND, **kwargs)).order_id


async def deliver(uow: UnitOfWork, event, event_id: uuid.UUID | None = None) -> list:
    envelope = Envelope(event_id=event_id or uuid.uuid4(), event=event, traceparent=new_traceparent())
    tx = await uow.handle(envelope, HANDLERS)
    return [event for _, event in tx.emitted]


async def details(uow: UnitOfWork, order_id: uuid.UUID) -> dict:
    async with uow.connection() as connection:
        return await repository.order_details(connection, order_id)


async def outbox(uow: UnitOfWork, order_id: uuid.UUID) -> list:
    async with uow.connection() as connection:
        return await connection.fetch("SELECT * FROM outbox WHERE saga_id = $1 ORDER BY created_at", str(order_id))


def payment_completed(order_id):
    return PaymentCompleted(order_id=order_id, occurred_at=utc_now(), payment_id=uuid.uuid4(), amount="40.00", currency="EUR")


def payment_failed(order_id, reason="insufficient_funds"):
    return PaymentFailed(order_id=order_id, occurred_at=utc_now(), reason=reason)


def inventory_released(order_id):
    return InventoryReleased(order_id=order_id, occurred_at=utc_now(), reservation_id=uuid.uuid4())


def statuses(order: dict) -> list[str]:
    return [step["status"] for step in order["history"]]


async def test_placing_writes_the_order_its_history_and_order_created_together(uow):
    result = await place_order(uow, COMMAND)

    assert (result.status, result.created) == (OrderStatus.PENDING, True)
    [row] = await outbox(uow, result.order_id)
    created = decode_event(json.loads(row["payload"]))
    assert (row["aggregate_type"], row["aggregate_id"], row["event_type"]) == ("order", str(result.order_id), "ORDER_CREATED")
    assert row["causation_id"] == ""
    assert parse_traceparent(row["traceparent"]) is not None
    assert (created.customer_id, created.amount, created.currency) == ("alice", Decimal("40.00"), "EUR")
    order = await details(uow, result.order_id)
    assert order["status"] == "PENDING" and order["reason"] is None
    assert (order["amount"], order["currency"], order["items"]) == ("40.00", "EUR", [{"sku": "WIDGET-1", "quantity": 2}])
    assert order["history"][0]["status"] == "PENDING"
    assert order["history"][0]["event_id"] == str(row["id"])


async def test_an_idempotency_key_returns_the_same_order(uow):
    key = f"key-{uuid.uuid4()}"
    first = await place_order(uow, COMMAND, key)
    reordered = PlaceOrder(**{**COMMAND.model_dump(), "items": list(reversed(COMMAND.items))})
    again = await place_order(uow, reordered, key)

    assert again.order_id == first.order_id
    assert (first.created, again.created) == (True, False)
    assert len(await outbox(uow, first.order_id)) == 1


async def test_concurrent_requests_with_one_key_place_one_order(uow):
    key = f"key-{uuid.uuid4()}"
    customer = f"racer-{uuid.uuid4().hex[:8]}"
    command = PlaceOrder(**{**COMMAND.model_dump(), "customer_id": customer})
    results = await asyncio.gather(*(place_order(uow, command, key) for _ in range(8)))

    assert len({result.order_id for result in results}) == 1
    assert [result.created for result in results].count(True) == 1
    # the requests that lost the race wrote nothing: no second order, no ORDER_CREATED of theirs
    async with uow.connection() as connection:
        created = await connection.fetch(
            "SELECT saga_id FROM outbox WHERE event_type = 'ORDER_CREATED' AND payload ->> 'customer_id' = $1", customer)
        orders = await connection.fetchval("SELECT count(*) FROM orders WHERE customer_id = $1", customer)
    assert [row["saga_id"] for row in created] == [str(results[0].order_id)]
    assert orders == 1


async def test_a_key_reused_for_another_order_is_refused(uow):
    key = f"key-{uuid.uuid4()}"
    await place_order(uow, COMMAND, key)
    other = PlaceOrder(**{**COMMAND.model_dump(), "amount": "41.00"})
    with pytest.raises(IdempotencyKeyReused):
        await place_order(uow, other, key)


async def test_happy_path_confirms(uow):
    order_id = await placed(uow)

    [confirmed] = await deliver(uow, payment_completed(order_id))

    assert isinstance(confirmed, OrderConfirmed)
    order = await details(uow, order_id)
    assert (order["status"], order["reason"]) == ("CONFIRMED", None)
    assert statuses(order) == ["PENDING", "CONFIRMED"]
    rows = await outbox(uow, order_id)
    assert order["history"][1]["event_id"] == str(rows[-1]["id"])


async def test_stock_short_cancels_at_once(uow):
    order_id = await placed(uow)

    [cancelled] = await deliver(
        uow, InventoryRejected(order_id=order_id, occurred_at=utc_now(), reason="out_of_stock", skus=["WIDGET-1"])
    )

    assert (type(cancelled), cancelled.reason) == (OrderCancelled, "out_of_stock")
    order = await details(uow, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "out_of_stock")


async def test_payment_declined_cancels_only_after_the_stock_is_back(uow):
    order_id = await placed(uow)

    assert await deliver(uow, payment_failed(order_id, "limit_exceeded")) == []
    assert (await details(uow, order_id))["status"] == "CANCELLING"
    [cancelled] = await deliver(uow, inventory_released(order_id))

    assert (type(cancelled), cancelled.reason) == (OrderCancelled, "limit_exceeded")
    order = await details(uow, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "limit_exceeded")
    assert statuses(order) == ["PENDING", "CANCELLING", "CANCELLED"]


async def test_a_release_that_overtakes_the_payment_failure_waits_for_it(uow):
    order_id = await placed(uow)

    assert await deliver(uow, inventory_released(order_id)) == []
    assert (await details(uow, order_id))["status"] == "PENDING"
    [cancelled] = await deliver(uow, payment_failed(order_id, "unknown_customer"))

    assert cancelled.reason == "unknown_customer"
    assert (await details(uow, order_id))["status"] == "CANCELLED"


async def test_customer_cancel_in_flight_gives_the_order_up_at_once(uow):
    order_id = await placed(uow)

    assert await cancel_order(uow, order_id) == OrderStatus.CANCELLING
    [_, failed] = await outbox(uow, order_id)
    assert (failed["event_type"], failed["causation_id"]) == ("ORDER_CONFIRMATION_FAILED", "")
    assert decode_event(json.loads(failed["payload"])).reason == "cancelled_by_customer"
    assert await cancel_order(uow, order_id) == OrderStatus.CANCELLING  # asking twice changes nothing
    assert len(await outbox(uow, order_id)) == 2
    assert await deliver(uow, payment_completed(order_id)) == []  # never confirmed: payment_svc refunds it
    [cancelled] = await deliver(uow, inventory_released(order_id))

    assert cancelled.reason == "cancelled_by_customer"
    order = await details(uow, order_id)
    assert (order["status"], order["reason"], order["cancel_requested"]) == ("CANCELLED", "cancelled_by_customer", True)
    assert statuses(order) == ["PENDING", "CANCELLING", "CANCELLED"]
    assert order["history"][1]["event_id"] == str(failed["id"])


async def test_a_cancelled_order_whose_payment_is_voided_ends_on_the_release(uow):
    order_id = await placed(uow)
    await cancel_order(uow, order_id)

    assert await deliver(uow, payment_failed(order_id, "cancelled_by_customer")) == []
    [cancelled] = await deliver(uow, inventory_released(order_id))

    assert cancelled.reason == "cancelled_by_customer"
    assert (await details(uow, order_id))["status"] == "CANCELLED"


async def test_a_cancelled_order_keeps_its_reason_when_the_payment_is_declined_anyway(uow):
    order_id = await placed(uow)
    await cancel_order(uow, order_id)

    await deliver(uow, payment_failed(order_id, "insufficient_funds"))
    await deliver(uow, inventory_released(order_id))

    order = await details(uow, order_id)
    assert (order["status"], order["reason"], order["cancel_requested"]) == ("CANCELLED", "cancelled_by_customer", True)


async def test_a_cancel_after_a_declined_payment_keeps_the_payment_reason(uow):
    order_id = await placed(uow)
    await deliver(uow, payment_failed(order_id, "insufficient_funds"))

    assert await cancel_order(uow, order_id) == OrderStatus.CANCELLING
    assert [row["event_type"] for row in await outbox(uow, order_id)] == ["ORDER_CREATED"]  # nothing to refund
    await deliver(uow, inventory_released(order_id))

    order = await details(uow, order_id)
    assert (order["status"], order["reason"], order["cancel_requested"]) == ("CANCELLED", "insufficient_funds", True)


async def test_a_cancelled_order_rejected_by_inventory_ends_at_once(uow):
    order_id = await placed(uow)
    await cancel_order(uow, order_id)

    [cancelled] = await deliver(
        uow, InventoryRejected(order_id=order_id, occurred_at=utc_now(), reason="out_of_stock", skus=["WIDGET-1"])
    )

    assert cancelled.reason == "cancelled_by_customer"
    assert statuses(await details(uow, order_id)) == ["PENDING", "CANCELLING", "CANCELLED"]


# --- the deadline, kept by order_svc's own timer -------------------------------------------------

async def wait_past_deadline(uow: UnitOfWork, order_id: uuid.UUID, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with uow.connection() as connection:
        while not await connection.fetchval("SELECT deadline_at < now() FROM orders WHERE order_id = $1", order_id):
            assert asyncio.get_running_loop().time() < deadline, "the order's deadline did not pass"
            await asyncio.sleep(0.05)


async def test_a_saga_whose_participants_are_down_is_given_up_at_its_deadline_and_ends_once_they_are_back(uow):
    """Nothing comes back from inventory or payment (both down) — the timer does not wait for
    them: past the deadline the order is CANCELLING and ORDER_CONFIRMATION_FAILED is out. Once
    they are back, payment declines the voided reservation, inventory releases it, and the order
    ends CANCELLED with the deadline as its reason."""
    order_id = await placed(uow, deadline_seconds=1.0)
    await expire_overdue_orders(uow)
    assert (await details(uow, order_id))["status"] == "PENDING"  # within its deadline
    await wait_past_deadline(uow, order_id)

    assert await expire_overdue_orders(uow) >= 1
    order = await details(uow, order_id)
    assert (order["status"], statuses(order)) == ("CANCELLING", ["PENDING", "CANCELLING"])
    [_, failed] = await outbox(uow, order_id)
    assert failed["event_type"] == "ORDER_CONFIRMATION_FAILED"
    assert decode_event(json.loads(failed["payload"])).reason == "deadline_exceeded"
    assert order["history"][1]["event_id"] == str(failed["id"])
    await expire_overdue_orders(uow)
    assert len(await outbox(uow, order_id)) == 2  # given up once

    assert await deliver(uow, payment_failed(order_id, "deadline_exceeded")) == []
    [cancelled] = await deliver(uow, inventory_released(order_id))
    assert cancelled.reason == "deadline_exceeded"
    assert (await details(uow, order_id))["reason"] == "deadline_exceeded"


async def test_concurrent_timers_give_each_overdue_order_up_once(uow):
    """Several order_svc instances run the timer at once: each order gets one
    ORDER_CONFIRMATION_FAILED, one CANCELLING history row."""
    orders = [await placed(uow, deadline_seconds=0.0) for _ in range(30)]
    await wait_past_deadline(uow, orders[-1])

    given_up = await asyncio.gather(*(expire_overdue_orders(uow, batch=7) for _ in range(4)))

    assert sum(given_up) >= len(orders)
    for order_id in orders:
        assert [row["event_type"] for row in await outbox(uow, order_id)] == ["ORDER_CREATED", "ORDER_CONFIRMATION_FAILED"]
        assert statuses(await details(uow, order_id)) == ["PENDING", "CANCELLING"]


async def test_the_timer_skips_an_order_someone_holds_and_takes_it_on_a_later_tick(uow):
    order_id = await placed(uow, deadline_seconds=0.0)
    await wait_past_deadline(uow, order_id)
    async with uow.bare_transaction() as holder:
        await holder.execute("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
        await asyncio.wait_for(expire_overdue_orders(uow), timeout=10)  # does not wait for the lock
        assert (await details(uow, order_id))["status"] == "PENDING"

    await expire_overdue_orders(uow)
    assert (await details(uow, order_id))["status"] == "CANCELLING"


async def test_the_timer_reports_each_commit(uow):
    order_id = await placed(uow, deadline_seconds=0.0)
    await wait_past_deadline(uow, order_id)
    committed = []

    await expire_overdue_orders(uow, on_committed=committed.append)

    mine = [tx for tx in committed if tx.saga_id == str(order_id)]
    assert [[type(event).__name__ for _, event in tx.emitted] for tx in mine] == [["OrderConfirmationFailed"]]


async def test_the_cancellation_and_the_deadline_are_signed_and_traced_with_the_saga(uow, tmp_path):
    """Both go out through the unit of work, so they are signed like any event order_svc emits."""
    ensure_keys(tmp_path)
    keys = KeyRing.load(tmp_path, "order_svc")
    signing = UnitOfWork(uow.pool, "order_svc", keys)
    cancelled, overdue = await placed(signing), await placed(signing, deadline_seconds=0.0)
    await wait_past_deadline(uow, overdue)

    await cancel_order(signing, cancelled)
    await expire_overdue_orders(signing)

    for order_id in (cancelled, overdue):
        [created, failed] = await outbox(uow, order_id)
        assert failed["event_type"] == "ORDER_CONFIRMATION_FAILED"
        # no event caused it, yet it continues the saga's trace, in a span of its own
        assert trace_id_of(failed["traceparent"]) == trace_id_of(created["traceparent"])
        assert failed["traceparent"] != created["traceparent"]
        keys.authenticate("order_svc", failed["signature"], event_id=str(failed["id"]), event_type=failed["event_type"],
                          saga_id=str(order_id), causation_id=failed["causation_id"], payload=json.loads(failed["payload"]))


async def test_an_order_whose_stock_came_back_before_its_deadline_is_cancelled_by_it(uow):
    """A release read before the PAYMENT_FAILED that caused it: nothing is held, so the timer
    ends the order at once."""
    order_id = await placed(uow, deadline_seconds=0.3)
    await deliver(uow, inventory_released(order_id))
    await wait_past_deadline(uow, order_id)

    await expire_overdue_orders(uow)

    order = await details(uow, order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "deadline_exceeded")
    assert [row["event_type"] for row in await outbox(uow, order_id)] == ["ORDER_CREATED", "ORDER_CANCELLED"]
    assert await deliver(uow, payment_failed(order_id)) == []


async def test_payment_after_the_deadline_is_not_confirmed(uow):
    order_id = await placed(uow, deadline_seconds=0.0)

    [failed] = await deliver(uow, payment_completed(order_id))

    assert (type(failed), failed.reason) == (OrderConfirmationFailed, "deadline_exceeded")
    await deliver(uow, inventory_released(order_id))
    assert (await details(uow, order_id))["reason"] == "deadline_exceeded"


async def test_a_final_order_cannot_be_cancelled(uow):
    order_id = await placed(uow)
    await deliver(uow, payment_completed(order_id))

    with pytest.raises(OrderAlreadyFinal):
        await cancel_order(uow, order_id)
    with pytest.raises(OrderNotFound):
        await cancel_order(uow, uuid.uuid4())
    assert (await details(uow, order_id))["status"] == "CONFIRMED"


async def test_a_redelivered_payment_confirms_once(uow):
    order_id = await placed(uow)
    event, event_id = payment_completed(order_id), uuid.uuid4()

    await deliver(uow, event, event_id)
    assert await deliver(uow, event, event_id) == []
    assert await deliver(uow, event) == []  # the same fact under another id: the order is no longer in flight

    assert [row["event_type"] for row in await outbox(uow, order_id)] == ["ORDER_CREATED", "ORDER_CONFIRMED"]


async def test_an_event_for_an_unknown_order_commits_nothing(uow):
    order_id = uuid.uuid4()
    with pytest.raises(OrderNotFound):
        await deliver(uow, payment_completed(order_id))
    async with uow.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM inbox WHERE saga_id = $1", str(order_id)) == 0


async def test_an_unknown_order_has_no_details(uow):
    assert await details(uow, uuid.uuid4()) is None
