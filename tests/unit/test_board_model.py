"""The saga board's pure parts: the index the list is answered from, and one saga as lanes.

Records are built in memory as the follower decodes them from the topics (KafkaEvent), fed in
any order across topics, as the follower reads partitions side by side."""
from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from saga_cli.board.index import Query, SagaIndex, letter_as_json
from saga_cli.board.lanes import LANES, saga_board
from saga_cli.kafka import KafkaEvent

pytestmark = pytest.mark.unit

TOPIC_OF = {"ORDER": "events.order", "INVENTORY": "events.inventory", "PAYMENT": "events.payment",
            "DEAD": "events.deadletter"}
T0 = 1_790_000_000_000
HOUR_MS = 3_600_000


class Saga:
    """One saga's records, each caused by the one before unless told otherwise."""

    def __init__(self, customer: str = "alice", order_id: str | None = None) -> None:
        self.order_id = order_id or str(uuid.uuid4())
        self.customer = customer
        self.events: list[KafkaEvent] = []

    def emit(self, event_type: str, at_ms: int, *, cause: KafkaEvent | None | str = "previous", signed: bool = True,
             **payload: Any) -> KafkaEvent:
        if cause == "previous":
            cause = self.events[-1] if self.events else None
        if event_type == "ORDER_CREATED":
            payload = {"customer_id": self.customer, "amount": "40.00", "currency": "EUR", **payload}
        headers = {"id": str(uuid.uuid4()), "eventType": event_type, "sagaId": self.order_id,
                   "causationId": cause.event_id if cause else ""}
        if signed:
            headers["signature"] = "ed25519:0:AA=="
        event = KafkaEvent(TOPIC_OF[event_type.split("_")[0]], 0, len(self.events), at_ms, self.order_id, headers,
                           {"event_type": event_type, "order_id": self.order_id, **payload})
        self.events.append(event)
        return event

    def dead_letter(self, refused: KafkaEvent, by: str, error: str, at_ms: int) -> KafkaEvent:
        payload = {"dead_letter_id": str(uuid.uuid4()), "consumer": by, "topic": refused.topic, "partition": 0,
                   "offset": refused.offset, "error": error, "at": "2026-09-21T14:00:00+00:00", "key": self.order_id,
                   "event_type": refused.event_type, "event_id": refused.event_id}
        event = KafkaEvent("events.deadletter", 0, len(self.events), at_ms, self.order_id,
                           {"id": str(uuid.uuid4()), "eventType": "DEAD_LETTER", "sagaId": self.order_id,
                            "causationId": refused.event_id, "signature": "ed25519:0:AA=="}, payload)
        self.events.append(event)
        return event


def happy(at: int, customer: str = "alice") -> Saga:
    saga = Saga(customer)
    for offset, kind in enumerate(("ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED",
                                   "INVENTORY_COMMITTED")):
        saga.emit(kind, at + 10 * offset)
    return saga


def declined(at: int, customer: str = "bob") -> Saga:
    saga = Saga(customer)
    saga.emit("ORDER_CREATED", at)
    saga.emit("INVENTORY_RESERVED", at + 10)
    saga.emit("PAYMENT_FAILED", at + 20, reason="insufficient_funds")
    saga.emit("INVENTORY_RELEASED", at + 30)
    saga.emit("ORDER_CANCELLED", at + 40, reason="insufficient_funds")
    return saga


def in_flight(at: int, customer: str = "carol") -> Saga:
    saga = Saga(customer)
    saga.emit("ORDER_CREATED", at)
    saga.emit("INVENTORY_RESERVED", at + 10)
    return saga


def indexed(*sagas: Saga) -> SagaIndex:
    index = SagaIndex()
    records = [event for saga in sagas for event in saga.events]
    random.Random(16).shuffle(records)  # partitions and topics are read side by side
    for record in records:
        index.add(record)
    return index


def ids(found) -> list[str]:
    return [saga.order_id for saga in found]


# --- the index ------------------------------------------------------------------------------

