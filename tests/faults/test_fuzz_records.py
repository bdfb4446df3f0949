"""Seeded fuzzing of the four topics while sagas run: every hostile record is dead-lettered, nothing stops.

A bad producer writes FUZZ_RECORDS records to each of events.order, events.inventory,
events.payment and events.deadletter — arbitrary bytes (0 to ~900 kB, mostly small),
catalog events with fields broken, JSON nested thousands deep, huge strings, NUL
escapes, random headers (empty names, NUL, values that are not UTF-8, repeated
id/eventType, real event types, 300 of them, now and then a name that is not UTF-8, so the
Kafka client cannot parse the record), keys absent, empty, binary or huge —
while a few dozen sagas are placed. Afterwards: every service is the same process and
healthy, every connector RUNNING; every record on an event topic is dead-lettered,
exactly once, by each consumer that looks at it (docs/contract/events.md, Who consumes
what: a consumer skips another service's known event type by its eventType header); none
of the sagas' own events is a dead letter; every saga is terminal with I1–I6 intact.
Nothing consumes events.deadletter: there `saga dlq list` must still work and list every
genuine dead letter.

The run is deterministic for a seed: SAGA_FUZZ_SEED and SAGA_FUZZ_RECORDS (records per
topic) override FUZZ_SEED and FUZZ_RECORDS for longer local runs. No generated record is
a valid event (checked with the consumer's own decoding), so each must be a dead letter.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.consumer import IncomingMessage, decode_message
from shared.errors import EventDecodeError
from shared.events import EVENT_TYPES
from tests.support.hostile import (
    EVENT_TOPICS, PARTITIONS, SERVICES, Consumers, Hostile, assert_standing, dead_letters_by_record,
    letters_by_consumer, partition_for_key, produce, service_pids, until_dead_lettered,
)
from tests.support.invariants import check_invariants
from tests.support.load import Catalog, mixed_flows, place_orders, saga, saga_json, unexpected, wait_terminal

pytestmark = pytest.mark.faults

FUZZ_SEED = int(os.environ.get("SAGA_FUZZ_SEED", "20261129"))
FUZZ_RECORDS = int(os.environ.get("SAGA_FUZZ_RECORDS", "200"))
"""Records per topic."""
FUZZ_ORDERS = 36
"""Sagas placed while the records are produced."""
TOPICS = (*EVENT_TOPICS, "events.deadletter")
RECORD_BYTES_MAX = 1_000_000
"""Key, value and headers of one record together: under the broker's message.max.bytes (1 MiB)."""
PRODUCE_SLICES = 12
"""The records go out in this many slices, spread over the time the sagas are placed in."""
DRAIN_TIMEOUT = 180.0


# --- the generator -------------------------------------------------------------------------

KNOWN_TYPES = (*EVENT_TYPES, "DEAD_LETTER")


