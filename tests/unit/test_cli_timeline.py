"""`saga trace` ordering: by record timestamp, ties broken by the causation chain; hops and compensations."""
from __future__ import annotations

import random
import uuid

import pytest

from saga_cli.kafka import KafkaEvent
from saga_cli.timeline import build_timeline, outcome, waiting_for

pytestmark = pytest.mark.unit

TOPIC_OF = {"ORDER": "events.order", "INVENTORY": "events.inventory", "PAYMENT": "events.payment"}


class Saga:
    """Builds one saga's records in memory, each caused by the one before unless told otherwise."""

    def __init__(self) -> None:
        self.order_id = str(uuid.uuid4())
        self.events: list[KafkaEvent] = []
        self._offsets: dict[str, int] = {}

    def emit(self, event_type: str, at_ms: int, caused_by: KafkaEvent | None = None, event_id: str | None = None) -> KafkaEvent:
        topic = TOPIC_OF[event_type.split("_")[0]]
        offset = self._offsets.get(topic, 0)
        self._offsets[topic] = offset + 1
        if caused_by is None and self.events:
            caused_by = self.events[-1]
        event = KafkaEvent(
            topic=topic,
            partition=1,
            offset=offset,
            timestamp_ms=at_ms,
            key=self.order_id,
            headers={
                "id": event_id or str(uuid.uuid4()),
                "eventType": event_type,
                "sagaId": self.order_id,
                "causationId": caused_by.event_id if caused_by else "",
                "signature": "ed25519:0000000000000000:AA==",
            },
            value={"event_type": event_type, "order_id": self.order_id},
        )
        self.events.append(event)
        return event


def shuffled(events: list[KafkaEvent]) -> list[KafkaEvent]:
    copy = list(events)
    random.Random(7).shuffle(copy)
    return copy


def types(steps) -> list[str]:
    return [step.event.event_type for step in steps]


def test_events_are_ordered_by_timestamp_with_hop_latency_from_their_cause() -> None:
    saga = Saga()
    saga.emit("ORDER_CREATED", 1_000)
    saga.emit("INVENTORY_RESERVED", 1_040)
    saga.emit("PAYMENT_COMPLETED", 1_100)
    saga.emit("ORDER_CONFIRMED", 1_130)
    confirmed = saga.events[-1]
    saga.emit("INVENTORY_COMMITTED", 1_190, caused_by=confirmed)

    steps = build_timeline(shuffled(saga.events))

    assert types(steps) == ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED", "INVENTORY_COMMITTED"]
    assert [step.since_start_ms for step in steps] == [0, 40, 100, 130, 190]
    assert [step.hop_ms for step in steps] == [None, 40, 60, 30, 60]
    assert [step.caused_by for step in steps][1:] == ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED"]
    assert not any(step.compensation for step in steps)
    assert outcome(steps) == "CONFIRMED"


def test_equal_timestamps_follow_the_causation_chain_not_the_topic() -> None:
    # INVENTORY_RELEASED (events.inventory) causes ORDER_CANCELLED (events.order) in the same millisecond;
    # topic rank alone would put events.order first.
    saga = Saga()
    saga.emit("ORDER_CREATED", 1_000)
    saga.emit("INVENTORY_RESERVED", 1_010)
    saga.emit("PAYMENT_FAILED", 1_020)
    saga.emit("INVENTORY_RELEASED", 1_030)
    saga.emit("ORDER_CANCELLED", 1_030)

    steps = build_timeline(shuffled(saga.events))

    assert types(steps)[-2:] == ["INVENTORY_RELEASED", "ORDER_CANCELLED"]
    assert steps[-1].hop_ms == 0
    assert outcome(steps) == "CANCELLED"


def test_a_whole_chain_in_one_millisecond_still_reads_cause_first() -> None:
    saga = Saga()
    for event_type in ["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMATION_FAILED",
                       "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED"]:
        saga.emit(event_type, 5_000)

    steps = build_timeline(list(reversed(saga.events)))

    assert types(steps) == [event.event_type for event in saga.events]


def test_compensations_are_marked() -> None:
    saga = Saga()
    for at, event_type in enumerate(["ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMATION_FAILED",
                                     "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED"]):
        saga.emit(event_type, 1_000 + at)

    steps = build_timeline(saga.events)

    assert [step.event.event_type for step in steps if step.compensation] == [
        "ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED"
    ]


def test_a_redelivered_event_is_kept_and_marked_duplicate() -> None:
    saga = Saga()
    created = saga.emit("ORDER_CREATED", 1_000)
    reserved = saga.emit("INVENTORY_RESERVED", 1_050)
    saga.emit("INVENTORY_RESERVED", 1_900, caused_by=created, event_id=reserved.event_id)  # re-published copy

    steps = build_timeline(saga.events)

    assert [step.duplicate for step in steps] == [False, False, True]
    assert steps[2].hop_ms == 900  # from the cause, whatever copy this is


