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


def test_the_customer_cancelling_gives_the_order_up_at_once():
    after, event = domain.request_cancel(order())
    assert (after.status, after.reason, after.cancel_requested) == (OrderStatus.CANCELLING, "cancelled_by_customer", True)
    assert (type(event), event.order_id, event.reason) == (OrderConfirmationFailed, after.order_id, "cancelled_by_customer")


def test_the_deadline_gives_the_order_up_at_once():
    after, event = domain.on_deadline(order(past_deadline=True))
    assert (after.status, after.reason) == (OrderStatus.CANCELLING, "deadline_exceeded")
    assert (type(event), event.reason) == (OrderConfirmationFailed, "deadline_exceeded")


def test_the_deadline_timer_leaves_an_order_within_its_deadline_alone():
    before = order()
    assert domain.on_deadline(before) == (before, None)


@pytest.mark.parametrize("status", [OrderStatus.CANCELLING, OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_the_deadline_changes_nothing_once_the_order_left_flight(status):
    before = order(status, reason="insufficient_funds" if status != OrderStatus.CONFIRMED else None, past_deadline=True)
    assert domain.on_deadline(before) == (before, None)


@pytest.mark.parametrize("give_up", [domain.request_cancel, domain.on_deadline])
def test_an_order_whose_stock_is_already_back_is_cancelled_at_once(give_up):
    """A release reached the PENDING order before the PAYMENT_FAILED that caused it: nothing is
    held, so giving the order up ends it at once (no ORDER_CONFIRMATION_FAILED to wait on)."""
    after, event = give_up(order(stock_released=True, past_deadline=True))
    reason = "cancelled_by_customer" if give_up is domain.request_cancel else "deadline_exceeded"
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, reason)
    assert (type(event), event.reason) == (OrderCancelled, reason)


def test_payment_completed_past_the_deadline_gives_the_order_up():
    """The timer has not seen it yet: the payment does not confirm it, it starts the refund."""
    after, event = domain.on_payment_completed(order(past_deadline=True))
    assert (after.status, event.reason) == (OrderStatus.CANCELLING, "deadline_exceeded")
    assert isinstance(event, OrderConfirmationFailed)


@pytest.mark.parametrize("reason", ["cancelled_by_customer", "deadline_exceeded"])
def test_a_given_up_order_is_never_confirmed(reason):
    given_up = order(OrderStatus.CANCELLING, reason=reason)
    assert domain.on_payment_completed(given_up) == (given_up, None)


@pytest.mark.parametrize("reason", ["cancelled_by_customer", "deadline_exceeded"])
def test_a_given_up_order_ends_with_its_own_reason_on_the_release(reason):
    given_up = order(OrderStatus.CANCELLING, reason=reason)
    still, nothing = domain.on_payment_failed(given_up, reason)  # the void's decline
    assert (still, nothing) == (given_up, None)
    cancelled, event = domain.on_inventory_released(still)
    assert (cancelled.status, cancelled.reason, event.reason) == (OrderStatus.CANCELLED, reason, reason)


def test_a_given_up_order_keeps_its_reason_when_the_payment_is_declined_for_another():
    given_up, _ = domain.request_cancel(order())
    after_decline, nothing = domain.on_payment_failed(given_up, "insufficient_funds")
    assert (after_decline, nothing) == (given_up, None)
    cancelled, event = domain.on_inventory_released(after_decline)
    assert event.reason == "cancelled_by_customer"


@pytest.mark.parametrize("reason", ["cancelled_by_customer", "deadline_exceeded"])
def test_a_given_up_order_rejected_by_inventory_ends_with_its_own_reason(reason):
    cancelled, event = domain.on_inventory_rejected(order(OrderStatus.CANCELLING, reason=reason), "out_of_stock")
    assert (cancelled.status, cancelled.reason) == (OrderStatus.CANCELLED, reason)
    assert (type(event), event.reason) == (OrderCancelled, reason)


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


def test_a_cancel_after_the_payment_failed_keeps_the_payment_reason():
    waiting, _ = domain.on_payment_failed(order(), "limit_exceeded")
    asked, nothing = domain.request_cancel(waiting)
    assert nothing is None  # nothing to refund or void: the payment failed
    assert (asked.status, asked.reason, asked.cancel_requested) == (OrderStatus.CANCELLING, "limit_exceeded", True)
    cancelled, event = domain.on_inventory_released(asked)
    assert (cancelled.reason, cancelled.cancel_requested, event.reason) == ("limit_exceeded", True, "limit_exceeded")


def test_cancelling_twice_changes_nothing_the_second_time():
    asked, _ = domain.request_cancel(order())
    assert domain.request_cancel(asked) == (asked, None)


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_a_final_order_cannot_be_cancelled(status):
    with pytest.raises(OrderAlreadyFinal, match=f"already {status}"):
        domain.request_cancel(order(status))


@pytest.mark.parametrize("reason", [None, "deadline_exceeded"])
def test_a_legacy_cancel_request_is_given_up_with_the_customers_reason(reason):
    """CANCEL_REQUESTED, an earlier version's cancellation in flight, even past the deadline."""
    legacy = order(OrderStatus.CANCEL_REQUESTED, cancel_requested=True, past_deadline=reason is not None)
    for fact in (domain.on_payment_completed, domain.on_deadline, domain.request_cancel):
        after, event = fact(legacy)
        if fact is domain.on_deadline and not legacy.past_deadline:
            assert event is None
            continue
        assert (after.status, event.reason) == (OrderStatus.CANCELLING, "cancelled_by_customer")


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED, OrderStatus.CANCELLING])
@pytest.mark.parametrize(
    "fact",
    [
        domain.on_payment_completed,
        lambda o: domain.on_payment_failed(o, "insufficient_funds"),
        domain.on_deadline,
    ],
)
def test_late_facts_change_nothing_once_the_order_left_flight(status, fact):
    before = order(status, reason="deadline_exceeded" if status != OrderStatus.CONFIRMED else None, past_deadline=True)
    assert fact(before) == (before, None)


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_a_rejection_or_release_of_a_final_order_changes_nothing(status):
    before = order(status)
    assert domain.on_inventory_released(before) == (before, None)
    assert domain.on_inventory_rejected(before, "out_of_stock") == (before, None)


