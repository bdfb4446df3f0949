"""order_svc's commands, handlers and SQL against a real PostgreSQL: placing (with
Idempotency-Key), cancelling, and every flow of the saga as order_svc sees it."""
from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest

from order_svc import repository
from order_svc.domain import IdempotencyKeyReused, OrderAlreadyFinal, OrderNotFound, OrderStatus, PlaceOrder
from order_svc.handlers import HANDLERS, cancel_order, place_order
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
from shared.testing import scratch_database
from shared.tracing import new_traceparent, parse_traceparent
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
    results = await asyncio.gather(*(place_order(uow, COMMAND, key) for _ in range(8)))

    assert len({result.order_id for result in results}) == 1
    assert [result.created for result in results].count(True) == 1


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


async def test_customer_cancel_in_flight_refunds_then_cancels(uow):
    order_id = await placed(uow)

    assert await cancel_order(uow, order_id) == OrderStatus.CANCEL_REQUESTED
    assert await cancel_order(uow, order_id) == OrderStatus.CANCEL_REQUESTED  # asking twice changes nothing
    [failed] = await deliver(uow, payment_completed(order_id))
    assert (type(failed), failed.reason) == (OrderConfirmationFailed, "cancelled_by_customer")
    [cancelled] = await deliver(uow, inventory_released(order_id))

    assert cancelled.reason == "cancelled_by_customer"
    order = await details(uow, order_id)
    assert (order["status"], order["reason"], order["cancel_requested"]) == ("CANCELLED", "cancelled_by_customer", True)
    assert statuses(order) == ["PENDING", "CANCEL_REQUESTED", "CANCELLING", "CANCELLED"]


async def test_a_cancelled_order_whose_payment_fails_keeps_the_payment_reason(uow):
    order_id = await placed(uow)
    await cancel_order(uow, order_id)

    await deliver(uow, payment_failed(order_id, "insufficient_funds"))
    await deliver(uow, inventory_released(order_id))

    order = await details(uow, order_id)
    assert (order["status"], order["reason"], order["cancel_requested"]) == ("CANCELLED", "insufficient_funds", True)


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
