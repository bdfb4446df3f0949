"""Another service's event is recognised from its raw headers alone (shared/consumer.py,
`ignored_event_type`), exactly when the whole path would call it ignored (`EventProcessor.ignores`)."""
from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from inventory_svc.handlers import HANDLERS
from shared.consumer import IncomingMessage, handled_types, ignored_event_type
from shared.events import EVENT_TYPES

pytestmark = pytest.mark.unit

HANDLED = handled_types(HANDLERS)
IGNORABLE = frozenset(t.encode() for t in EVENT_TYPES if t not in HANDLED)


def record(headers) -> ConsumerRecord:
    return ConsumerRecord(topic="events.payment", partition=0, offset=7, timestamp=0, timestamp_type=0, key=b"k",
                          value=b"{}", checksum=None, serialized_key_size=1, serialized_value_size=2, headers=headers)


def whole_path_ignores(rec: ConsumerRecord) -> bool:
    """EventProcessor.ignores, on the message the whole path builds."""
    event_type = IncomingMessage.from_record(rec).headers.get("eventType", "")
    return event_type in EVENT_TYPES and event_type not in HANDLED


CASES = {
    "another service's event": [("eventType", b"PAYMENT_COMPLETED")],
    "an event this service handles": [("eventType", b"ORDER_CREATED")],
    "no eventType": [("id", b"1")],
    "no headers": [],
    "an unknown type": [("eventType", b"NOT_AN_EVENT")],
    "a null eventType": [("eventType", None)],
    "the last of two wins (handled)": [("eventType", b"PAYMENT_COMPLETED"), ("eventType", b"ORDER_CREATED")],
    "the last of two wins (ignored)": [("eventType", b"ORDER_CREATED"), ("eventType", b"PAYMENT_COMPLETED")],
    "a null after a value": [("eventType", b"PAYMENT_COMPLETED"), ("eventType", None)],
    "invalid UTF-8": [("eventType", b"PAYMENT_\xffCOMPLETED")],
    "a NUL": [("eventType", b"PAYMENT_COMPLETED\x00")],
    "lower case": [("eventType", b"payment_completed")],
    "another name's case": [("EventType", b"PAYMENT_COMPLETED")],
    "an empty name": [("", b"PAYMENT_COMPLETED")],
}


@pytest.mark.parametrize("headers", CASES.values(), ids=CASES.keys())
def test_the_fast_path_ignores_exactly_what_the_whole_path_ignores(headers):
    rec = record(headers)
    fast = ignored_event_type(rec.headers, IGNORABLE)

    assert (fast is not None) == whole_path_ignores(rec)
    if fast is not None:
        assert fast == IncomingMessage.from_record(rec).headers["eventType"]


def test_another_services_event_is_named_by_its_type():
    assert ignored_event_type(record([("eventType", b"PAYMENT_COMPLETED")]).headers, IGNORABLE) == "PAYMENT_COMPLETED"
    assert "PAYMENT_COMPLETED" not in HANDLED and "ORDER_CREATED" in HANDLED
