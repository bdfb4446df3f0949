"""`saga trace` end to end, with the topics replaced by in-memory records."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.structs import ConsumerRecord

from cli_support import FakeService, assert_one_line_error, closed_port, run_saga, serve
from saga_cli import trace as trace_module
from saga_cli.kafka import KafkaEvent, decode_record
from saga_cli.trace import EVENT_CHARS

pytestmark = pytest.mark.unit


class FakeTopics:
    """Stands in for the Kafka read: remembers where it was asked to start."""

    def __init__(self, events: list[KafkaEvent]) -> None:
        self.events = events
        self.asked: list[tuple[str, int | None]] = []

    async def read(self, order_id: str, since_ms: int | None, bootstrap: str | None = None) -> list[KafkaEvent]:
        self.asked.append((order_id, since_ms))
        return [event for event in self.events if event.key == order_id]


def saga_events(order_id: str) -> list[KafkaEvent]:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    chain = [
        ("events.order", "ORDER_CREATED", 1_714_564_800_000),
        ("events.inventory", "INVENTORY_RESERVED", 1_714_564_800_040),
        ("events.payment", "PAYMENT_FAILED", 1_714_564_800_090),
        ("events.inventory", "INVENTORY_RELEASED", 1_714_564_800_120),
        ("events.order", "ORDER_CANCELLED", 1_714_564_800_150),
    ]
    return [
        KafkaEvent(
            topic=topic, partition=0, offset=n, timestamp_ms=at, key=order_id,
            headers={"id": ids[n], "eventType": event_type, "causationId": ids[n - 1] if n else ""},
            value={"event_type": event_type, "reason": "insufficient_funds" if event_type == "PAYMENT_FAILED" else None},
        )
        for n, (topic, event_type, at) in enumerate(chain)
    ]


@pytest.fixture
def order_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    fake = FakeService()
    server = serve(fake)
    monkeypatch.setenv("SAGA_ORDER_URL", fake.url)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def topics(monkeypatch: pytest.MonkeyPatch) -> FakeTopics:
    fake = FakeTopics([])
    monkeypatch.setattr(trace_module, "read_saga", fake.read)
    return fake


def test_json_lists_the_events_in_order_with_the_spec_keys(order_svc, topics: FakeTopics, capsys) -> None:
    order_id = str(uuid.uuid4())
    topics.events = list(reversed(saga_events(order_id)))

    outcome = run_saga(capsys, "trace", order_id, "--json")

    document = json.loads(outcome.stdout)
    assert document["order_id"] == order_id
    assert document["outcome"] == "CANCELLED"
    assert [e["event_type"] for e in document["events"]] == [
        "ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED", "ORDER_CANCELLED"
    ]
    assert [e["service"] for e in document["events"]] == ["order_svc", "inventory_svc", "payment_svc", "inventory_svc", "order_svc"]
    assert [e["hop_ms"] for e in document["events"]] == [None, 40, 50, 30, 30]
    assert [e["compensation"] for e in document["events"]] == [False, False, False, True, True]
    assert document["events"][0]["at"] == "2024-05-01T12:00:00.000Z"


def test_plain_mode_is_a_table_with_time_since_start_and_compensations(order_svc, topics: FakeTopics, capsys) -> None:
    order_id = str(uuid.uuid4())
    topics.events = saga_events(order_id)

    outcome = run_saga(capsys, "trace", order_id)

    assert outcome.exit_code == 0
    assert f"saga {order_id}: CANCELLED, 5 events in 150 ms" in " ".join(outcome.stdout.split())
    assert "↺ INVENTORY_RELEASED" in outcome.stdout
    assert "insufficient_funds" in outcome.stdout


def test_the_read_starts_shortly_before_the_orders_creation(order_svc: FakeService, topics: FakeTopics, capsys) -> None:
    order_id = str(uuid.uuid4())
    order_svc.answer("GET", f"/orders/{order_id}", 200, {"order_id": order_id, "created_at": "2024-05-01T12:00:00Z"})
    topics.events = saga_events(order_id)

    run_saga(capsys, "trace", order_id)

    assert topics.asked == [(order_id, 1_714_564_800_000 - trace_module.START_MARGIN_MS)]


def test_without_the_order_service_the_read_starts_at_the_beginning(monkeypatch, topics: FakeTopics, capsys) -> None:
    monkeypatch.setenv("SAGA_ORDER_URL", f"http://127.0.0.1:{closed_port()}")
    order_id = str(uuid.uuid4())
    topics.events = saga_events(order_id)

    assert run_saga(capsys, "trace", order_id).exit_code == 0
    assert topics.asked == [(order_id, None)]


def test_since_overrides_the_start(order_svc, topics: FakeTopics, capsys) -> None:
    order_id = str(uuid.uuid4())
    topics.events = saga_events(order_id)

    run_saga(capsys, "trace", order_id, "--since", "2024-05-01T12:00:00.100Z")

    assert topics.asked == [(order_id, 1_714_564_800_100)]
    assert order_svc.requests == []


def test_an_unknown_saga_is_one_line(order_svc, topics: FakeTopics, capsys) -> None:
    outcome = run_saga(capsys, "trace", "no-such-order")

    assert_one_line_error(outcome, "no events for order no-such-order on events.order, events.inventory, events.payment")


# --- records that cannot be read are shown, bounded, never a traceback ----------------------------

def poison(order_id: str, offset: int, value: bytes, headers=(), timestamp: int = 1_714_564_800_060) -> KafkaEvent:
    return decode_record(ConsumerRecord(
        topic="events.inventory", partition=0, offset=offset, timestamp=timestamp, timestamp_type=0, key=order_id.encode(),
        value=value, checksum=None, serialized_key_size=0, serialized_value_size=len(value), headers=list(headers),
    ))


def poisoned_saga(order_id: str) -> list[KafkaEvent]:
    return saga_events(order_id) + [
        poison(order_id, 10, b"[" * 100_000),
        poison(order_id, 11, b"\x00\xff" * 3_000_000, [("eventType", b""), ("eventType", b"\x1b[31mRED\n" * 1000)]),
        poison(order_id, 12, b'{"reason": "' + b"r" * 100_000 + b'\\n", "skus": 5, "error": "\\u0000\\ud800"}',
               [("eventType", b"PAYMENT_FAILED"), ("", b""), ("id", b"\xff"), ("causationId", b"\xff")]),
        poison(order_id, 13, b"{}", [("eventType", b"ORDER_CREATED")], timestamp=2**62),
    ]


def test_json_shows_records_it_cannot_read_as_bounded_text(order_svc, topics: FakeTopics, capsys) -> None:
    order_id = str(uuid.uuid4())
    topics.events = poisoned_saga(order_id)

    outcome = run_saga(capsys, "trace", order_id, "--json")

    assert (outcome.exit_code, outcome.stderr) == (0, "")
    events = json.loads(outcome.stdout)["events"]
    assert len(events) == 5 + 4
    by_offset = {(e["topic"], e["offset"]): e for e in events}
    assert by_offset["events.inventory", 10]["payload"].startswith("[[[[")
    assert by_offset["events.inventory", 11]["payload"].endswith("… (6000000 bytes)")
    assert len(by_offset["events.inventory", 11]["event_type"]) < 1100
    assert by_offset["events.inventory", 12]["payload"]["error"] == "\x00\ud800"
    assert by_offset["events.inventory", 13]["at"] == f"{2**62} ms since the epoch"
    assert len(outcome.stdout) < 200_000


def test_the_table_shows_records_it_cannot_read_on_bounded_printable_lines(order_svc, topics: FakeTopics, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    order_id = str(uuid.uuid4())
    topics.events = poisoned_saga(order_id)

    outcome = run_saga(capsys, "trace", order_id)

    assert (outcome.exit_code, outcome.stderr) == (0, "")
    lines = outcome.stdout.splitlines()
    assert all(line.isprintable() for line in lines), [line for line in lines if not line.isprintable()][:3]
    assert all(len(line) <= 200 for line in lines), max(len(line) for line in lines)
    assert "\\x1b[31mRED\\n" in outcome.stdout and "\x1b" not in outcome.stdout
    assert " " + "r" * (EVENT_CHARS - 1) + "…" in outcome.stdout  # the failure detail, cut