def test_each_saga_has_its_outcome_reason_customer_and_times_whatever_order_its_records_come_in() -> None:
    ok, no, running = happy(T0), declined(T0 + 1000), in_flight(T0 + 2000)
    index = indexed(ok, no, running)
    now = T0 + 5000
    rows = {row["order_id"]: row for row in (saga.as_json(now, 30_000) for saga in index.by_id.values())}
    assert (rows[ok.order_id]["status"], rows[ok.order_id]["duration_ms"], rows[ok.order_id]["customer_id"]) == ("CONFIRMED", 30, "alice")
    assert (rows[no.order_id]["status"], rows[no.order_id]["reason"]) == ("CANCELLED", "insufficient_funds")
    assert rows[running.order_id]["status"] == "IN_FLIGHT" and rows[running.order_id]["duration_ms"] is None
    assert rows[running.order_id]["age_ms"] == 3000
    [wait] = rows[running.order_id]["waiting_for"]
    assert (wait["service"], wait["events"], wait["after"]) == ("payment_svc", ["PAYMENT_COMPLETED", "PAYMENT_FAILED"], "INVENTORY_RESERVED")
    assert rows[ok.order_id]["waiting_for"] == []
    assert index.by_id[ok.order_id].pending is None  # an ended saga keeps no records


def test_the_list_filters_by_status_reason_customer_time_and_id_newest_first() -> None:
    first, second, third, running = happy(T0), declined(T0 + HOUR_MS), happy(T0 + 2 * HOUR_MS, "bob"), in_flight(T0 + 3 * HOUR_MS)
    index = indexed(first, second, third, running)
    now = T0 + 3 * HOUR_MS + 60_000
    assert ids(index.sagas(Query(), now, 30_000)) == [running.order_id, third.order_id, second.order_id, first.order_id]
    assert ids(index.sagas(Query(limit=2), now, 30_000)) == [running.order_id, third.order_id]
    assert ids(index.sagas(Query(status="confirmed"), now, 30_000)) == [third.order_id, first.order_id]
    assert ids(index.sagas(Query(status="cancelled", reason="insufficient_funds"), now, 30_000)) == [second.order_id]
    assert ids(index.sagas(Query(customer="bob"), now, 30_000)) == [third.order_id, second.order_id]
    assert ids(index.sagas(Query(since_ms=T0 + HOUR_MS, until_ms=T0 + 2 * HOUR_MS), now, 30_000)) == [third.order_id, second.order_id]
    assert ids(index.sagas(Query(search=first.order_id[:8]), now, 30_000)) == [first.order_id]
    assert ids(index.sagas(Query(status="in_flight"), now, 30_000)) == [running.order_id]
    assert ids(index.sagas(Query(status="stuck"), now, 30_000)) == [running.order_id]  # a minute in flight
    assert ids(index.sagas(Query(status="stuck"), now, 120_000)) == []
    assert index.counts(now, 30_000) == {"all": 4, "in_flight": 1, "stuck": 1, "confirmed": 2, "cancelled": 1, "dead_letters": 0}
    assert index.known_reasons() == ["insufficient_funds"]


def test_dead_letters_are_listed_once_with_their_saga_and_counted_on_it() -> None:
    saga = happy(T0)
    forged = saga.emit("PAYMENT_COMPLETED", T0 + 100, cause=None, signed=False)
    letter = saga.dead_letter(forged, "order_svc", "unauthenticated: no signature", T0 + 110)
    index = indexed(saga)
    index.add(letter)  # the outbox may publish a dead letter twice
    [found] = index.dead_letters(Query())
    shown = letter_as_json(found)
    assert (shown["saga_id"], shown["consumer"], shown["event_type"], shown["error"]) == (
        saga.order_id, "order_svc", "PAYMENT_COMPLETED", "unauthenticated: no signature")
    assert index.by_id[saga.order_id].dead_letters == 1
    assert index.dead_letters(Query(search="not-this-key")) == []


