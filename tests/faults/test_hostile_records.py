"""Hostile records on events.order: each is dead-lettered once by each consumer, and nothing stops.

docs/contract/invariants.md, I7: a record that cannot be decoded (any bytes, any size, any
headers) goes to the dead-letter topic as a bounded, safe copy plus the error, and the consumer
moves on without blocking its partition; no record's content can stop a service or a connector
(I7). Each test here plays a bad producer with one record — NUL bytes, JSON nested
100,000 deep, 600 kB of quotes, an empty header name, no key, bytes that are not UTF-8
anywhere, a header name that is not UTF-8 (which aiokafka's producer cannot even send,
so that batch is built byte by byte) — and checks the exact outcome: every consumer of
events.order (inventory_svc and payment_svc, and order_svc where it adopts ORDER_CREATED
published from outside; their /health says which) dead-letters it exactly once, all are
the same processes and healthy afterwards, the three connectors are RUNNING, and an
order placed right after, in the record's partition, ends CONFIRMED.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.dead_letter import VALUE_PREVIEW_CHARS
from tests.support.hostile import (
    PARTITIONS, Consumers, Hostile, assert_standing, dead_letters_by_record, key_in_partition, letters_by_consumer,
    parse_location, place_in_partition, produce, produce_raw_batch, read_record, service_pids, until_dead_lettered,
)
from tests.support.load import Catalog, saga, wait_terminal

pytestmark = pytest.mark.faults

ORDER_TOPIC = "events.order"
DEAD_LETTER_TIMEOUT = 60.0
ONE_LINE_ERROR_PREFIX = "saga: "


@dataclass
class Outcome:
    """What one hostile record led to, for the checks after the common ones and the printed line."""

    record: Hostile
    consumers: Consumers
    letters: dict[str, dict]
    """consumer → its one dead letter of the record."""
    to_dead_letter_s: float
    next_order: str
    next_order_s: float
    notes: list[str] = field(default_factory=list)


# --- the common path: produce, dead letters, still standing, next order -----------------------

async def run_hostile(services, record: Hostile, *, raw: bool = False, before: Sequence[Hostile] = ()) -> Outcome:
    """Produce `record` (with the `before` records right ahead of it in the same batch when `raw`),
    then check the common expectations; the outcome for the test's own checks."""
    settings = services.settings
    catalog = Catalog.new()
    await catalog.seed()
    pids = await service_pids()
    consumers = await Consumers.discover()
    produced_ms = time.time() * 1000
    if raw:
        await produce_raw_batch(settings.kafka_bootstrap, [*before, record])
    else:
        await produce(settings.kafka_bootstrap, [record])

    found = await until_dead_lettered([record], consumers, timeout=DEAD_LETTER_TIMEOUT)
    letters = exactly_once_each(record, found, consumers)
    to_dead_letter_s = max(at_ms(letter) for letter in letters.values()) / 1000 - produced_ms / 1000

    placed_at = time.monotonic()
    order, placed = await place_in_partition(catalog, record.partition)
    statuses = await wait_terminal(settings, [p.order_id for p in placed], timeout=60)
    next_order_s = time.monotonic() - placed_at
    assert statuses[order.order_id] == ("CONFIRMED", None), \
        f"order {order.order_id} behind the record in {record.topic}[{record.partition}] ended {statuses[order.order_id]}"

    exactly_once_each(record, await dead_letters_by_record(), consumers)  # and still once each, later
    await assert_standing(settings.connect_url, pids)
    return Outcome(record, consumers, letters, to_dead_letter_s, order.order_id, next_order_s)


def exactly_once_each(record: Hostile, found: dict[tuple[str, int, int], list[dict]],
                      consumers: Consumers) -> dict[str, dict]:
    """The record's dead letters: exactly one per consumer that looks at it, none from any other."""
    by_consumer = letters_by_consumer(found.get(record.where, []))
    assert consumers.must_look(record) <= set(by_consumer) <= consumers.may_look(record), \
        f"{record.where} dead-lettered by {sorted(by_consumer)}, expected {sorted(consumers.must_look(record))}"
    twice = {consumer: [l["id"] for l in letters] for consumer, letters in by_consumer.items() if len(letters) > 1}
    assert not twice, f"{record.where} dead-lettered more than once by one consumer: {twice}"
    return {consumer: letters[0] for consumer, letters in by_consumer.items()}


