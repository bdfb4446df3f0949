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

from saga_cli.kafka import SAGA_TOPICS, KafkaEvent

COMPENSATIONS = frozenset({"ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED", "INVENTORY_RELEASED", "ORDER_CANCELLED"})
OUTCOMES = {"ORDER_CONFIRMED": "CONFIRMED", "ORDER_CANCELLED": "CANCELLED"}


@dataclass(frozen=True)
class Step:
    event: KafkaEvent
    since_start_ms: int
    hop_ms: int | None  # from the event that caused it; None for the first event or an unseen cause
    caused_by: str | None  # the cause's event type
    duplicate: bool

    @property
    def compensation(self) -> bool:
        return self.event.event_type in COMPENSATIONS

    def as_json(self) -> dict[str, Any]:
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
