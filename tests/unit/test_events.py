"""The event catalog: every event round-trips, every bad input is one EventDecodeError."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared import topics
from shared.events import (
    EVENT_TYPES,
    CancellationReason,
    ConfirmationFailureReason,
    EventDecodeError,
    InventoryCommitted,
    InventoryRejected,
    InventoryRejectionReason,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderConfirmationFailed,
    OrderConfirmed,
    OrderCreated,
    PaymentCompleted,
    PaymentDeclineReason,
    PaymentFailed,
    PaymentFailureReason,
    PaymentRefunded,
    decode_event,
    encode_event,
)

pytestmark = pytest.mark.unit

ORDER_ID = uuid.UUID("7d3c1a8e-8a54-4c1e-9d59-2f3f1a2b3c4d")
AT = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
ITEMS = [{"sku": "WIDGET-1", "quantity": 2}, {"sku": "gadget_2", "quantity": 1}]


def every_event() -> list:
    common = {"order_id": ORDER_ID, "occurred_at": AT}
    return [
        OrderCreated(**common, customer_id="alice", items=ITEMS, amount="40.00", currency="EUR"),
        InventoryReserved(
            **common, reservation_id=uuid.uuid4(), items=ITEMS, customer_id="alice", amount="40", currency="EUR"
        ),
        InventoryRejected(**common, reason="out_of_stock", skus=["WIDGET-1"]),
        PaymentCompleted(**common, payment_id=uuid.uuid4(), amount="40.5", currency="USD"),
        PaymentFailed(**common, reason="limit_exceeded"),
        OrderConfirmed(**common),
        OrderConfirmationFailed(**common, reason="deadline_exceeded"),
        PaymentRefunded(**common, payment_id=uuid.uuid4(), amount="40.50", currency="USD"),
        InventoryReleased(**common, reservation_id=uuid.uuid4()),
        InventoryCommitted(**common, reservation_id=uuid.uuid4()),
        OrderCancelled(**common, reason="cancelled_by_customer"),
    ]


def order_created_json(**changes) -> dict:
    data = encode_event(every_event()[0])
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


def test_the_catalog_has_every_event_of_the_contract():
    assert set(EVENT_TYPES) == {
        "ORDER_CREATED", "INVENTORY_RESERVED", "INVENTORY_REJECTED", "PAYMENT_COMPLETED", "PAYMENT_FAILED",
        "ORDER_CONFIRMED", "ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED", "INVENTORY_RELEASED",
        "INVENTORY_COMMITTED", "ORDER_CANCELLED",
    }
    assert {type(event) for event in every_event()} == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", every_event(), ids=lambda event: event.event_type)
def test_every_event_round_trips_through_json(event):
    wire = json.dumps(encode_event(event))
    assert decode_event(wire) == event
    assert decode_event(wire.encode()) == event
    assert decode_event(json.loads(wire)) == event
    assert type(decode_event(wire)) is type(event)


@pytest.mark.parametrize("event", every_event(), ids=lambda event: event.event_type)
def test_every_event_carries_the_common_fields_and_routes_to_its_topic(event):
    data = encode_event(event)
    assert data["event_type"] == event.event_type
    assert data["schema_version"] == 1
    assert data["order_id"] == str(ORDER_ID)
    assert datetime.fromisoformat(data["occurred_at"]) == AT
    assert topics.topic_for(event.aggregate_type) == f"events.{event.aggregate_type}"


def test_each_service_emits_its_own_events():
    by_service = {cls.model_fields["event_type"].default: cls.aggregate_type for cls in EVENT_TYPES.values()}
    assert {name for name, aggregate in by_service.items() if aggregate == "order"} == {
        "ORDER_CREATED", "ORDER_CONFIRMED", "ORDER_CONFIRMATION_FAILED", "ORDER_CANCELLED"
    }
    assert {name for name, aggregate in by_service.items() if aggregate == "payment"} == {
        "PAYMENT_COMPLETED", "PAYMENT_FAILED", "PAYMENT_REFUNDED"
    }


def test_money_is_encoded_as_a_two_place_string():
    data = encode_event(every_event()[3])
    assert data["amount"] == "40.50"
    assert isinstance(every_event()[3].amount, Decimal)


def test_events_are_frozen():
    event = every_event()[0]
    with pytest.raises(ValidationError):
        event.amount = Decimal("1.00")


def test_unknown_extra_fields_are_ignored():
    assert decode_event(order_created_json(coupon="SPRING")) == every_event()[0]


@given(cents=st.integers(min_value=1, max_value=999_999_999_999))
def test_any_amount_in_cents_round_trips_exactly(cents):
    amount = Decimal(cents).scaleb(-2)
    data = order_created_json(amount=f"{amount:.2f}")
    event = decode_event(json.dumps(data))
    assert event.amount == amount
    assert encode_event(event)["amount"] == f"{amount:.2f}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"ORDER_CREATED"', "JSON object"),
        ("{}", "unknown event_type None"),
        ('{"event_type": "ORDER_SHIPPED", "schema_version": 1}', "unknown event_type 'ORDER_SHIPPED'"),
        ('{"event_type": 7}', "unknown event_type 7"),
    ],
)
def test_not_an_event_at_all(raw, message):
    with pytest.raises(EventDecodeError, match=message):
        decode_event(raw)


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None, ...])
def test_unsupported_schema_versions(version):
    with pytest.raises(EventDecodeError, match="unsupported schema_version"):
        decode_event(order_created_json(schema_version=version))


BAD_FIELDS = [
    ("order_id", "not-a-uuid"),
    ("order_id", ...),
    ("occurred_at", "2026-01-02T03:04:05"),  # naive
    ("occurred_at", "yesterday"),
    ("customer_id", ""),
    ("customer_id", "has space"),
    ("customer_id", ...),
    ("items", []),
    ("items", "WIDGET-1:2"),
    ("items", [{"sku": "WIDGET-1", "quantity": 0}]),
    ("items", [{"sku": "WIDGET-1", "quantity": -1}]),
    ("items", [{"sku": "WIDGET-1", "quantity": "2"}]),
    ("items", [{"sku": "WIDGET-1", "quantity": 1.5}]),
    ("items", [{"sku": "WIDGET-1", "quantity": True}]),
    ("items", [{"sku": "WIDGET-1"}]),
    ("items", [{"sku": "", "quantity": 1}]),
    ("items", [{"sku": "A:B", "quantity": 1}]),
    ("items", [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]),
    ("items", [{"sku": "A", "quantity": 1, "colour": "red"}]),
    ("amount", 40.0),
    ("amount", 40.5),
    ("amount", "40.001"),
    ("amount", "-40.00"),
    ("amount", "0.00"),
    ("amount", "0"),
    ("amount", "forty"),
    ("amount", "NaN"),
    ("amount", "Infinity"),
    ("amount", "4e1"),
    ("amount", " 40.00"),
    ("amount", "10000000000.00"),
    ("amount", True),
    ("amount", None),
    ("amount", ...),
    ("currency", "eur"),
    ("currency", "EURO"),
    ("currency", "ZZZ"),
    ("currency", "HRK"),  # withdrawn
    ("currency", "XAU"),  # gold, not money one pays with
    ("currency", 978),
    ("currency", ...),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_schema_violations_are_one_line_decode_errors(field, value):
    with pytest.raises(EventDecodeError) as caught:
        decode_event(json.dumps(order_created_json(**{field: value})))
    message = str(caught.value)
    assert message.startswith("invalid ORDER_CREATED: ")
    assert field in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("event_type", "changes"),
    [
        ("INVENTORY_REJECTED", {"reason": "sold_out", "skus": ["A"]}),
        ("INVENTORY_REJECTED", {"reason": "out_of_stock", "skus": []}),
        ("PAYMENT_FAILED", {"reason": "out_of_stock"}),
        ("ORDER_CONFIRMATION_FAILED", {"reason": "insufficient_funds"}),
        ("ORDER_CANCELLED", {"reason": "changed_my_mind"}),
        ("PAYMENT_REFUNDED", {"payment_id": str(uuid.uuid4()), "amount": "1.00"}),  # no currency
    ],
)
def test_reasons_and_required_fields_are_closed(event_type, changes):
    data = {"event_type": event_type, "schema_version": 1, "order_id": str(ORDER_ID), "occurred_at": AT.isoformat()}
    with pytest.raises(EventDecodeError, match=f"invalid {event_type}"):
        decode_event({**data, **changes})


@pytest.mark.parametrize("reason", ["out_of_stock", "unknown_sku", "insufficient_funds", "limit_exceeded",
                                    "unknown_customer", "cancelled_by_customer", "deadline_exceeded"])
def test_every_root_cause_can_cancel_an_order(reason):
    assert OrderCancelled(order_id=ORDER_ID, occurred_at=AT, reason=reason).reason == reason


@pytest.mark.parametrize("reason", ["insufficient_funds", "limit_exceeded", "unknown_customer",
                                    "cancelled_by_customer", "deadline_exceeded"])
def test_a_payment_fails_for_a_decline_or_for_a_void(reason):
    """A void declines the reservation of an order given up first with the order's own reason
    (docs/contract/flows.md)."""
    data = {"event_type": "PAYMENT_FAILED", "schema_version": 1, "order_id": str(ORDER_ID), "occurred_at": AT.isoformat(),
            "reason": reason}
    assert decode_event(data) == PaymentFailed(order_id=ORDER_ID, occurred_at=AT, reason=reason)


def test_the_reason_vocabularies_nest():
    """Every reason a saga can end with is a rejection, a decline or a cancellation, and a
    payment fails only for a decline or a cancellation."""
    rejection, decline, given_up = (set(get_args(r)) for r in (InventoryRejectionReason, PaymentDeclineReason,
                                                               ConfirmationFailureReason))
    assert set(get_args(PaymentFailureReason)) == decline | given_up
    assert set(get_args(CancellationReason)) == rejection | decline | given_up
    assert len(rejection | decline | given_up) == 7


def test_occurred_at_keeps_its_instant_in_any_zone():
    at = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    event = OrderConfirmed(order_id=ORDER_ID, occurred_at=at)
    assert decode_event(json.dumps(encode_event(event))).occurred_at == at


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000, b"\x00", b"\xff\xfe", b'"' * 600_000, b"", b"{}"])
def test_decode_event_turns_any_bytes_into_one_decode_error(raw) -> None:
    """Deep nesting raises RecursionError in the parser, not ValueError: still one EventDecodeError."""
    with pytest.raises(EventDecodeError) as caught:
        decode_event(raw)
    assert "\n" not in str(caught.value) and len(str(caught.value)) <= 400