def at_ms(letter: dict) -> float:
    return datetime.fromisoformat(letter["at"]).timestamp() * 1000


def report(name: str, outcome: Outcome) -> None:
    record = outcome.record
    errors = "; ".join(f"{c}: {outcome.letters[c]['error'][:90]}" for c in sorted(outcome.letters))
    notes = "".join(f"; {note}" for note in outcome.notes)
    print(f"{name}: {record.size} bytes to {record.topic}[{record.partition}]@{record.offset} → dead-lettered by "
          f"{', '.join(sorted(outcome.letters))} within {outcome.to_dead_letter_s:.2f}s; next order in the partition "
          f"CONFIRMED in {outcome.next_order_s:.1f}s{notes} ({errors})")


# --- the rows --------------------------------------------------------------------------------

def random_partition() -> int:
    return random.randrange(PARTITIONS)


def fresh_key() -> bytes:
    return str(uuid.uuid4()).encode()


def fresh_id() -> bytes:
    return str(uuid.uuid4()).encode()


@dataclass(frozen=True)
class Row:
    name: str
    record: Callable[[], Hostile]
    then: Callable[[object, Outcome], Awaitable[None]] | None = None


async def cli_reads_it(services, outcome: Outcome) -> None:
    """`saga dlq list` (the table) and `saga trace KEY` read around the record without failing."""
    listed = await asyncio.to_thread(saga, "dlq", "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, f"saga dlq list failed: {listed.stderr.strip()}"
    record = outcome.record
    since = str(int(time.time() * 1000) - 300_000)
    traced = await asyncio.to_thread(saga, "trace", record.key.decode(), "--since", since, "--json")
    assert traced.returncode == 0, f"saga trace of the record's key failed: {traced.stderr.strip()}"
    events = json.loads(traced.stdout)["events"]
    assert any((e["topic"], e["partition"], e["offset"]) == record.where for e in events), \
        f"saga trace does not show {record.where}: {[(e['topic'], e['offset']) for e in events]}"
    table = await asyncio.to_thread(saga, "trace", record.key.decode(), "--since", since)
    assert table.returncode == 0, f"saga trace (table) failed: {table.stderr.strip()}"
    # `saga tail` follows until Ctrl-C (it has no option to stop at the end): not run here.
    outcome.notes.append(f"saga dlq list and saga trace read it ({len(events)} events in the trace)")


async def previews_are_bounded(services, outcome: Outcome) -> None:
    """Both DEAD_LETTER events carry a preview of at most VALUE_PREVIEW_CHARS characters, the
    value's full size and SHA-256, and are small records themselves."""
    value = outcome.record.value
    published = set()
    for consumer, letter in outcome.letters.items():
        location = parse_location(letter["dead_letter_event"])
        published.add(location)
        record = await read_record(services.settings.kafka_bootstrap, *location)
        payload = json.loads(record.value)
        assert payload["dead_letter_id"] == letter["id"]
        assert len(payload["value"]) <= VALUE_PREVIEW_CHARS, f"{consumer}: preview of {len(payload['value'])} characters"
        assert payload["value_size"] == len(value) == 600_000
        assert payload["value_sha256"] == hashlib.sha256(value).hexdigest()
        assert payload["stored_whole"] is True and payload["preview_exact"] is False
        assert len(record.value) < 64 * 1024, f"{consumer}'s DEAD_LETTER event is {len(record.value)} bytes"
        outcome.notes.append(f"{consumer}'s DEAD_LETTER {len(record.value)} bytes, preview {len(payload['value'])} chars")
    expected = outcome.consumers.must_look(outcome.record)
    assert len(published) == len(expected) >= 2, f"expected {len(expected)} DEAD_LETTER events, found {sorted(published)}"


async def replays_fail_again(services, outcome: Outcome) -> None:
    """`saga dlq replay ID --json` of each dead letter: exit 1, nothing on stdout, one line on
    stderr saying the replay failed again and why (the same reason the record was dead-lettered)."""
    for consumer, letter in outcome.letters.items():
        failed = await asyncio.to_thread(saga, "dlq", "replay", letter["id"], "--json")
        cause = letter["error"].removeprefix("undecodable: ")
        assert failed.returncode == 1, f"replay exit {failed.returncode}: {failed.stdout}{failed.stderr}"
        assert failed.stdout == ""
        assert len(failed.stderr.splitlines()) == 1, failed.stderr
        assert failed.stderr.startswith(ONE_LINE_ERROR_PREFIX) and "unexpected" not in failed.stderr, failed.stderr
        assert f"replay of dead letter {letter['id']} failed again: " in failed.stderr, failed.stderr
        assert cause in failed.stderr, f"replay error does not give the cause {cause!r}: {failed.stderr.strip()}"
        outcome.notes.append(f"replay by {consumer}: exit 1, {failed.stderr.strip()[:120]!r}")


ROWS = [
    Row("NUL in the value, key k1, no headers", lambda: Hostile(ORDER_TOPIC, b"abc\0def", key=b"k1")),
    Row("{} with a NUL in a header value",
        lambda: Hostile(ORDER_TOPIC, b"{}", key=fresh_key(), headers=[("id", fresh_id()), ("note", b"a\0b")])),
    Row("100,000 [ with an id header",
        lambda: Hostile(ORDER_TOPIC, b"[" * 100_000, key=fresh_key(), headers=[("id", fresh_id())])),
    Row("100,000 [ without headers", lambda: Hostile(ORDER_TOPIC, b"[" * 100_000, key=fresh_key()), cli_reads_it),
    Row("600,000 quotes", lambda: Hostile(ORDER_TOPIC, b'"' * 600_000, key=fresh_key(), headers=[("id", fresh_id())]),
        previews_are_bounded),
    Row("not-json with an empty header name",
        lambda: Hostile(ORDER_TOPIC, b"not-json", key=fresh_key(), headers=[("", b"no name")]), replays_fail_again),
    Row("keyless not-json", lambda: Hostile(ORDER_TOPIC, b"not-json", partition=random_partition())),
    Row("ff fe fd, key and id header not UTF-8",
        lambda: Hostile(ORDER_TOPIC, b"\xff\xfe\xfd", key=b"\xff\xfe" + uuid.uuid4().bytes,
                        headers=[("id", b"\xff" + uuid.uuid4().bytes)])),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_a_hostile_record_is_dead_lettered_once_by_each_consumer_and_nothing_stops(services, row: Row) -> None:
    record = row.record()
    record.label = row.name
    outcome = await run_hostile(services, record)
    if record.key is None:
        assert all(letter["key"] is None for letter in outcome.letters.values())
    elif record.key.isascii():
        assert all(letter["key"] == record.key.decode() for letter in outcome.letters.values())
    for letter in outcome.letters.values():
        assert letter["error"].startswith("undecodable: "), letter["error"]
    if row.then is not None:
        await row.then(services, outcome)
    report(row.name, outcome)


# --- a header name that is not UTF-8 -----------------------------------------------------------

def confirmation_failed(order_id: str) -> bytes:
    """A valid ORDER_CONFIRMATION_FAILED of an order nobody placed: payment_svc handles it (nothing
    to refund, so nothing changes but its inbox) — or, once events are authenticated, dead-letters
    it as not signed by order_svc; the other consumers skip it (not their event)."""
    return json.dumps({"event_type": "ORDER_CONFIRMATION_FAILED", "schema_version": 1, "order_id": order_id,
                       "occurred_at": datetime.now(UTC).isoformat(), "reason": "cancelled_by_customer"}).encode()


def valid_record(partition: int) -> tuple[Hostile, str]:
    order_id = key_in_partition(partition)
    event_id = str(uuid.uuid4())
    headers = [("id", event_id.encode()), ("eventType", b"ORDER_CONFIRMATION_FAILED"), ("sagaId", order_id.encode()),
               ("causationId", b"")]
    return Hostile(ORDER_TOPIC, confirmation_failed(order_id), key=order_id.encode(), headers=headers,
                   label="valid ORDER_CONFIRMATION_FAILED"), event_id


async def settled_by_payment_svc(settings, record: Hostile, event_id: str, timeout: float) -> str:
    """How payment_svc settled a valid event within `timeout`: "handled" (its inbox has the event
    id), "dead-lettered" (an unsigned event once events are authenticated: docs/contract/events.md,
    Signatures), or ""."""
    connection = await asyncpg.connect(settings.service_dsn("payments"))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if await connection.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'payment_svc' AND event_id = $1",
                                         uuid.UUID(event_id)):
                return "handled"
            letters = (await dead_letters_by_record()).get(record.where, [])
            if any(letter["consumer"] == "payment_svc" for letter in letters):
                return "dead-lettered"
            if time.monotonic() > deadline:
                return ""
            await asyncio.sleep(0.3)
    finally:
        await connection.close()


async def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_the_records_before_it_are_not_skipped(services) -> None:
    """aiokafka's producer cannot send such a name and its consumer's parser raises on it inside
    getmany; the consumer must dead-letter it (a minimal dead letter: where and why), stay up,
    and still handle what came right before it in the same batch and in the batch before."""
    settings = services.settings
    partition = random_partition()
    earlier, earlier_id = valid_record(partition)  # its own batch, right before
    await produce_raw_batch(settings.kafka_bootstrap, [earlier])
    valid, valid_id = valid_record(partition)  # the same batch, two records ahead of the hostile one
    not_json = Hostile(ORDER_TOPIC, b"not-json", key=key_in_partition(partition).encode(),
                       headers=[("id", fresh_id())], partition=partition, label="not-json right before")
    hostile = Hostile(ORDER_TOPIC, b"value", key=key_in_partition(partition).encode(),
                      headers=[("id", fresh_id()), (b"\xff\xfe", b"v")], partition=partition,
                      label="header name ff fe")
    outcome = await run_hostile(services, hostile, raw=True, before=[valid, not_json])
    assert [earlier.offset + 1, valid.offset + 1, not_json.offset + 1] == [valid.offset, not_json.offset, hostile.offset]
    for letter in outcome.letters.values():
        assert letter["key"] is None and letter["error"], letter  # nothing of the content could be read

    # Nothing before it was skipped: payment_svc settled both valid events (the other consumers
    # skip ORDER_CONFIRMATION_FAILED: not theirs); every consumer dead-lettered the not-JSON record.
    settled = []
    for label, record, event_id in (("the batch before", earlier, earlier_id), ("the same batch", valid, valid_id)):
        how = await settled_by_payment_svc(settings, record, event_id, timeout=30)
        assert how, f"payment_svc never settled the valid event in {label} ({event_id} at {record.where}): skipped"
        settled.append(f"@{record.offset} {how}")
    consumers = outcome.consumers
    found = exactly_once_each(not_json, await until_dead_lettered([not_json], consumers, timeout=30), consumers)
    outcome.notes.append(f"valid ORDER_CONFIRMATION_FAILED {' and '.join(settled)} by payment_svc; "
                         f"not-json @{not_json.offset} dead-lettered by {', '.join(sorted(found))}")
    report("header name ff fe", outcome)


# --- replay runs the stored bytes --------------------------------------------------------------

async def test_a_replay_runs_the_stored_record_not_its_preview(services) -> None:
    """A valid event, padded past the dead letter's value preview, with a NUL in its eventType
    header: dead-lettered because the header contradicts the payload. Replaying it must parse
    the stored value (which the cut preview could not be) and fail again for that same reason."""
    order_id = str(uuid.uuid4())
    value = json.loads(confirmation_failed(order_id))
    value["padding"] = "p" * (VALUE_PREVIEW_CHARS * 3)  # unknown fields are ignored by the reader
    record = Hostile(ORDER_TOPIC, json.dumps(value).encode(), key=order_id.encode(),
                     headers=[("id", fresh_id()), ("eventType", b"ORDER_CONFIRMATION_FAILED\0"),
                              ("sagaId", order_id.encode())],
                     label="NUL in eventType, padded valid value")
    outcome = await run_hostile(services, record)
    assert set(outcome.letters) == set(outcome.consumers.of(ORDER_TOPIC))  # a type no service knows: all look
    for consumer, letter in outcome.letters.items():
        assert "contradicts payload" in letter["error"], letter["error"]
        event = json.loads((await read_record(services.settings.kafka_bootstrap,
                                              *parse_location(letter["dead_letter_event"]))).value)
        assert event["stored_whole"] is True and event["preview_exact"] is False  # the preview is cut
        failed = await asyncio.to_thread(saga, "dlq", "replay", letter["id"])
        reason = failed.stderr.strip()
        assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1, f"exit {failed.returncode}: {reason}"
        assert "failed again" in reason and "contradicts payload" in reason, \
            f"{consumer}'s replay did not fail on the real cause (the eventType header): {reason}"
        assert "not JSON" not in reason and "not an event" not in reason, reason
        outcome.notes.append(f"replay by {consumer}: {reason[:140]!r}")
    report("replay from the stored bytes", outcome)
