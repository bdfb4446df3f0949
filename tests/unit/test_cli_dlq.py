"""`saga dlq list|replay`: the dead-letter topic read to its end, and replays routed to the recording service."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from cli_support import FakeService, assert_one_line_error, closed_port, run_saga, serve
from saga_cli import dlq
from saga_cli.kafka import KafkaEvent
from test_cli_kafka_read import FakeConsumer

pytestmark = pytest.mark.unit


def dead_letter_payload(consumer: str = "inventory_svc", topic: str = "events.order", partition: int = 1,
                        offset: int = 7, error: str = "undecodable: not JSON: Expecting value",
                        value: str | None = "not json{", event_type: str | None = None) -> dict:
    headers = {"id": str(uuid.uuid4())}
    if event_type:
        headers["eventType"] = event_type
    key = str(uuid.uuid4())
    return {
        "dead_letter_id": str(uuid.uuid4()), "consumer": consumer, "topic": topic, "partition": partition,
        "offset": offset, "key": key, "headers": headers, "value": value, "error": error,
        "at": "2024-05-01T12:00:00.123456+00:00",
    }


def dead_letter_event(payload: dict, partition: int = 0, offset: int = 0, timestamp_ms: int = 1_714_564_800_000) -> KafkaEvent:
    return KafkaEvent(
        topic="events.deadletter", partition=partition, offset=offset, timestamp_ms=timestamp_ms,
        key=payload["key"], headers={"id": str(uuid.uuid4()), "eventType": "DEAD_LETTER"}, value=payload,
    )


def record(partition: int, offset: int, payload: dict) -> ConsumerRecord:
    value = json.dumps(payload).encode()
    return ConsumerRecord(
        topic="events.deadletter", partition=partition, offset=offset, timestamp=1_714_564_800_000 + offset,
        timestamp_type=0, key=b"k", value=value, checksum=None, serialized_key_size=1,
        serialized_value_size=len(value), headers=[("id", str(uuid.uuid4()).encode()), ("eventType", b"DEAD_LETTER")],
    )


# --- reading the topic ----------------------------------------------------------------------

async def test_read_topic_reads_every_partition_up_to_the_end_seen_at_start() -> None:
    log = {TopicPartition("events.deadletter", p): [record(p, n, dead_letter_payload()) for n in range(3 + p)] for p in range(3)}
    consumer = FakeConsumer(log)
    late = TopicPartition("events.deadletter", 0)
    consumer.on_first_fetch = lambda: log[late].append(record(0, 3, dead_letter_payload()))  # written after the start

    events = await dlq.read_topic(consumer, "events.deadletter", {"events.deadletter": [0, 1, 2]})

    assert sorted((e.partition, e.offset) for e in events) == [(p, n) for p in range(3) for n in range(3 + p)]


async def test_read_topic_of_a_topic_that_does_not_exist_yet_is_empty() -> None:
    assert await dlq.read_topic(FakeConsumer({}), "events.deadletter", {"events.order": [0]}) == []


def test_dead_letters_once_each_with_the_record_they_stand_for() -> None:
    payload = dead_letter_payload(consumer="payment_svc", topic="events.inventory", partition=2, offset=41,
                                  value='{"event_type": "INVENTORY_RESERVED", "schema_version": 9}')
    published_twice = [dead_letter_event(payload, offset=0), dead_letter_event(payload, offset=1)]
    not_a_dead_letter = KafkaEvent("events.deadletter", 0, 2, 0, "k", {"eventType": "SOMETHING"}, {"x": 1})

    letters = dlq.dead_letters([*published_twice, not_a_dead_letter])

    assert [letter.as_json() for letter in letters] == [{
        "id": payload["dead_letter_id"], "topic": "events.inventory", "partition": 2, "offset": 41,
        "error": payload["error"], "at": payload["at"], "consumer": "payment_svc", "key": payload["key"],
        "event_type": "INVENTORY_RESERVED", "event_id": payload["headers"]["id"],
        "dead_letter_event": "events.deadletter[0]@0",
    }]


def test_the_event_type_comes_from_the_original_header_first() -> None:
    payload = dead_letter_payload(event_type="ORDER_CREATED", value='{"event_type": "SOMETHING_ELSE"}')
    assert dlq.dead_letters([dead_letter_event(payload)])[0].event_type == "ORDER_CREATED"


# --- the commands -----------------------------------------------------------------------------

class FakeTopic:
    def __init__(self) -> None:
        self.events: list[KafkaEvent] = []

    async def read(self) -> list[KafkaEvent]:
        return list(self.events)


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch, tmp_path) -> FakeTopic:
    fake = FakeTopic()
    monkeypatch.setattr(dlq, "read_deadletter_topic", fake.read)
    monkeypatch.setenv("SAGA_KEYS_DIR", str(tmp_path / "no-keys"))  # no keys here: listed unverified
    return fake


def signed_dead_letter_event(ring, payload: dict) -> KafkaEvent:
    headers = {"id": str(uuid.uuid4()), "eventType": "DEAD_LETTER", "sagaId": payload["key"], "causationId": ""}
    headers["signature"] = ring.sign(event_id=headers["id"], event_type="DEAD_LETTER", saga_id=payload["key"],
                                     causation_id="", payload=payload)
    return KafkaEvent(topic="events.deadletter", partition=0, offset=1, timestamp_ms=1_714_564_800_000,
                      key=payload["key"], headers=headers, value=payload)


def test_with_the_services_keys_only_what_a_service_signed_is_a_dead_letter(tmp_path) -> None:
    from shared import auth

    auth.ensure_keys(tmp_path)
    genuine = signed_dead_letter_event(auth.KeyRing.load(tmp_path, "inventory_svc"), dead_letter_payload())
    forged = dead_letter_event(dead_letter_payload())
    misattributed = signed_dead_letter_event(auth.KeyRing.load(tmp_path, "order_svc"), dead_letter_payload())
    altered = signed_dead_letter_event(auth.KeyRing.load(tmp_path, "inventory_svc"), dead_letter_payload())
    altered = KafkaEvent(**{**altered.__dict__, "value": {**altered.value, "error": "something else"}})
    ring = auth.KeyRing.load(tmp_path, None)
    listed = dlq.dead_letters([genuine, forged, misattributed, altered], ring)
    assert [letter.id for letter in listed] == [genuine.value["dead_letter_id"]]
    assert len(dlq.dead_letters([genuine, forged, misattributed, altered])) == 4  # no keys: unverified


@pytest.fixture
def inventory_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    fake = FakeService()
    server = serve(fake)
    monkeypatch.setenv("SAGA_INVENTORY_URL", fake.url)
    monkeypatch.setenv("SAGA_ORDER_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("SAGA_PAYMENT_URL", f"http://127.0.0.1:{closed_port()}")
    yield fake
    server.shutdown()
    server.server_close()


def test_list_json_has_the_spec_keys(topic: FakeTopic, capsys) -> None:
    first, second = dead_letter_payload(offset=3), dead_letter_payload(consumer="order_svc", topic="events.payment")
    second["at"] = "2024-05-01T12:00:01+00:00"
    topic.events = [dead_letter_event(second, offset=1), dead_letter_event(first, offset=0)]

    outcome = run_saga(capsys, "dlq", "list", "--json")

    assert outcome.exit_code == 0
    listed = json.loads(outcome.stdout)
    assert [entry["id"] for entry in listed] == [first["dead_letter_id"], second["dead_letter_id"]]  # oldest first
    assert {"id", "topic", "partition", "offset", "error", "at"} <= set(listed[0])
    assert (listed[0]["topic"], listed[0]["partition"], listed[0]["offset"]) == ("events.order", 1, 3)


def test_list_filters_by_consumer(topic: FakeTopic, capsys) -> None:
    topic.events = [dead_letter_event(dead_letter_payload(consumer=name), offset=n)
                    for n, name in enumerate(("order_svc", "payment_svc"))]

    listed = json.loads(run_saga(capsys, "dlq", "list", "--json", "--consumer", "payment_svc").stdout)

    assert [entry["consumer"] for entry in listed] == ["payment_svc"]
    assert_one_line_error(run_saga(capsys, "dlq", "list", "--consumer", "nobody"), "--consumer must be one of")


def test_list_for_people_shows_id_record_and_error(topic: FakeTopic, capsys) -> None:
    payload = dead_letter_payload(topic="events.order", partition=1, offset=7)
    topic.events = [dead_letter_event(payload)]

    outcome = run_saga(capsys, "dlq", "list")

    assert payload["dead_letter_id"] in outcome.stdout
    assert "events.order[1]@7" in outcome.stdout
    assert "undecodable: not JSON" in outcome.stdout
    assert max(len(line) for line in outcome.stdout.splitlines()) <= 100


def test_an_empty_list_says_so(topic: FakeTopic, capsys) -> None:
    assert json.loads(run_saga(capsys, "dlq", "list", "--json").stdout) == []
    assert "no dead letters" in run_saga(capsys, "dlq", "list").stdout


def test_list_without_kafka_is_one_line(monkeypatch, capsys) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", bootstrap)

    assert_one_line_error(run_saga(capsys, "dlq", "list"), "Kafka is not reachable", bootstrap)


def test_replay_posts_to_the_service_that_recorded_it(topic: FakeTopic, inventory_svc: FakeService, capsys) -> None:
    payload = dead_letter_payload(consumer="inventory_svc")
    topic.events = [dead_letter_event(payload)]
    ident = payload["dead_letter_id"]
    inventory_svc.answer("POST", f"/deadletters/{ident}/replay", 200, {"id": ident, "outcome": "handled"})

    outcome = run_saga(capsys, "dlq", "replay", ident, "--json")

    assert outcome.exit_code == 0, outcome
    assert json.loads(outcome.stdout)["outcome"] == "handled"
    assert [(r.method, r.path) for r in inventory_svc.requests] == [("POST", f"/deadletters/{ident}/replay")]


def test_a_second_replay_says_nothing_changed(topic: FakeTopic, inventory_svc: FakeService, capsys) -> None:
    payload = dead_letter_payload(consumer="inventory_svc")
    topic.events = [dead_letter_event(payload)]
    ident = payload["dead_letter_id"]
    inventory_svc.answer("POST", f"/deadletters/{ident}/replay", 200, {"id": ident, "outcome": "duplicate"})

    outcome = run_saga(capsys, "dlq", "replay", ident)

    assert outcome.exit_code == 0
    assert "duplicate" in outcome.stdout and "nothing changed" in outcome.stdout


def test_a_replay_that_fails_again_is_one_line_with_the_reason(topic: FakeTopic, inventory_svc: FakeService, capsys) -> None:
    payload = dead_letter_payload(consumer="inventory_svc")
    topic.events = [dead_letter_event(payload)]
    ident = payload["dead_letter_id"]
    inventory_svc.answer("POST", f"/deadletters/{ident}/replay", 409,
                         {"detail": "replay failed: not JSON: Expecting value: line 1\ncolumn 1 (char 0)"})

    outcome = run_saga(capsys, "dlq", "replay", ident)

    assert_one_line_error(outcome, f"replay of dead letter {ident} failed again: not JSON: Expecting value: line 1 column 1")


def test_an_unknown_or_malformed_id_is_one_line(topic: FakeTopic, capsys) -> None:
    unknown = str(uuid.uuid4())
    assert_one_line_error(run_saga(capsys, "dlq", "replay", unknown), f"no dead letter {unknown} on events.deadletter")
    assert_one_line_error(run_saga(capsys, "dlq", "replay", "nope"), "not a dead letter id: 'nope'")


def test_a_dead_letter_the_service_no_longer_holds_is_one_line(topic: FakeTopic, inventory_svc: FakeService, capsys) -> None:
    payload = dead_letter_payload(consumer="inventory_svc")
    topic.events = [dead_letter_event(payload)]

    outcome = run_saga(capsys, "dlq", "replay", payload["dead_letter_id"])

    assert_one_line_error(outcome, f"inventory_svc has no dead letter {payload['dead_letter_id']}")


def test_replay_with_the_service_down_is_one_line(topic: FakeTopic, inventory_svc: FakeService, capsys) -> None:
    payload = dead_letter_payload(consumer="payment_svc")
    topic.events = [dead_letter_event(payload)]

    outcome = run_saga(capsys, "dlq", "replay", payload["dead_letter_id"])

    assert_one_line_error(outcome, "payment_svc is not reachable")
