"""`saga tail`: which partitions it follows, which events it shows, and the one line per event."""
from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition

from saga_cli.errors import CliError
from saga_cli.kafka import KafkaEvent, partition_for_key
from saga_cli.tail import _partitions_to_follow, format_line, is_wanted

pytestmark = pytest.mark.unit

EXISTING = {"events.order": [0, 1, 2], "events.inventory": [0, 1, 2], "events.payment": [0, 1, 2], "connect-offsets": [0]}


def an_event(order_id: str, event_type: str = "PAYMENT_REFUNDED") -> KafkaEvent:
    return KafkaEvent(
        topic="events.payment", partition=2, offset=41, timestamp_ms=1_714_564_800_250, key=order_id,
        headers={
            "__debezium.context.connectorName": "postgresql",
            "id": "e-1", "eventType": event_type, "sagaId": order_id, "causationId": None, "traceparent": "00-abc-def-01",
        },
        value={"event_type": event_type, "order_id": order_id, "amount": "40.00"},
    )


def test_by_default_every_existing_event_topic_is_followed_whole() -> None:
    partitions = _partitions_to_follow(EXISTING, [], None)

    assert partitions == [TopicPartition(t, p) for t in ("events.order", "events.inventory", "events.payment") for p in (0, 1, 2)]


def test_one_saga_is_followed_on_its_partition_only() -> None:
    order_id = str(uuid.uuid4())

    partitions = _partitions_to_follow(EXISTING, ["events.order", "events.payment"], order_id)

    assert partitions == [
        TopicPartition("events.order", partition_for_key(order_id.encode(), 3)),
        TopicPartition("events.payment", partition_for_key(order_id.encode(), 3)),
    ]


def test_an_unknown_topic_is_one_clear_error() -> None:
    with pytest.raises(CliError, match=r"no such topic: events\.nope \(event topics here: events\.inventory, events\.order, events\.payment\)"):
        _partitions_to_follow(EXISTING, ["events.nope"], None)


def test_no_event_topics_at_all_points_at_the_stack() -> None:
    with pytest.raises(CliError, match="saga up"):
        _partitions_to_follow({"connect-offsets": [0]}, [], None)


def test_filters_by_saga_and_event_type() -> None:
    order_id = str(uuid.uuid4())
    event = an_event(order_id)

    assert is_wanted(event, None, None)
    assert is_wanted(event, order_id, "PAYMENT_REFUNDED")
    assert not is_wanted(event, str(uuid.uuid4()), None)
    assert not is_wanted(event, order_id, "ORDER_CREATED")


def test_a_line_has_place_type_key_headers_and_payload() -> None:
    order_id = str(uuid.uuid4())

    line = format_line(an_event(order_id)).plain

    assert "\n" not in line
    assert " events.payment[2]@41 PAYMENT_REFUNDED " in line
    assert f"key={order_id} id=e-1 sagaId={order_id} causationId= traceparent=00-abc-def-01 " in line
    assert line.endswith('{"event_type":"PAYMENT_REFUNDED","order_id":"' + order_id + '","amount":"40.00"}')
    assert "__debezium" not in line
