"""inventory_svc's rules without a database."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from pydantic import ValidationError

from inventory_svc import domain
from inventory_svc.domain import Rejection, Reservation, ReservationStatus, SetStock, check_availability
from shared.events import (
    InventoryCommitted,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCreated,
    OrderItem,
    utc_now,
)

pytestmark = pytest.mark.unit


def items(**quantities: int) -> list[OrderItem]:
    return [OrderItem(sku=sku, quantity=quantity) for sku, quantity in quantities.items()]


def test_enough_of_everything_passes():
    assert check_availability(items(A=2, B=3), {"A": 2, "B": 5}) is None


def test_short_items_are_named_in_sku_order():
    rejection = check_availability(items(C=2, A=9, B=1), {"A": 1, "B": 1, "C": 1})
    assert (rejection.reason, rejection.skus) == ("out_of_stock", ("A", "C"))


def test_unknown_skus_win_over_short_ones():
    rejection = check_availability(items(A=9, Z=1, Y=1), {"A": 1})
    assert (rejection.reason, rejection.skus) == ("unknown_sku", ("Y", "Z"))


def test_zero_available_is_short():
    assert check_availability(items(A=1), {"A": 0}) == Rejection("out_of_stock", ("A",))


@pytest.mark.parametrize("available", [0, 5, 1_000_000_000])
def test_set_stock_accepts_counts(available):
    assert SetStock(available=available).available == available


@pytest.mark.parametrize("available", [-1, "5", 1.5, True, None, 1_000_000_001])
def test_set_stock_refuses_non_counts(available):
    with pytest.raises(ValidationError):
        SetStock(available=available)


# --- the decisions for one order: reserve or reject, then release or commit --------------------

def created(**quantities: int) -> OrderCreated:
    return OrderCreated(order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="alice",
                        items=items(**quantities), amount="19.99", currency="EUR")


def test_a_new_order_is_reserved_whole_and_carries_the_order_on():
    order, reservation_id = created(A=2, B=1), uuid.uuid4()
    after, event = domain.on_order_created(None, {"A": 2, "B": 5}, order, reservation_id)
    assert (after.status, after.reservation_id, after.items, after.units_in) == (
        ReservationStatus.RESERVED, reservation_id, order.items, "reserved")
    assert isinstance(event, InventoryReserved)
    assert (event.reservation_id, event.items, event.customer_id, event.amount) == (
        reservation_id, order.items, "alice", order.amount)


@pytest.mark.parametrize(("available", "reason", "skus"), [({"A": 1}, "out_of_stock", ("A",)), ({}, "unknown_sku", ("A",))])
def test_a_rejected_order_is_recorded_with_its_reason_and_holds_nothing(available, reason, skus):
    order = created(A=2)
    after, event = domain.on_order_created(None, available, order, uuid.uuid4())
    assert (after.status, after.reason, after.skus, after.units_in) == (ReservationStatus.REJECTED, reason, skus, "available")
    assert (type(event), event.reason, event.skus) == (InventoryRejected, reason, skus)


@pytest.mark.parametrize("status", list(ReservationStatus))
def test_a_decided_order_is_never_reserved_again(status):
    """A redelivered ORDER_CREATED of any age: even a rejected order, once the stock is there."""
    order = created(A=1)
    before = Reservation(order.order_id, uuid.uuid4(), status, tuple(order.items))
    assert domain.on_order_created(before, {"A": 100}, order, uuid.uuid4()) == (before, None)


@pytest.mark.parametrize(("settle", "status", "units_in", "event_type"), [
    (domain.release, ReservationStatus.RELEASED, "available", InventoryReleased),
    (domain.commit, ReservationStatus.COMMITTED, "sold", InventoryCommitted),
])
def test_a_reservation_is_settled_once(settle, status, units_in, event_type):
    order = created(A=1)
    reserved = Reservation(order.order_id, uuid.uuid4(), ReservationStatus.RESERVED, tuple(order.items))
    after, event = settle(reserved)
    assert (after.status, after.units_in) == (status, units_in)
    assert (type(event), event.reservation_id) == (event_type, reserved.reservation_id)
    assert domain.release(after) == (after, None)
    assert domain.commit(after) == (after, None)


@pytest.mark.parametrize("settle", [domain.release, domain.commit])
def test_nothing_to_settle_for_an_order_never_reserved(settle):
    order = created(A=1)
    rejected = Reservation(order.order_id, uuid.uuid4(), ReservationStatus.REJECTED, tuple(order.items),
                           reason="out_of_stock", skus=("A",))
    assert settle(None) == (None, None)
    assert settle(rejected) == (rejected, None)
    assert settle(replace(rejected, status=ReservationStatus.RELEASED))[1] is None
