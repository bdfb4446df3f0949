"""`saga tail`: which partitions it follows, which events it shows, and the one line per event."""
from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from saga_cli.errors import CliError
from saga_cli.kafka import KafkaEvent, decode_record, partition_for_key
from saga_cli.output import TEXT_CHARS
from saga_cli.tail import MAX_HEADERS_SHOWN, PAYLOAD_CHARS, _partitions_to_follow, format_line, is_wanted

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


# --- a line for any record: one line, bounded, nothing unprintable ------------------------------

def decoded(value: bytes | None, headers=(), key: bytes | None = b"k-1", timestamp: int = 1_714_564_800_250) -> KafkaEvent:
    return decode_record(ConsumerRecord(
        topic="events.order", partition=0, offset=3, timestamp=timestamp, timestamp_type=0, key=key, value=value,
        checksum=None, serialized_key_size=0, serialized_value_size=0, headers=list(headers),
    ))


HOSTILE_RECORDS = {
    "100,000 '['": decoded(b"[" * 100_000),
    "NUL bytes": decoded(b"a\x00b", [("id", b"\x00\x00")]),
    "invalid UTF-8": decoded(b"\xff\xfe", [("eventType", b"\xffORDER")], key=b"\xff"),
    "terminal escapes and newlines": decoded(b"\x1b[2J\nrm -rf", [("eventType", b"X\r\nY"), ("id", b"\x1b]0;title\x07")], key=b"a\nb"),
    "line and paragraph separators": decoded("\u2028\u2029\u202e".encode(), [("sagaId", "\u2028".encode())]),
    "a huge value": decoded(b"v" * 5_000_000),
    "a huge JSON value": decoded(b'{"a": "' + b"w" * 900_000 + b'"}'),
    "a lone surrogate in JSON": decoded(b'{"a": "\\ud800"}', [("id", b'"\\ud800"')]),
    "huge headers and key": decoded(b"{}", [("h" * 10_000, b"x" * 10_000)] * 3, key=b"k" * 100_000),
    "thousands of headers": decoded(b"{}", [("dup", b"1")] * 5_000),
    "empty and duplicate names": decoded(b"{}", [("", b"a"), ("", b"b"), ("eventType", b"A"), ("eventType", b"B")]),
    "no key, value or headers": decoded(None, key=None),
    "a timestamp beyond any calendar": decoded(b"{}", timestamp=2**63 - 1),
}

# the fixed parts of a line plus each part at its limit
LONGEST_LINE = 100 + 2 * TEXT_CHARS + MAX_HEADERS_SHOWN * (2 * TEXT_CHARS + 2) + 20 + PAYLOAD_CHARS


@pytest.mark.parametrize("event", HOSTILE_RECORDS.values(), ids=HOSTILE_RECORDS.keys())
def test_any_record_is_one_bounded_printable_line(event: KafkaEvent) -> None:
    line = format_line(event).plain

    assert line.isprintable(), repr(line[:300])
    assert len(line) <= LONGEST_LINE
    assert f"events.order[0]@3 " in line


def test_undecodable_text_is_cut_to_the_line_limit_and_escaped() -> None:
    line = format_line(HOSTILE_RECORDS["a huge value"]).plain
    assert line.endswith(" " + "v" * (TEXT_CHARS - 1) + "…")

    line = format_line(HOSTILE_RECORDS["terminal escapes and newlines"]).plain
    assert " X\\r\\nY key=a\\nb id=\\x1b]0;title\\x07 \\x1b[2J\\nrm -rf" in line

    assert format_line(HOSTILE_RECORDS["NUL bytes"]).plain.endswith(" id=\\x00\\x00 a\\x00b")
    assert format_line(HOSTILE_RECORDS["invalid UTF-8"]).plain.endswith(" \\xffORDER key=\\xff \\xff\\xfe")
    assert format_line(HOSTILE_RECORDS["100,000 '['"]).plain.endswith(" " + "[" * (TEXT_CHARS - 1) + "…")


def test_every_header_is_shown_as_it_came_up_to_a_limit() -> None:
    assert format_line(HOSTILE_RECORDS["empty and duplicate names"]).plain.endswith(' B key=k-1 ""=a ""=b {}')
    line = format_line(HOSTILE_RECORDS["thousands of headers"]).plain
    assert line.count(" dup=1") == MAX_HEADERS_SHOWN and f"(+{5_000 - MAX_HEADERS_SHOWN} headers)" in line
