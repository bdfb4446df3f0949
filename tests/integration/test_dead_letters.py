"""Dead letters against a real PostgreSQL: whatever a record holds, its dead letter is written,
its bytes come back exactly for replay, and its DEAD_LETTER outbox row is small and plain JSON.

The records here are the hostile kinds anyone who can write to a topic can produce: NUL
bytes, invalid UTF-8, deep nesting, a value at the broker's limit and past it, header names
that are empty, repeated or not valid field names, hundreds of headers. The consumer's
fallback to a minimal dead letter is checked by a database that refuses the full one.
"""
from __future__ import annotations

import hashlib
import json
import uuid

import asyncpg
import pytest

from inventory_svc.handlers import HANDLERS
from shared import dead_letter
from shared.consumer import EventProcessor, IncomingMessage
from shared.testing import scratch_database
from shared.uow import OUTBOX_PAYLOAD_LIMIT, UnitOfWork

pytestmark = pytest.mark.integration

CONSUMER = "inventory_svc"

HOSTILE = {
    "nul in value": (b"k1", b"abc\x00def", []),
    "nul in a header": (None, b"{}", [("id", str(uuid.uuid4()).encode()), ("note", b"a\x00b")]),
    "deep nesting": (None, b"[" * 100_000, [("id", str(uuid.uuid4()).encode())]),
    "600 kB of quotes": (None, b'"' * 600_000, []),
    "empty header name": (None, b"not-json", [("", b"x")]),
    "invalid utf-8 everywhere": (b"\xff\xfe", b"\xff\xfe\xfd", [("id", b"\xff\xfe"), ("x\x00y", b"\xc3\x28")]),
    "300 headers, repeated names": (b"k" * 100_000, b"x", [("eventType", b"ORDER_CREATED")] * 300),
    "null value and header value": (None, None, [("id", None)]),
    "value past what is kept": (b"k", b"v" * (dead_letter.VALUE_BYTES_KEPT + 10), []),
}


