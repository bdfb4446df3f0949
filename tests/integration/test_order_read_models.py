"""order_svc's read side against a real PostgreSQL (a scratch database): sagas by state,
the counts behind the saga gauges, one order's timeline, and the finished-saga counter
that only a committed, non-duplicate handling moves."""
from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from order_svc import repository
from order_svc.app import create_runtime
from order_svc.domain import PlaceOrder
from order_svc.handlers import HANDLERS, cancel_order, place_order
from shared.events import InventoryRejected, InventoryReleased, PaymentCompleted, PaymentFailed, utc_now
from shared.settings import OrderSettings
from shared.testing import scratch_database
from shared.tracing import new_traceparent
from shared.uow import Envelope, UnitOfWork

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture(scope="module")
async def dsn(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn, "order_svc") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def uow(dsn):
    uow = await UnitOfWork.connect(dsn, "order_svc")
    yield uow
    await uow.close()


def command(customer: str = "alice") -> PlaceOrder:
    return PlaceOrder(customer_id=customer, items=[{"sku": "WIDGET-1", "quantity": 2}], amount="40.00", currency="EUR")


async def placed(uow: UnitOfWork, deadline_seconds: float = HOUR, customer: str = "alice") -> uuid.UUID:
    return (await place_order(uow, command(customer), deadline_seconds=deadline_seconds)).order_id


def envelope(event, event_id: uuid.UUID | None = None) -> Envelope:
    return Envelope(event_id=event_id or uuid.uuid4(), event=event, traceparent=new_traceparent())


def payment_completed(order_id):
    return PaymentCompleted(order_id=order_id, occurred_at=utc_now(), payment_id=uuid.uuid4(), amount="40.00", currency="EUR")


async def listed(uow: UnitOfWork, which: str, limit: int = 1000) -> list[dict]:
    async with uow.connection() as connection:
        return await repository.recent_orders(connection, which, limit)


async def timeline(uow: UnitOfWork, order_id: uuid.UUID) -> dict | None:
    async with uow.connection() as connection:
        return await repository.order_timeline(connection, order_id, "order_svc")


def finished(status: str, reason: str) -> float:
    return REGISTRY.get_sample_value("saga_sagas_finished_total", {"status": status, "reason": reason}) or 0.0


async def test_sagas_by_state_newest_first(uow):
    customer = f"c-{uuid.uuid4().hex[:8]}"
    waiting = await placed(uow, customer=customer)
    late = await placed(uow, deadline_seconds=0.0, customer=customer)
    done = await placed(uow, customer=customer)
    await uow.handle(envelope(payment_completed(done)), HANDLERS)

    def ids(orders):
        return [order["order_id"] for order in orders if order["customer_id"] == customer]

    assert ids(await listed(uow, "all")) == [str(done), str(late), str(waiting)]
    assert ids(await listed(uow, "in_flight")) == [str(late), str(waiting)]
    assert ids(await listed(uow, "stuck")) == [str(late)]
    [order] = [order for order in await listed(uow, "all") if order["order_id"] == str(late)]
    assert order["stuck"] is True and order["status"] == "PENDING" and order["reason"] is None
    assert (order["amount"], order["currency"], order["items"]) == ("40.00", "EUR", [{"sku": "WIDGET-1", "quantity": 2}])
    assert set(order) >= {"order_id", "status", "reason", "customer_id", "amount", "currency",
                          "created_at", "deadline_at", "updated_at"}


async def test_the_limit_keeps_the_newest(uow):
    for _ in range(3):
        newest = await placed(uow)
    [order] = await listed(uow, "all", limit=1)
    assert order["order_id"] == str(newest)


async def test_counts_of_sagas_in_flight_and_stuck(uow):
    async with uow.connection() as connection:
        before = await repository.saga_counts(connection)
    await placed(uow)
    await placed(uow, deadline_seconds=0.0)
    rejected = await placed(uow)
    await uow.handle(envelope(InventoryRejected(order_id=rejected, occurred_at=utc_now(), reason="out_of_stock",
                                                skus=["WIDGET-1"])), HANDLERS)
    async with uow.connection() as connection:
        after = await repository.saga_counts(connection)
    assert (after.in_flight - before.in_flight, after.stuck - before.stuck) == (2, 1)