def test_an_event_whose_cause_was_not_read_has_no_hop() -> None:
    saga = Saga()
    saga.emit("ORDER_CREATED", 1_000)
    saga.emit("INVENTORY_RESERVED", 1_050)
    later = saga.events[1:]  # read with --since after ORDER_CREATED

    steps = build_timeline(later)

    assert steps[0].hop_ms is None and steps[0].caused_by is None
    assert steps[0].since_start_ms == 0
    assert outcome(steps) == "IN_FLIGHT"


def test_a_causation_cycle_does_not_hang() -> None:
    saga = Saga()
    first = saga.emit("ORDER_CREATED", 1_000, event_id="a")
    saga.emit("INVENTORY_RESERVED", 1_000, event_id="b")
    saga.events[0] = KafkaEvent(**{**first.__dict__, "headers": {**first.headers, "causationId": "b"}})

    assert len(build_timeline(saga.events)) == 2


def test_json_has_the_spec_keys_per_event() -> None:
    saga = Saga()
    saga.emit("ORDER_CREATED", 1_700_000_000_000)

    (step,) = build_timeline(saga.events)
    document = step.as_json()

    assert {"event_type", "service", "topic", "event_id", "causation_id", "at"} <= document.keys()
    assert document["service"] == "order_svc"
    assert document["at"] == "2023-11-14T22:13:20.000Z"
    assert document["causation_id"] is None  # empty header for ORDER_CREATED


def test_no_events_make_no_timeline() -> None:
    assert build_timeline([]) == []


def test_a_chain_far_longer_than_the_recursion_limit_is_ordered() -> None:
    saga = Saga()
    for n in range(5_000):
        saga.emit("INVENTORY_RESERVED" if n % 2 else "ORDER_CREATED", 1_000)

    steps = build_timeline(shuffled(saga.events))

    assert [step.event for step in steps] == saga.events


def test_an_empty_event_id_names_no_cause() -> None:
    saga = Saga()
    saga.emit("ORDER_CREATED", 1_000)
    blank = KafkaEvent(topic="events.order", partition=1, offset=9, timestamp_ms=1_000, key=saga.order_id,
                       headers={"id": "", "causationId": ""}, value={"event_type": "X", "event_id": ""})

    steps = build_timeline([blank, *saga.events])

    assert [step.hop_ms for step in steps] == [None, None]
    assert not any(step.duplicate for step in steps)


def test_an_unfinished_saga_says_which_service_it_waits_for_and_since_when() -> None:
    saga = Saga()
    saga.emit("ORDER_CREATED", 1000)
    reserved = saga.emit("INVENTORY_RESERVED", 1050)
    [wait] = waiting_for(build_timeline(saga.events))
    assert (wait.service, wait.events, wait.after, wait.since_ms) == (
        "payment_svc", ("PAYMENT_COMPLETED", "PAYMENT_FAILED"), "INVENTORY_RESERVED", 1050)
    assert wait.dead_letter is None and "payment_svc: PAYMENT_COMPLETED or PAYMENT_FAILED" in wait.describe(3050)

    refusal = KafkaEvent(topic="events.deadletter", partition=0, offset=0, timestamp_ms=1060, key=saga.order_id,
                         headers={"eventType": "DEAD_LETTER", "id": str(uuid.uuid4())},
                         value={"consumer": "payment_svc", "error": "boom", "event_id": reserved.event_id})
    [wait] = waiting_for(build_timeline([*saga.events, refusal]))
    assert wait.dead_letter == "payment_svc: boom"


def test_a_cancellation_in_flight_waits_on_both_branches_and_a_finished_saga_on_nothing() -> None:
    saga = Saga()
    created = saga.emit("ORDER_CREATED", 1000)
    saga.emit("ORDER_CONFIRMATION_FAILED", 1100, caused_by=created)  # the deadline passed: compensate at once
    waits = waiting_for(build_timeline(saga.events))
    assert [w.service for w in waits] == ["inventory_svc"]  # payment's void emits nothing: the reservation is awaited
    saga.emit("INVENTORY_REJECTED", 1200, caused_by=created)
    saga.emit("ORDER_CANCELLED", 1300)
    assert waiting_for(build_timeline(saga.events)) == []


def test_an_unsigned_event_is_nobody_s_step() -> None:
    saga = Saga()
    forged = saga.emit("ORDER_CREATED", 1000)
    del forged.headers["signature"]
    assert waiting_for(build_timeline(saga.events)) == []