@pytest.fixture(scope="module")
async def dsn(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def uow(dsn):
    uow = await UnitOfWork.connect(dsn, CONSUMER, max_size=4)
    yield uow
    await uow.close()


@pytest.fixture
async def db(dsn):
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def record(offset: int, key: bytes | None, value: bytes | None, headers) -> IncomingMessage:
    return IncomingMessage("events.order", 1, offset, key, value, tuple(headers))


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_any_record_becomes_a_dead_letter_whose_bytes_replay_exactly(uow, db, kind) -> None:
    key, value, headers = HOSTILE[kind]
    offset = 1_000_000 + list(HOSTILE).index(kind)
    consumer = EventProcessor(uow, HANDLERS)

    assert await consumer.handle(record(offset, key, value, headers)) == "dead_lettered"

    row = await db.fetchrow("SELECT * FROM dead_letters WHERE kafka_offset = $1", offset)
    assert row is not None and not row["minimal"]
    stored = await dead_letter.load_for_replay(db, row["id"])
    kept = dead_letter.VALUE_BYTES_KEPT
    assert stored.key == (key[: dead_letter.KEY_BYTES_KEPT] if key is not None else None)
    assert stored.value == (value[:kept] if value is not None else None)
    assert stored.headers == [(name, v) for name, v in headers][: dead_letter.HEADERS_KEPT]
    assert row["cut"] == (kind in ("value past what is kept", "300 headers, repeated names"))
    if value is not None:
        assert (row["value_size"], row["value_sha256"]) == (len(value), hashlib.sha256(value).hexdigest())

    published = await db.fetchrow(
        "SELECT payload::text AS payload, aggregate_id, causation_id FROM outbox "
        "WHERE event_type = 'DEAD_LETTER' AND payload->>'dead_letter_id' = $1", str(row["id"]))
    assert len(published["payload"]) < 64 * 1024 < OUTBOX_PAYLOAD_LIMIT
    payload = json.loads(published["payload"])
    assert (payload["topic"], payload["partition"], payload["offset"]) == ("events.order", 1, offset)
    assert len(payload.get("headers", [])) == min(len(headers), 32)
    assert ("headers" in payload) == bool(headers)  # never an empty array: Connect would drop it
    assert all(set(h) == {"name", "value"} for h in payload.get("headers", []))
    assert "\x00" not in published["payload"] and "\\u0000" not in published["payload"]
    if kind not in ("empty header name", "null value and header value"):  # those two show exactly
        assert payload["preview_exact"] is False
    print(f"{kind}: value {len(value or b'')} B → DEAD_LETTER payload {len(published['payload'])} B")


async def test_a_clean_record_previews_exactly(uow, db) -> None:
    consumer = EventProcessor(uow, HANDLERS)
    offset = 2_000_000
    await consumer.handle(record(offset, b"key", b"plain text", [("id", b"not-a-uuid")]))
    payload = json.loads(await db.fetchval(
        "SELECT o.payload::text FROM outbox o JOIN dead_letters d ON o.payload->>'dead_letter_id' = d.id::text "
        "WHERE d.kafka_offset = $1", offset))
    assert (payload["key"], payload["value"], payload["headers"]) == (
        "key", "plain text", [{"name": "id", "value": "not-a-uuid"}])
    assert payload["preview_exact"] is True and payload["stored_whole"] is True


async def test_a_record_dead_lettered_twice_is_kept_once(uow, db) -> None:
    consumer = EventProcessor(uow, HANDLERS)
    message = record(3_000_000, None, b"\x00", [])
    await consumer.handle(message)
    await consumer.handle(message)
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE kafka_offset = $1", 3_000_000) == 1


async def test_a_dead_letter_the_database_refuses_falls_back_to_a_minimal_one(uow, db) -> None:
    """A CHECK constraint stands in for any non-transient refusal of the full dead letter: the
    consumer writes a minimal one (where and why), publishes it, and returns."""
    await db.execute("ALTER TABLE dead_letters ADD CONSTRAINT refuse_values CHECK (value_bytes IS NULL) NOT VALID")
    try:
        consumer = EventProcessor(uow, HANDLERS)
        outcome = await consumer.handle(record(4_000_000, b"k", b"not an event", []))
    finally:
        await db.execute("ALTER TABLE dead_letters DROP CONSTRAINT refuse_values")
    assert outcome == "dead_lettered"
    row = await db.fetchrow("SELECT * FROM dead_letters WHERE kafka_offset = $1", 4_000_000)
    assert row["minimal"] and row["value_bytes"] is None and row["message_key"] is None
    assert "undecodable" in row["error"] and "CheckViolationError" in row["error"]
    payload = json.loads(await db.fetchval(
        "SELECT payload::text FROM outbox WHERE payload->>'dead_letter_id' = $1", str(row["id"])))
    assert payload["minimal"] is True and payload["offset"] == 4_000_000
    with pytest.raises(Exception, match="minimal dead letter"):
        await consumer.replay(row["id"])


async def test_replay_runs_the_stored_bytes_not_the_preview(uow, db) -> None:
    """A record with a NUL in a header and a value longer than the preview: replay decodes the
    stored value (the real cause comes back), not the cut preview."""
    consumer = EventProcessor(uow, HANDLERS)
    value = json.dumps({"event_type": "ORDER_CREATED", "padding": "x" * 5000}).encode()
    await consumer.handle(record(5_000_000, b"k", value, [("id", str(uuid.uuid4()).encode()), ("n", b"\x00")]))
    ident = await db.fetchval("SELECT id FROM dead_letters WHERE kafka_offset = $1", 5_000_000)
    with pytest.raises(Exception, match="unsupported schema_version"):
        await consumer.replay(ident)


async def test_a_handler_that_fails_in_a_row_trips_the_breaker_instead_of_dead_lettering_everything(uow, db) -> None:
    """Two failures are dead letters; the third in a row opens the breaker: that event waits and
    is tried again (no dead letter), succeeds once the cause is gone, and closes the breaker."""
    from shared.consumer import Breaker
    from shared.events import OrderConfirmed, encode_event, utc_now

    failures_left = [3]

    async def flaky(event, tx) -> None:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise RuntimeError("a bug")

    consumer = EventProcessor(uow, {OrderConfirmed: flaky}, breaker=Breaker(threshold=3, cool_down=0.05))
    outcomes = []
    for offset in range(6_000_000, 6_000_003):
        event = OrderConfirmed(order_id=uuid.uuid4(), occurred_at=utc_now())
        value = json.dumps(encode_event(event)).encode()
        outcomes.append(await consumer.handle(record(offset, str(event.order_id).encode(), value,
                                                     [("id", str(uuid.uuid4()).encode())])))
    assert outcomes == ["dead_lettered", "dead_lettered", "handled"]
    assert not consumer.breaker.open and consumer.breaker.failures_in_row == 0
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE kafka_offset >= 6000000") == 2


async def test_a_rule_refusing_records_in_a_row_is_no_bug_for_the_breaker(uow, db) -> None:
    """Anyone may publish records a business rule refuses (an order id already taken): each is a
    dead letter, however many come in a row; the breaker stays closed."""
    from shared.consumer import Breaker
    from shared.errors import DomainError
    from shared.events import OrderConfirmed, encode_event, utc_now

    async def refuses(event, tx) -> None:
        raise DomainError("refused by a rule")

    consumer = EventProcessor(uow, {OrderConfirmed: refuses}, breaker=Breaker(threshold=2, cool_down=60))
    for offset in range(7_000_000, 7_000_004):
        event = OrderConfirmed(order_id=uuid.uuid4(), occurred_at=utc_now())
        value = json.dumps(encode_event(event)).encode()
        outcome = await consumer.handle(record(offset, str(event.order_id).encode(), value,
                                               [("id", str(uuid.uuid4()).encode())]))
        assert outcome == "dead_lettered"
    assert not consumer.breaker.open
