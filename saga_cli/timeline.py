"""One saga's events put in the order they happened, with hop latencies and compensations marked.

Pure functions over `KafkaEvent`s: no Kafka here, so the ordering rules are tested on
records built in memory.

Order: by the record timestamp; events with the same timestamp follow the causation
chain (an event never comes before the event that caused it), then topic and offset.
A redelivered copy of an event (same event id, allowed by at-least-once delivery) stays
in the timeline, marked `duplicate`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from saga_cli.kafka import SAGA_TOPICS, KafkaEvent, iso_time

COMPENSATIONS = frozenset({"ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED"})
OUTCOMES = {"ORDER_CONFIRMED": "CONFIRMED", "ORDER_CANCELLED": "CANCELLED"}


@dataclass(frozen=True)
class Step:
    """One record of a saga in its timeline: milliseconds since the saga's first record and since its
    cause's (`hop_ms`), the cause's type, and whether it repeats an event id seen before (a redelivery)."""

    event: KafkaEvent
    since_start_ms: int
    hop_ms: int | None  # from the event that caused it; None for the first event or an unseen cause
    caused_by: str | None  # the cause's event type
    duplicate: bool

    @property
    def compensation(self) -> bool:
        """Whether the event undoes a step (COMPENSATIONS)."""
        return self.event.event_type in COMPENSATIONS

    def as_json(self) -> dict[str, Any]:
        """The step as `saga trace --json` prints it: where and when the record sits, its ids, cause, hop
        in ms, compensation, duplicate, signed, traceparent and payload."""
        event = self.event
        return {
            "event_type": event.event_type,
            "service": event.service,
            "topic": event.topic,
            "partition": event.partition,
            "offset": event.offset,
            "event_id": event.event_id,
            "causation_id": event.causation_id,
            "caused_by": self.caused_by,
            "at": event.at,
            "timestamp_ms": event.timestamp_ms,
            "since_start_ms": self.since_start_ms,
            "hop_ms": self.hop_ms,
            "compensation": self.compensation,
            "duplicate": self.duplicate,
            "signed": event.signed,
            "traceparent": event.headers.get("traceparent"),
            "payload": event.value,
        }


def build_timeline(events: Iterable[KafkaEvent]) -> list[Step]:
    """`events` (one saga's, from every topic) as Steps, in timestamp order; records of one millisecond
    cause first, then topic, partition and offset. [] for no events."""
    events = list(events)
    if not events:
        return []
    first_copy = _first_copy_by_event_id(events)
    depth = _causation_depths(events, first_copy)
    ordered = sorted(events, key=lambda event: (event.timestamp_ms, depth[_place(event)], *_position(event)))

    start_ms = ordered[0].timestamp_ms
    seen: set[str] = set()
    steps = []
    for event in ordered:
        cause = first_copy.get(event.causation_id or "")
        steps.append(
            Step(
                event=event,
                since_start_ms=event.timestamp_ms - start_ms,
                hop_ms=None if cause is None else event.timestamp_ms - cause.timestamp_ms,
                caused_by=None if cause is None else cause.event_type,
                duplicate=bool(event.event_id) and event.event_id in seen,
            )
        )
        if event.event_id:
            seen.add(event.event_id)
    return steps


NEXT_STEP: dict[str, tuple[str, tuple[str, ...]]] = {
    "ORDER_CREATED": ("inventory_svc", ("INVENTORY_RESERVED", "INVENTORY_REJECTED")),
    "INVENTORY_RESERVED": ("payment_svc", ("PAYMENT_COMPLETED", "PAYMENT_FAILED")),
    "PAYMENT_COMPLETED": ("order_svc", ("ORDER_CONFIRMED", "ORDER_CONFIRMATION_FAILED")),
    "ORDER_CONFIRMED": ("inventory_svc", ("INVENTORY_COMMITTED",)),
    "ORDER_CONFIRMATION_FAILED": ("payment_svc", ("PAYMENT_REFUNDED",)),
    "PAYMENT_FAILED": ("inventory_svc", ("INVENTORY_RELEASED",)),
    "PAYMENT_REFUNDED": ("inventory_svc", ("INVENTORY_RELEASED",)),
    "INVENTORY_RELEASED": ("order_svc", ("ORDER_CANCELLED",)),
    "INVENTORY_REJECTED": ("order_svc", ("ORDER_CANCELLED",)),
}
"""event → the service that reacts to it and the events it may answer with (the flows of the
event catalog; INVENTORY_COMMITTED and ORDER_CANCELLED end a saga)."""


@dataclass(frozen=True)
class Waiting:
    """What an unfinished saga waits for: `service` to answer `after` with one of `events`,
    since `since_ms`; `dead_letter` when that service refused the event (its error)."""

    service: str
    events: tuple[str, ...]
    after: str
    since_ms: int
    dead_letter: str | None = None

    def as_json(self) -> dict[str, Any]:
        """{"service", "events", "after", "since" (ISO-8601), "dead_letter"}."""
        return {"service": self.service, "events": list(self.events), "after": self.after,
                "since": iso_time(self.since_ms), "dead_letter": self.dead_letter}

    def describe(self, now_ms: int) -> str:
        """One line: who is awaited for what, for how many seconds up to `now_ms`, and its dead
        letter's error if any."""
        line = f"{self.service}: {' or '.join(self.events)} after {self.after}, {(now_ms - self.since_ms) / 1000:.0f}s"
        return line + (f" (dead-lettered: {self.dead_letter})" if self.dead_letter else "")


def waiting_for(steps: list[Step]) -> list[Waiting]:
    """The steps an unfinished saga waits for: each of its services' signed events that nothing
    has answered yet (an ORDER_CONFIRMATION_FAILED that payment_svc answered with a void, which
    emits nothing, counts as answered once anything else is awaited). Empty once it ended."""
    if outcome(steps) != "IN_FLIGHT":
        return []
    events = [step.event for step in steps if step.event.signed and step.event.event_type in NEXT_STEP]
    by_id = {event.event_id: event for event in events if event.event_id}
    answered = {  # an event counts as answered by one of the answers its reacting service gives
        step.event.causation_id for step in steps
        if step.event.signed and step.event.causation_id in by_id
        and step.event.event_type in NEXT_STEP[by_id[step.event.causation_id].event_type or ""][1]
    }
    refused = {
        str(step.event.value.get("event_id")): f"{step.event.value.get('consumer')}: {step.event.value.get('error')}"
        for step in steps
        if step.event.event_type == "DEAD_LETTER" and isinstance(step.event.value, dict)
    }
    open_steps = [event for event in events if event.event_id not in answered]
    if len(open_steps) > 1:
        open_steps = [e for e in open_steps if e.event_type != "ORDER_CONFIRMATION_FAILED"] or open_steps
    waits = []
    for event in open_steps:
        service, answers = NEXT_STEP[event.event_type]
        waits.append(Waiting(service, answers, event.event_type or "?", event.timestamp_ms,
                             refused.get(event.event_id or "")))
    return waits


def outcome(steps: list[Step]) -> str:
    """CONFIRMED or CANCELLED once the order event says so, else IN_FLIGHT."""
    for step in reversed(steps):
        if step.event.event_type in OUTCOMES:
            return OUTCOMES[step.event.event_type]
    return "IN_FLIGHT"


def _first_copy_by_event_id(events: list[KafkaEvent]) -> dict[str, KafkaEvent]:
    first: dict[str, KafkaEvent] = {}
    for event in sorted(events, key=lambda event: (event.timestamp_ms, *_position(event))):
        if event.event_id:  # an empty id names no event: nothing is caused by it
            first.setdefault(event.event_id, event)
    return first


def _causation_depths(events: list[KafkaEvent], by_id: dict[str, KafkaEvent]) -> dict[tuple[str, int, int], int]:
    """How many known ancestors each event has (0 for ORDER_CREATED or an event whose cause we
    did not read). Walks each chain in a loop, not by recursion: records are whatever anyone
    published, so a chain may be thousands of events long, or (corrupt) a cycle."""
    depths: dict[tuple[str, int, int], int] = {}
    for event in events:
        unknown: list[KafkaEvent] = []  # each caused by the next, depths not known yet
        on_chain: set[str] = set()
        current = event
        while _place(current) not in depths:
            unknown.append(current)
            on_chain.add(current.event_id or "")
            cause = by_id.get(current.causation_id or "")
            if cause is None or (cause.event_id or "") in on_chain:  # no cause, or a cycle
                depths[_place(unknown.pop())] = 0
                break
            current = cause
        depth = depths[_place(current)]
        for known in reversed(unknown):
            depth += 1
            depths[_place(known)] = depth
    return depths


def _place(event: KafkaEvent) -> tuple[str, int, int]:
    return (event.topic, event.partition, event.offset)


def _position(event: KafkaEvent) -> tuple[int, str, int, int]:
    topic_rank = SAGA_TOPICS.index(event.topic) if event.topic in SAGA_TOPICS else len(SAGA_TOPICS)
    return (topic_rank, event.topic, event.partition, event.offset)