def test_records_that_are_no_saga_are_no_row_and_nothing_stops_the_index() -> None:
    index = SagaIndex()
    strange = [
        KafkaEvent("events.order", 0, 1, T0, "not-an-order-id", {"eventType": "ORDER_CREATED"}, {"customer_id": "x"}),
        KafkaEvent("events.order", 0, 2, T0, None, {}, "just text"),
        KafkaEvent("events.payment", 0, 3, T0, str(uuid.uuid4()), {"eventType": "PAYMENT_COMPLETED"}, [1, 2]),
        KafkaEvent("events.deadletter", 0, 4, T0, "k", {"eventType": "DEAD_LETTER"}, {"dead_letter_id": 7}),
        KafkaEvent("events.order", 0, 5, T0, str(uuid.uuid4()), {"eventType": "ORDER_CREATED"}, {"customer_id": ["x"]}),
    ]
    for event in strange:
        index.add(event)
    assert index.records == 5
    assert index.counts(T0, 30_000)["all"] == 2  # two keys are order ids
    assert [row.customer_id for row in index.sagas(Query(), T0, 30_000)] == [None, None]
    assert index.letters == []


# --- one saga as lanes -----------------------------------------------------------------------

def lanes(board: dict) -> list[tuple[str, str, str, int | None]]:
    return [(step["lane"], step["event_type"], " ".join(step["marks"]), step["cause_seq"]) for step in board["steps"]]


def test_a_compensating_saga_has_its_lanes_sequence_causes_and_marks() -> None:
    saga = declined(T0)
    board = saga_board(saga.order_id, list(reversed(saga.events)), T0 + 1000)
    assert board["lanes"] == list(LANES)
    assert lanes(board) == [
        ("order_svc", "ORDER_CREATED", "", None),
        ("inventory_svc", "INVENTORY_RESERVED", "", 1),
        ("payment_svc", "PAYMENT_FAILED", "", 2),
        ("inventory_svc", "INVENTORY_RELEASED", "compensation", 3),
        ("order_svc", "ORDER_CANCELLED", "compensation outcome", 4),
    ]
    assert [step["hop_ms"] for step in board["steps"]] == [None, 10, 10, 10, 10]
    assert (board["outcome"], board["reason"], board["customer_id"], board["duration_ms"]) == ("CANCELLED", "insufficient_funds", "bob", 40)
    assert board["steps"][2]["detail"] == "insufficient_funds"
    assert board["waiting"] == []


def test_a_dead_letter_is_in_the_lane_of_the_service_that_refused_it_caused_by_what_it_refused() -> None:
    saga = happy(T0)
    forged = saga.emit("PAYMENT_COMPLETED", T0 + 100, cause=None, signed=False)
    saga.dead_letter(forged, "order_svc", "unauthenticated: no signature", T0 + 110)
    board = saga_board(saga.order_id, saga.events, T0 + 1000)
    assert lanes(board)[5:] == [("payment_svc", "PAYMENT_COMPLETED", "foreign", None),
                                ("order_svc", "DEAD_LETTER", "dead_letter", 6)]
    assert board["steps"][6]["detail"] == "order_svc refused PAYMENT_COMPLETED: unauthenticated: no signature"
    assert "ed25519" not in str(board)  # no signature leaves: ids, types, times and what went wrong


def test_an_unfinished_saga_waits_in_the_lane_of_the_service_that_owes_the_next_step() -> None:
    saga = in_flight(T0)
    board = saga_board(saga.order_id, saga.events, T0 + 45_000)
    assert board["outcome"] == "IN_FLIGHT"
    assert board["waiting"] == [{"lane": "payment_svc", "events": ["PAYMENT_COMPLETED", "PAYMENT_FAILED"],
                                 "after": "INVENTORY_RESERVED", "after_seq": 2, "since": "2026-09-21T14:13:20.010Z",
                                 "waited_ms": 44_990, "dead_letter": None}]


def test_a_redelivered_event_is_marked_duplicate_and_causes_point_at_the_first_copy() -> None:
    saga = happy(T0)
    copy = KafkaEvent(**{**saga.events[1].__dict__, "offset": 99, "timestamp_ms": T0 + 45})
    board = saga_board(saga.order_id, [*saga.events, copy], T0 + 1000)
    marks = {(step["event_type"], " ".join(step["marks"])) for step in board["steps"]}
    assert ("INVENTORY_RESERVED", "duplicate") in marks
    assert board["steps"][2]["cause_seq"] == 2  # PAYMENT_COMPLETED ← the first INVENTORY_RESERVED
