"""`read_key` (behind `saga trace`): the key's partition only, from a time, up to the end seen at start."""
from __future__ import annotations

import dataclasses
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp

from saga_cli.errors import CliError
from saga_cli.kafka import MAX_JSON_DEPTH, MAX_TEXT_CHARS, decode_record, partition_for_key, read_key, read_range

pytestmark = pytest.mark.unit

PARTITIONS = {"events.order": [0, 1, 2], "events.inventory": [0, 1, 2], "events.payment": [0, 1, 2]}


def record(topic: str, partition: int, offset: int, key: str, timestamp: int, event_type: str = "ORDER_CREATED"):
    return ConsumerRecord(
        topic=topic, partition=partition, offset=offset, timestamp=timestamp, timestamp_type=0,
        key=key.encode(), value=b'{"order_id": "x"}', checksum=None, serialized_key_size=len(key),
        serialized_value_size=17, headers=[("id", str(uuid.uuid4()).encode()), ("eventType", event_type.encode())],
    )


UNPARSEABLE = object()
"""Stands in the fake log for a record the client's parser raises on."""


class FakeConsumer:
    """An in-memory log per partition, fetched a few records at a time, like a broker would."""

    def __init__(self, log: dict[TopicPartition, list[ConsumerRecord]], batch: int = 2) -> None:
        self.log = log
        self.batch = batch
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.on_first_fetch = lambda: None
        self.fetches = 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    async def end_offsets(self, partitions):
        return {p: len(self.log.get(p, [])) for p in partitions}

    async def beginning_offsets(self, partitions):
        return {p: 0 for p in partitions}

    async def offsets_for_times(self, timestamps):
        found = {}
        for p, at in timestamps.items():
            match = next((r for r in self.log.get(p, []) if r.timestamp >= at), None)
            found[p] = None if match is None else OffsetAndTimestamp(match.offset, match.timestamp)
        return found

    def seek(self, partition, offset):
        self.positions[partition] = offset

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        if self.fetches == 0:
            self.on_first_fetch()
        self.fetches += 1
        out = {}
        for p in partitions:
            start = self.positions[p]
            records = self.log.get(p, [])[start:start + (max_records or self.batch)]
            if any(record is UNPARSEABLE for record in records):
                # as aiokafka's parser does: the call fails, the partitions drained before it
                # in this call have moved on (their records lost to the caller), this one has not
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
            if records:
                out[p] = records
                self.positions[p] = start + len(records)
        return out

    async def position(self, partition):
        return self.positions[partition]


def saga_partition(topic: str, order_id: str) -> TopicPartition:
    return TopicPartition(topic, partition_for_key(order_id.encode(), len(PARTITIONS[topic])))


def log_with(order_id: str, other_id: str) -> dict[TopicPartition, list[ConsumerRecord]]:
    """Each topic's saga partition holds the saga's events interleaved with another key's."""
    log: dict[TopicPartition, list[ConsumerRecord]] = {}
    for topic in PARTITIONS:
        partition = saga_partition(topic, order_id)
        log[partition] = [
            record(topic, partition.partition, offset, order_id if offset % 2 == 0 else other_id, 1_000 + offset * 10)
            for offset in range(6)
        ]
    return log


async def test_reads_only_the_keys_partition_of_each_topic_and_only_its_records() -> None:
    order_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    consumer = FakeConsumer(log_with(order_id, other_id))

    events = await read_key(consumer, order_id, PARTITIONS)

    assert consumer.assigned == [saga_partition(topic, order_id) for topic in PARTITIONS]
    assert {event.key for event in events} == {order_id}
    assert len(events) == 3 * 3
    assert {(event.topic, event.offset) for event in events} == {(t, o) for t in PARTITIONS for o in (0, 2, 4)}