async def test_the_timeline_of_a_confirmed_order(uow):
    order_id = await placed(uow)
    paid = envelope(payment_completed(order_id))
    await uow.handle(paid, HANDLERS)

    found = await timeline(uow, order_id)

    assert (found["status"], found["stuck"]) == ("CONFIRMED", False)
    steps = [(s["kind"], s["event_type"], s["status"]) for s in found["steps"]]
    assert steps == [
        ("emitted", "ORDER_CREATED", "PENDING"),
        ("consumed", "PAYMENT_COMPLETED", None),
        ("emitted", "ORDER_CONFIRMED", "CONFIRMED"),
    ]
    created, consumed, confirmed = found["steps"]
    assert consumed["event_id"] == str(paid.event_id)
    assert confirmed["causation_id"] == str(paid.event_id)
    assert created["causation_id"] is None
    assert 0 <= created["since_start_ms"] <= consumed["since_start_ms"] <= confirmed["since_start_ms"]


async def test_the_timeline_of_a_cancellation_in_flight(uow):
    order_id = await placed(uow)
    await cancel_order(uow, order_id)
    await uow.handle(envelope(payment_completed(order_id)), HANDLERS)
    await uow.handle(envelope(InventoryReleased(order_id=order_id, occurred_at=utc_now(), reservation_id=uuid.uuid4())), HANDLERS)

    found = await timeline(uow, order_id)

    assert (found["status"], found["reason"]) == ("CANCELLED", "cancelled_by_customer")
    assert [(s["kind"], s["event_type"], s["status"]) for s in found["steps"]] == [
        ("emitted", "ORDER_CREATED", "PENDING"),
        ("emitted", "ORDER_CONFIRMATION_FAILED", "CANCELLING"),  # at once, with the customer's request
        ("consumed", "PAYMENT_COMPLETED", None),  # changes nothing: payment_svc refunds it
        ("consumed", "INVENTORY_RELEASED", None),
        ("emitted", "ORDER_CANCELLED", "CANCELLED"),
    ]
    assert found["steps"][-1]["reason"] == "cancelled_by_customer"


async def test_a_status_change_recorded_by_a_consumed_event(uow):
    order_id = await placed(uow)
    failed = envelope(PaymentFailed(order_id=order_id, occurred_at=utc_now(), reason="insufficient_funds"))
    await uow.handle(failed, HANDLERS)

    steps = (await timeline(uow, order_id))["steps"]

    assert [(s["kind"], s["event_type"], s["status"], s["reason"]) for s in steps] == [
        ("emitted", "ORDER_CREATED", "PENDING", None),
        ("consumed", "PAYMENT_FAILED", "CANCELLING", "insufficient_funds"),
    ]


async def test_an_unknown_order_has_no_timeline(uow):
    assert await timeline(uow, uuid.uuid4()) is None


async def test_finished_sagas_are_counted_once_after_commit(dsn):
    """Through order_svc's own runtime: the counter moves when a handling that finished a saga
    committed, not for a duplicate delivery, nor for an event that finishes nothing."""
    runtime = create_runtime(OrderSettings(database_url=dsn, http_port=18999))
    try:
        uow = await runtime.uow()
        confirmed, rejected = await placed(uow), await placed(uow)
        before = finished("CONFIRMED", ""), finished("CANCELLED", "out_of_stock")

        paid = envelope(payment_completed(confirmed))
        await uow.handle(paid, HANDLERS)
        await uow.handle(paid, HANDLERS)  # redelivered
        await uow.handle(envelope(payment_completed(confirmed)), HANDLERS)  # the same fact again, another id
        short = envelope(InventoryRejected(order_id=rejected, occurred_at=utc_now(), reason="out_of_stock", skus=["X"]))
        await uow.handle(short, HANDLERS)
        await uow.handle(short, HANDLERS)

        after = finished("CONFIRMED", ""), finished("CANCELLED", "out_of_stock")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    finally:
        await (await runtime.pool()).close()