class Fuzzer:
    """Hostile records from one `random.Random(seed)`: the same seed, the same records."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.kinds: Counter[str] = Counter()

    # sizes: mostly small, a few up to ~900 kB
    def size(self) -> int:
        r = self.rng.random()
        if r < 0.70:
            return self.rng.randint(0, 64)
        if r < 0.90:
            return self.rng.randint(65, 4096)
        if r < 0.975:
            return self.rng.randint(4097, 65536)
        return self.rng.randint(65537, 900_000)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def text(self, length: int, alphabet: str = string.printable + "\0\u00e9\u4e2d\U0001f600") -> str:
        return "".join(self.rng.choices(alphabet, k=length))

    def record(self, topic: str) -> Hostile:
        key = self.key()
        partition = partition_for_key(key, PARTITIONS) if key is not None else self.rng.randrange(PARTITIONS)
        kind, value = self.value(topic, key)
        headers = self.headers()
        if topic in EVENT_TOPICS and headers and self.rng.random() < 0.02:  # a header name that is not UTF-8
            at = self.rng.randrange(len(headers))
            headers[at] = (b"\xff" + self.rng.randbytes(self.rng.randint(1, 8)), headers[at][1])
            self.kinds["header name not UTF-8"] += 1
        record = Hostile(topic, value, key=key, headers=headers, partition=partition, label=kind)
        while not is_hostile(record):  # by chance a valid event: break it again
            record.value = self.broken_event(key)
        excess = record.size - RECORD_BYTES_MAX
        if excess > 0:  # cut the value (or drop headers) to fit the broker's limit
            if record.value is not None and len(record.value) > excess:
                record.value = record.value[: len(record.value) - excess]
            else:
                record.headers = record.headers[:10]
        assert record.size <= RECORD_BYTES_MAX and is_hostile(record)
        self.kinds[kind] += 1
        return record

    def key(self) -> bytes | None:
        r = self.rng.random()
        if r < 0.20:
            return None
        if r < 0.30:
            return b""
        if r < 0.50:
            return self.rng.randbytes(self.rng.randint(1, 64))
        if r < 0.51:
            return self.rng.randbytes(self.rng.randint(65_536, 150_000))
        if r < 0.93:
            return self.uuid().encode()
        return self.text(self.rng.randint(1, 40)).encode()

    def value(self, topic: str, key: bytes | None) -> tuple[str, bytes | None]:
        kinds: dict[str, Callable[[], bytes | None]] = {
            "bytes": lambda: self.rng.randbytes(self.size()),
            "text": lambda: self.text(min(self.size(), 20_000)).encode("utf-8", "surrogatepass"),
            "broken event": lambda: self.broken_event(key),
            "deep nesting": self.deep,
            "huge string": lambda: self.huge_string(key),
            "other JSON": self.other_json,
            "null value": lambda: None,
            "empty value": lambda: b"",
        }
        weights = [25, 8, 35, 7, 5, 10, 5, 5]
        if topic == "events.deadletter":
            kinds["forged dead letter"] = self.forged_dead_letter
            weights.append(25)
        kind = self.rng.choices(list(kinds), weights=weights)[0]
        return kind, kinds[kind]()

    def valid_event(self, event_type: str, key: bytes | None) -> dict:
        order_id = key.decode() if key and _is_uuid(key) else self.uuid()
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.rng.randint(0, 10**7))
        money = {"amount": f"{self.rng.randint(1, 9999)}.{self.rng.randint(0, 99):02d}", "currency": "EUR"}
        items = [{"sku": f"SKU-{self.rng.randint(1, 99)}", "quantity": self.rng.randint(1, 5)}]
        fields = {
            "ORDER_CREATED": {"customer_id": "c-1", "items": items, **money},
            "INVENTORY_RESERVED": {"reservation_id": self.uuid(), "items": items, "customer_id": "c-1", **money},
            "INVENTORY_REJECTED": {"reason": "out_of_stock", "skus": ["SKU-1"]},
            "PAYMENT_COMPLETED": {"payment_id": self.uuid(), **money},
            "PAYMENT_FAILED": {"reason": "insufficient_funds"},
            "ORDER_CONFIRMED": {},
            "ORDER_CONFIRMATION_FAILED": {"reason": "deadline_exceeded"},
            "PAYMENT_REFUNDED": {"payment_id": self.uuid(), "amount": money["amount"]},
            "INVENTORY_RELEASED": {"reservation_id": self.uuid()},
            "INVENTORY_COMMITTED": {"reservation_id": self.uuid()},
            "ORDER_CANCELLED": {"reason": "out_of_stock"},
        }[event_type]
        return {"event_type": event_type, "schema_version": 1, "order_id": order_id, "occurred_at": at.isoformat(),
                **fields}

    BREAKAGES = (None, 0, -1, 1.5, True, [], {}, "", "\u0000", "1e309", [1, 2], {"a": None})

    def broken_event(self, key: bytes | None) -> bytes:
        """A catalog event with one to three things broken (field, type, vocabulary or JSON text)."""
        event = self.valid_event(self.rng.choice(list(EVENT_TYPES)), key)
        for _ in range(self.rng.randint(1, 3)):
            how = self.rng.randrange(9)
            field = self.rng.choice(list(event)) if event else "event_type"
            if how == 0:
                event.pop(field, None)
            elif how == 1:
                event[field] = self.rng.choice(self.BREAKAGES)
            elif how == 2 and isinstance(event.get(field), str):
                at = self.rng.randint(0, len(event[field]))
                event[field] = event[field][:at] + "\u0000" + event[field][at:]
            elif how == 3:
                event["event_type"] = self.rng.choice(["ORDER_TELEPORTED", "order_created", "ORDER_CREATED\u0000", "",
                                                       self.text(8)])
            elif how == 4:
                event["schema_version"] = self.rng.choice([0, 2, "1", 1.0, None, 10**30])
            elif how == 5:
                event["order_id"] = self.rng.choice(["not-a-uuid", "", 123, self.uuid() + "\u0000"])
            elif how == 6:
                event["amount"] = self.rng.choice([12.5, "-1.00", "1.234", "NaN", "0.00", 10**40])
                event["items"] = self.rng.choice([[], [{"sku": "", "quantity": 1}], [{"sku": "A", "quantity": 0}],
                                                   [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]])
            elif how == 7:
                event["occurred_at"] = self.rng.choice(["2026-01-01T00:00:00", "yesterday", 0, None])
            else:
                event["reason"] = self.rng.choice(["bad_luck", "", None, "OUT_OF_STOCK"])
        text = json.dumps(event).encode()
        mangle = self.rng.randrange(6)
        if mangle == 0:  # cut anywhere
            return text[: self.rng.randint(0, len(text))]
        if mangle == 1:  # a byte that is not UTF-8 inside
            at = self.rng.randint(0, len(text))
            return text[:at] + b"\xff" + text[at:]
        if mangle == 2:  # a raw NUL inside
            at = self.rng.randint(0, len(text))
            return text[:at] + b"\0" + text[at:]
        return text

    def deep(self) -> bytes:
        depth = self.rng.choices([100, 1000, 5000, 50_000, 100_000], weights=[4, 3, 2, 1, 1])[0]
        if self.rng.random() < 0.5:
            return b"[" * depth + b"]" * depth
        return b'{"a":' * depth + b"1" + b"}" * depth

    def huge_string(self, key: bytes | None) -> bytes:
        event = self.valid_event(self.rng.choice(list(EVENT_TYPES)), key)
        field = self.rng.choice(["event_type", "order_id", "customer_id", "reason", "currency", "amount"])
        length = self.rng.choices([10_000, 50_000, 200_000, 800_000], weights=[50, 30, 15, 5])[0]
        event[field] = self.text(1, string.ascii_letters) * length
        return json.dumps(event).encode()

    def other_json(self) -> bytes:
        return self.rng.choice([b"null", b"123", b"[]", b'"text"', b"true", b"{}", b'{"event_type": 5}',
                                b'{"event_type": "ORDER_CREATED"}', b'[{"event_type": "ORDER_CREATED"}]',
                                b'{"event_type": "ORDER_CREATED", "event_type": null}', b"1e999999", b"-"])

    def forged_dead_letter(self) -> bytes:
        """A DEAD_LETTER-shaped payload with fields of any type (only `saga dlq list` reads it)."""
        payload = {"dead_letter_id": self.uuid(), "consumer": self.rng.choice([*SERVICES, "", "nobody"]),
                   "topic": "events.forged", "partition": 0, "offset": 1, "error": "forged", "at": "2026-01-01T00:00:00Z",
                   "headers": [{"name": "id", "value": "x"}], "value": "v"}
        for _ in range(self.rng.randint(1, 4)):
            payload[self.rng.choice(list(payload))] = self.rng.choice(
                [*self.BREAKAGES, "x" * self.rng.randint(1, 50_000), {"id": 1}, [{"name": 5}], 2**70])
        return json.dumps(payload).encode()

    def headers(self) -> list[tuple[str | bytes, bytes | None]]:
        r = self.rng.random()
        count = 0 if r < 0.25 else self.rng.randint(1, 5) if r < 0.85 else self.rng.randint(6, 40) if r < 0.97 else 300
        return [(self.header_name(), self.header_value(large=count <= 40)) for _ in range(count)]

    def header_name(self) -> str:
        names: dict[str, Callable[[], str]] = {
            "id": lambda: "id", "eventType": lambda: "eventType", "sagaId": lambda: "sagaId",
            "causationId": lambda: "causationId", "traceparent": lambda: "traceparent", "empty": lambda: "",
            "NUL": lambda: "\0", "id NUL": lambda: "id\0", "note": lambda: "note",
            "letters": lambda: self.text(self.rng.randint(1, 20), string.ascii_letters),
            "unicode": lambda: self.text(self.rng.randint(1, 10), "\0\u00e9\u4e2d\U0001f600abc"),
            "long": lambda: "n" * self.rng.randint(1000, 5000),
        }
        name = self.rng.choices(list(names), weights=[20, 20, 5, 3, 5, 8, 3, 2, 5, 10, 5, 2])[0]
        return names[name]()

    def header_value(self, large: bool = True) -> bytes | None:
        choice = self.rng.choices(range(9), weights=[5, 5, 20, 20, 8, 10, 10, 1 if large else 0, 5])[0]
        return [
            lambda: None,
            lambda: b"",
            lambda: self.uuid().encode(),
            lambda: self.rng.choice(KNOWN_TYPES).encode(),
            lambda: b"\0" * self.rng.randint(1, 5) + b"x",
            lambda: b"\xff" + self.rng.randbytes(self.rng.randint(0, 40)),
            lambda: self.text(self.rng.randint(1, 60), string.ascii_letters).encode(),
            lambda: self.rng.randbytes(self.rng.randint(10_000, 65_536)),
            lambda: (self.uuid() + "\0").encode(),
        ][choice]()


def _is_uuid(raw: bytes) -> bool:
    try:
        uuid.UUID(raw.decode())
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def is_hostile(record: Hostile) -> bool:
    """Whether the consumers cannot take `record` as an event (their own decoding refuses it)."""
    if record.topic not in EVENT_TOPICS or record.unreadable:
        return True
    message = IncomingMessage(record.topic, record.partition, 0, record.key, record.value, tuple(record.headers))
    try:
        decode_message(message)
    except EventDecodeError:
        return True
    return False


def generate(seed: int, per_topic: int) -> tuple[list[Hostile], Counter[str]]:
    fuzzer = Fuzzer(seed)
    records = [fuzzer.record(topic) for topic in TOPICS for _ in range(per_topic)]
    fuzzer.rng.shuffle(records)
    return records, fuzzer.kinds


# --- the test ------------------------------------------------------------------------------

async def produce_paced(bootstrap: str, records: list[Hostile], slices: int, spread_s: float) -> None:
    """`records` in `slices` slices, one every spread_s/slices seconds (interleaved with the sagas)."""
    step = max(1, -(-len(records) // slices))
    for start in range(0, len(records), step):
        slice_started = time.monotonic()
        await produce(bootstrap, records[start:start + step], in_flight=16)
        await asyncio.sleep(max(0.0, spread_s / slices - (time.monotonic() - slice_started)))


async def test_fuzzed_records_on_every_topic_are_dead_lettered_while_sagas_finish(services) -> None:
    settings = services.settings
    records, kinds = generate(FUZZ_SEED, FUZZ_RECORDS)
    total = sum(r.size for r in records)
    print(f"fuzz seed {FUZZ_SEED}: {len(records)} records ({FUZZ_RECORDS} per topic on {', '.join(TOPICS)}), "
          f"{total / 1e6:.1f} MB, largest {max(r.size for r in records) / 1e3:.0f} kB; "
          + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()))

    catalog = Catalog.new()
    await catalog.seed()
    pids = await service_pids()
    consumers = await Consumers.discover()
    genuine_before = {letter["id"] for letter in await saga_json("dlq", "list")}
    started_ms = int(time.time() * 1000)
    started = time.monotonic()

    flows = mixed_flows(FUZZ_ORDERS, seed=FUZZ_SEED)
    per_second = 4.0
    placing = asyncio.create_task(place_orders(catalog, flows, per_second=per_second))
    await produce_paced(settings.kafka_bootstrap, records, PRODUCE_SLICES, spread_s=FUZZ_ORDERS / per_second)
    placed = await placing
    produced_s = time.monotonic() - started
    print(f"produced in {produced_s:.1f}s while {len(placed)} sagas were placed")

    watched = [r for r in records if consumers.must_look(r)]
    found = await until_dead_lettered(watched, consumers, timeout=DRAIN_TIMEOUT)
    statuses = await wait_terminal(settings, [p.order_id for p in placed], timeout=DRAIN_TIMEOUT)
    drained_s = time.monotonic() - started - produced_s
    expected = sum(len(consumers.must_look(r)) for r in watched)
    print(f"drained {drained_s:.1f}s after the last record: {expected} dead letters "
          f"for {len(watched)} records on the event topics, {len(placed)} sagas terminal")

    await assert_standing(settings.connect_url, pids)

    found = await dead_letters_by_record()  # once more, now that everything drained
    wrong = []
    for record in records:
        by_consumer = letters_by_consumer(found.get(record.where, []))
        if record.topic not in EVENT_TOPICS:
            if by_consumer:
                wrong.append(f"{record.where} ({record.label}) on a topic nobody consumes "
                             f"dead-lettered by {sorted(by_consumer)}")
            continue
        if not consumers.must_look(record) <= set(by_consumer) <= consumers.may_look(record):
            wrong.append(f"{record.where} ({record.label}) dead-lettered by {sorted(by_consumer)}, "
                         f"expected {sorted(consumers.must_look(record))} (at most {sorted(consumers.may_look(record))})")
        wrong += [f"{record.where} ({record.label}) dead-lettered {len(letters)} times by {consumer}"
                  for consumer, letters in by_consumer.items() if len(letters) > 1]
    assert wrong == [], f"{len(wrong)} records not dead-lettered as expected, e.g. {wrong[:5]}"
    minimal = sum(1 for r in watched for l in found[r.where] if l["key"] is None and r.key is not None)
    print(f"every record dead-lettered exactly once by each consumer that looks at it "
          f"({minimal} dead letters minimal: {sum(r.unreadable for r in watched)} records unreadable)")

    order_ids = {p.order_id for p in placed}
    sagas_dead_lettered = [l for letters in found.values() for l in letters if l.get("key") in order_ids]
    assert sagas_dead_lettered == [], f"events of the sagas were dead-lettered: {sagas_dead_lettered[:3]}"

    listed = await asyncio.to_thread(saga, "dlq", "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, f"saga dlq list failed: {listed.stderr.strip()}"
    genuine_after = {letter["id"] for letters in found.values() for letter in letters}
    assert genuine_before <= genuine_after, f"{len(genuine_before - genuine_after)} dead letters no longer listed"

    assert unexpected(placed, statuses) == []
    violations = await check_invariants(settings, [p.order_id for p in placed], catalog.seeded, since_ms=started_ms)
    assert violations == []
    print(f"fuzz seed {FUZZ_SEED}: {len(records)} records, {total / 1e6:.1f} MB on {len(TOPICS)} topics; "
          f"produced in {produced_s:.1f}s, drained in {drained_s:.1f}s; services, connectors and I1–I6 intact")