async def test_stops_at_the_end_offsets_captured_at_start() -> None:
    order_id = str(uuid.uuid4())
    log = log_with(order_id, order_id)
    consumer = FakeConsumer(log)
    order_partition = saga_partition("events.order", order_id)

    def more_arrive() -> None:
        log[order_partition].append(record("events.order", order_partition.partition, 6, order_id, 9_999))

    consumer.on_first_fetch = more_arrive

    events = await read_key(consumer, order_id, PARTITIONS)

    assert max(event.offset for event in events if event.topic == "events.order") == 5


async def test_since_seeks_by_time_and_a_time_after_everything_reads_nothing() -> None:
    order_id = str(uuid.uuid4())
    consumer = FakeConsumer(log_with(order_id, order_id))

    events = await read_key(consumer, order_id, PARTITIONS, since_ms=1_035)
    assert {event.offset for event in events} == {4, 5}

    consumer = FakeConsumer(log_with(order_id, order_id))
    assert await read_key(consumer, order_id, PARTITIONS, since_ms=99_999) == []


async def test_topics_that_do_not_exist_are_skipped() -> None:
    order_id = str(uuid.uuid4())
    consumer = FakeConsumer(log_with(order_id, order_id))

    events = await read_key(consumer, order_id, {"events.order": [0, 1, 2]})

    assert {event.topic for event in events} == {"events.order"}
    assert await read_key(FakeConsumer({}), order_id, {}) == []


async def test_a_partition_that_never_reaches_its_end_fails_within_the_timeout() -> None:
    order_id = str(uuid.uuid4())
    consumer = FakeConsumer(log_with(order_id, order_id), batch=0)

    with pytest.raises(CliError, match="did not deliver"):
        await read_key(consumer, order_id, PARTITIONS, timeout_s=0.2)


async def test_headers_and_value_are_decoded() -> None:
    order_id = str(uuid.uuid4())
    consumer = FakeConsumer(log_with(order_id, order_id))

    event = (await read_key(consumer, order_id, {"events.order": [0, 1, 2]}))[0]

    assert event.event_type == "ORDER_CREATED"
    assert event.value == {"order_id": "x"}
    assert event.service == "order_svc"
    assert event.causation_id is None


# --- any record decodes: whatever its bytes, size or headers ----------------------------------

def raw_record(value: bytes | None, headers=(), key: bytes | None = b"k-1", timestamp: int = 1_714_564_800_000) -> ConsumerRecord:
    return ConsumerRecord(
        topic="events.order", partition=0, offset=7, timestamp=timestamp, timestamp_type=0, key=key, value=value,
        checksum=None, serialized_key_size=len(key or b""), serialized_value_size=len(value or b""), headers=list(headers),
    )


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE_VALUES = {
    # name: (value bytes, what the text starts with)
    "100,000 '['": (b"[" * 100_000, "[[[["),
    "NUL bytes": (b"a\x00b\x00", "a\x00b\x00"),
    "invalid UTF-8": (b"\xff\xfe{\x80}", "\\xff\\xfe{\\x80}"),
    "a 5 MB value": (b"x" * 5_000_000, "xxxx"),
    "5 MB of valid JSON": (b'"' + b"y" * 5_000_000 + b'"', '"yyy'),
    "JSON nested too deep": (nested(MAX_JSON_DEPTH + 1), "[[[["),
    "not JSON": (b"hello\nworld", "hello\nworld"),
    "NaN-looking junk": (b"{\"a\": NaNx}", '{"a": NaNx}'),
}


@pytest.mark.parametrize("value, starts", HOSTILE_VALUES.values(), ids=HOSTILE_VALUES.keys())
def test_a_value_that_is_not_json_is_its_text_cut_to_a_bounded_length(value: bytes, starts: str) -> None:
    event = decode_record(raw_record(value))

    assert isinstance(event.value, str)
    assert event.value.startswith(starts)
    assert len(event.value) <= MAX_TEXT_CHARS + len(f"… ({len(value)} bytes)")
    if len(value) > MAX_TEXT_CHARS * 4:
        assert event.value.endswith(f"… ({len(value)} bytes)")