def test_every_path_ends_terminal():
    """Walk every flow of the saga through the rules, events in either order where they travel
    on different topics; each ends CONFIRMED or CANCELLED, with the reason it must have."""
    cancel = domain.request_cancel
    late = lambda o: domain.on_deadline(replace(o, past_deadline=True))
    failed = lambda reason: lambda o: domain.on_payment_failed(o, reason)
    rejected = lambda o: domain.on_inventory_rejected(o, "out_of_stock")
    released, paid = domain.on_inventory_released, domain.on_payment_completed
    flows = {
        "happy": ([paid], (OrderStatus.CONFIRMED, None)),
        "stock short": ([rejected], (OrderStatus.CANCELLED, "out_of_stock")),
        "declined": ([failed("insufficient_funds"), released], (OrderStatus.CANCELLED, "insufficient_funds")),
        "declined, release first": ([released, failed("unknown_customer")], (OrderStatus.CANCELLED, "unknown_customer")),
        "paid too late": ([lambda o: paid(replace(o, past_deadline=True)), released],
                          (OrderStatus.CANCELLED, "deadline_exceeded")),
        "cancel, then refund": ([cancel, paid, released], (OrderStatus.CANCELLED, "cancelled_by_customer")),
        "cancel, then void": ([cancel, failed("cancelled_by_customer"), released],
                              (OrderStatus.CANCELLED, "cancelled_by_customer")),
        "cancel, void, release first": ([cancel, released, failed("cancelled_by_customer")],
                                        (OrderStatus.CANCELLED, "cancelled_by_customer")),
        "cancel, then rejected": ([cancel, rejected], (OrderStatus.CANCELLED, "cancelled_by_customer")),
        "deadline, then refund": ([late, paid, released], (OrderStatus.CANCELLED, "deadline_exceeded")),
        "deadline, then void": ([late, failed("deadline_exceeded"), released], (OrderStatus.CANCELLED, "deadline_exceeded")),
        "deadline, then rejected": ([late, rejected], (OrderStatus.CANCELLED, "deadline_exceeded")),
        "deadline after a release": ([released, late], (OrderStatus.CANCELLED, "deadline_exceeded")),
        "deadline after a decline": ([failed("limit_exceeded"), late, released], (OrderStatus.CANCELLED, "limit_exceeded")),
    }
    for name, (steps, expected) in flows.items():
        current = order()
        for step in steps:
            current, _ = step(current)
        assert (current.status, current.reason) == expected, name


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
