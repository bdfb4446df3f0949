"""order_svc's rules without a database: what each fact does to an order in each state."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from pydantic import ValidationError

from order_svc import domain
from order_svc.domain import Order, OrderAlreadyFinal, OrderStatus, PlaceOrder
from shared.events import OrderCancelled, OrderConfirmationFailed, OrderConfirmed

pytestmark = pytest.mark.unit

ALL_STATUSES = list(OrderStatus)


def order(status=OrderStatus.PENDING, **flags) -> Order:
    return Order(order_id=uuid.uuid4(), status=status, **flags)


def test_payment_completed_confirms_a_pending_order():
    after, event = domain.on_payment_completed(order())
    assert after.status == OrderStatus.CONFIRMED
    assert isinstance(event, OrderConfirmed)


def test_payment_completed_after_a_cancel_request_fails_confirmation():
    before = domain.request_cancel(order())
    after, event = domain.on_payment_completed(before)
    assert (after.status, after.reason) == (OrderStatus.CANCELLING, "cancelled_by_customer")
    assert (type(event), event.reason) == (OrderConfirmationFailed, "cancelled_by_customer")


def test_payment_completed_past_the_deadline_fails_confirmation():
    after, event = domain.on_payment_completed(order(past_deadline=True))
    assert (after.status, event.reason) == (OrderStatus.CANCELLING, "deadline_exceeded")


def test_the_customers_request_is_the_reason_even_past_the_deadline():
    _, event = domain.on_payment_completed(order(OrderStatus.CANCEL_REQUESTED, cancel_requested=True, past_deadline=True))
    assert event.reason == "cancelled_by_customer"


@pytest.mark.parametrize("status", [OrderStatus.PENDING, OrderStatus.CANCEL_REQUESTED])
def test_a_rejection_cancels_at_once_with_its_reason(status):
    after, event = domain.on_inventory_rejected(order(status), "unknown_sku")
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, "unknown_sku")
    assert (type(event), event.reason) == (OrderCancelled, "unknown_sku")


def test_payment_failed_waits_for_the_stock_then_release_cancels():
    waiting, nothing = domain.on_payment_failed(order(), "insufficient_funds")
    assert nothing is None
    assert (waiting.status, waiting.reason) == (OrderStatus.CANCELLING, "insufficient_funds")
    cancelled, event = domain.on_inventory_released(waiting)
    assert (cancelled.status, event.reason) == (OrderStatus.CANCELLED, "insufficient_funds")


def test_a_release_arriving_before_the_payment_failure_is_remembered():
    remembered, nothing = domain.on_inventory_released(order())
    assert nothing is None
    assert (remembered.status, remembered.stock_released) == (OrderStatus.PENDING, True)
    cancelled, event = domain.on_payment_failed(remembered, "unknown_customer")
    assert (cancelled.status, event.reason) == (OrderStatus.CANCELLED, "unknown_customer")


def test_a_cancel_request_is_kept_when_the_payment_fails_anyway():
    requested = domain.request_cancel(order())
    waiting, _ = domain.on_payment_failed(requested, "limit_exceeded")
    cancelled, event = domain.on_inventory_released(waiting)
    assert (cancelled.reason, cancelled.cancel_requested, event.reason) == ("limit_exceeded", True, "limit_exceeded")


def test_cancel_requests():
    requested = domain.request_cancel(order())
    assert (requested.status, requested.cancel_requested) == (OrderStatus.CANCEL_REQUESTED, True)
    assert domain.request_cancel(requested) == requested
    cancelling = order(OrderStatus.CANCELLING, reason="insufficient_funds")
    assert domain.request_cancel(cancelling) == replace(cancelling, cancel_requested=True)


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_a_final_order_cannot_be_cancelled(status):
    with pytest.raises(OrderAlreadyFinal, match=f"already {status}"):
        domain.request_cancel(order(status))


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED, OrderStatus.CANCELLING])
@pytest.mark.parametrize(
    "fact",
    [
        domain.on_payment_completed,
        lambda o: domain.on_payment_failed(o, "insufficient_funds"),
        lambda o: domain.on_inventory_rejected(o, "out_of_stock"),
    ],
)
def test_late_facts_change_nothing_once_the_order_left_flight(status, fact):
    before = order(status, reason="deadline_exceeded" if status != OrderStatus.CONFIRMED else None)
    assert fact(before) == (before, None)


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_a_release_of_a_final_order_changes_nothing(status):
    before = order(status)
    assert domain.on_inventory_released(before) == (before, None)


def test_every_path_ends_terminal():
    """Walk every flow of the saga through the rules; each ends CONFIRMED or CANCELLED."""
    flows = {
        "happy": [domain.on_payment_completed],
        "stock short": [lambda o: domain.on_inventory_rejected(o, "out_of_stock")],
        "declined": [lambda o: domain.on_payment_failed(o, "insufficient_funds"), domain.on_inventory_released],
        "declined, release first": [domain.on_inventory_released, lambda o: domain.on_payment_failed(o, "unknown_customer")],
        "late": [domain.on_payment_completed, domain.on_inventory_released],
    }
    for name, steps in flows.items():
        current = order(past_deadline=name == "late")
        for step in steps:
            current, _ = step(current)
        assert current.status in domain.TERMINAL, name


def test_place_order_fingerprint_ignores_item_order():
    a = PlaceOrder(customer_id="c", items=[{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}], amount="1", currency="EUR")
    b = PlaceOrder(customer_id="c", items=[{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 1}], amount="1.00", currency="EUR")
    c = PlaceOrder(customer_id="c", items=[{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 1}], amount="1.01", currency="EUR")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": "c", "items": [], "amount": "1.00", "currency": "EUR"},
        {"customer_id": "c", "items": [{"sku": "A", "quantity": 1}], "amount": 1.0, "currency": "EUR"},
        {"customer_id": "c", "items": [{"sku": "A", "quantity": 1}], "amount": "1.00", "currency": "eur"},
        {"customer_id": "c", "items": [{"sku": "A", "quantity": 1}], "amount": "1.00", "currency": "EUR", "x": 1},
        {"items": [{"sku": "A", "quantity": 1}], "amount": "1.00", "currency": "EUR"},
    ],
)
def test_a_bad_order_is_refused(body):
    with pytest.raises(ValidationError):
        PlaceOrder.model_validate(body)