def test_json_is_decoded_up_to_the_depth_limit_and_nul_escapes_stay_data() -> None:
    assert decode_record(raw_record(nested(MAX_JSON_DEPTH))).value is not None
    assert isinstance(decode_record(raw_record(nested(MAX_JSON_DEPTH))).value, list)
    assert decode_record(raw_record(b'{"sku": "A\\u0000", "q": "\\ud800"}')).value == {"sku": "A\x00", "q": "\ud800"}
    assert decode_record(raw_record(None)).value is None
    assert decode_record(raw_record(b"")).value == ""


def test_duplicate_and_empty_header_names_are_all_kept_and_the_last_value_counts() -> None:
    headers = [("eventType", b"ORDER_CREATED"), ("eventType", b"PAYMENT_REFUNDED"), ("", b"empty name"), ("id", None)]

    event = decode_record(raw_record(b"{}", headers))

    assert event.header_pairs == (("eventType", "ORDER_CREATED"), ("eventType", "PAYMENT_REFUNDED"), ("", "empty name"), ("id", None))
    assert event.headers == {"eventType": "PAYMENT_REFUNDED", "": "empty name", "id": None}
    assert event.event_type == "PAYMENT_REFUNDED"  # as the services read it: the last value
    assert event.event_id is None


def test_header_values_and_keys_of_any_bytes_are_bounded_text() -> None:
    headers = [("id", b"\xff\x00\n"), ("traceparent", b"t" * 100_000), ("causationId", b'"\xff"'), ("sagaId", b'"quoted"')]

    event = decode_record(raw_record(b"{}", headers, key=b"\xc3(" + b"k" * 100_000))

    assert event.headers["id"] == "\\xff\x00\n"
    assert event.headers["traceparent"].endswith("… (100000 bytes)") and len(event.headers["traceparent"]) < MAX_TEXT_CHARS + 20
    assert event.headers["causationId"] == '"\\xff"'
    assert event.headers["sagaId"] == "quoted"  # a JSON-encoded string header is unquoted
    assert event.key.startswith("\\xc3(kkk") and event.key.endswith("… (100002 bytes)")


@pytest.mark.parametrize("timestamp", [9_000_000_000_000_000, -62_135_596_800_001, 2**63 - 1])
def test_a_timestamp_no_calendar_can_show_is_given_in_ms(timestamp: int) -> None:
    event = decode_record(raw_record(b"{}", timestamp=timestamp))

    assert event.at == f"{timestamp} ms since the epoch"


async def test_a_poison_record_among_a_sagas_records_is_read_like_the_others() -> None:
    order_id = str(uuid.uuid4())
    log = log_with(order_id, order_id)
    partition = saga_partition("events.order", order_id)
    log[partition][3] = dataclasses.replace(log[partition][3], value=b"[" * 100_000, headers=[("", b"\xff")] * 3)

    events = await read_key(FakeConsumer(log), order_id, {"events.order": [0, 1, 2]})

    assert [event.offset for event in events] == list(range(6))
    assert events[3].value.startswith("[[[[") and events[3].header_pairs == (("", "\\xff"),) * 3


async def test_a_record_the_client_cannot_parse_is_shown_as_unreadable_and_nothing_else_is_lost() -> None:
    """The failed fetch moved the first partition past records it never returned: they are
    read again, the unreadable record comes back as one line of text, the rest follows."""
    order_id = str(uuid.uuid4())
    first, second = TopicPartition("events.order", 0), TopicPartition("events.order", 1)
    log = {
        first: [record("events.order", 0, n, order_id, 1000 + n) for n in range(3)],
        second: [record("events.order", 1, 0, order_id, 2000), UNPARSEABLE,
                 record("events.order", 1, 2, order_id, 2002)],
    }
    consumer = FakeConsumer(log, batch=3)
    events = await read_range(consumer, {first: 0, second: 0}, {first: 3, second: 3}, timeout_s=5)
    assert sorted((e.partition, e.offset) for e in events) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    unreadable = next(e for e in events if (e.partition, e.offset) == (1, 1))
    assert unreadable.value.startswith("unreadable record (UnicodeDecodeError") and unreadable.key is None
