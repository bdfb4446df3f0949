"""One saga as the board draws it: a lane per service, its events in the order they happened.

Pure: it takes the saga's records (read by key from the topics, as `saga trace` does) and puts
them through saga_cli/timeline.py — the same order, hop latencies, compensations and "waiting
for" as `saga trace` — then places each event in a lane:

- an event of events.order / events.inventory / events.payment in the lane of the service that
  emitted it (order_svc, inventory_svc, payment_svc);
- a DEAD_LETTER in the lane of the consumer that refused the event (the one that recorded it),
  caused by the refused event when that is on the topics;
- anything else (a consumer no service is) in an extra lane, "other", shown only when needed.

Each event carries its marks (MARKS) and its cause's sequence number; an unfinished saga carries
what it waits for, in the lane of the service it waits on. Nothing else of a payload leaves
here than the API already shows (ids, types, customer, amount, reason, SKUs, a dead letter's
error): no signature, no record copies.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from saga_cli.dlq import DEAD_LETTER_EVENT_TYPE
from saga_cli.kafka import KafkaEvent, iso_time
from saga_cli.timeline import Step, build_timeline, outcome, waiting_for
from saga_cli.trace import SIGNED_TOPICS
from shared import descriptors

LANES = tuple(service.name for service in descriptors.SERVICES)
"""One lane per service, in the services' order (shared/descriptors.py)."""
OTHER_LANE = "other"
MARKS = {
    "compensation": "↺ compensation: undoes an earlier step (last in, first out)",
    "outcome": "★ outcome: the order service ended the saga (CONFIRMED or CANCELLED)",
    "dead_letter": "✕ dead letter: this service refused an event of the saga",
    "foreign": "⚑ from outside: not signed by a service (published by someone else)",
    "duplicate": "❐ duplicate: the same event delivered again (at-least-once)",
}
"""Each mark an event may carry, and what the legend says of it."""
DETAIL_CHARS = 200


def saga_board(order_id: str, events: Iterable[KafkaEvent], now_ms: int) -> dict[str, Any]:
    """The board of saga `order_id` from its records (any order): {"order_id", "outcome"
    (CONFIRMED, CANCELLED or IN_FLIGHT), "reason", "customer_id", "amount", "currency",
    "started_at", "started_ms", "duration_ms" (first to last event), "lanes" (names, in order),
    "steps" [{"seq" (1-based), "lane", "event_type", "event_id", "cause_seq", "caused_by",
    "at", "since_start_ms", "hop_ms", "marks", "detail", "where"}], "waiting" [{"lane",
    "events", "after", "after_seq", "since", "waited_ms", "dead_letter"}]}. Times in ms."""
    steps = build_timeline(events)
    seq_by_id: dict[str, int] = {}
    rows = []
    for seq, step in enumerate(steps, start=1):
        event = step.event
        if event.event_id and not step.duplicate:
            seq_by_id.setdefault(event.event_id, seq)
        rows.append(_row(seq, step, seq_by_id))
    waiting = [_waiting(wait, steps, now_ms) for wait in waiting_for(steps)]
    lanes = list(LANES)
    if any(row["lane"] == OTHER_LANE for row in rows):
        lanes.append(OTHER_LANE)
    created = _created_payload(steps)
    final = next((step.event.value for step in reversed(steps)
                  if step.event.event_type in ("ORDER_CANCELLED", "ORDER_CONFIRMATION_FAILED") and step.event.signed
                  and isinstance(step.event.value, Mapping)), {})
    return {
        "order_id": order_id,
        "outcome": outcome(steps) if steps else "UNKNOWN",
        "reason": _text(final.get("reason")),
        "customer_id": _text(created.get("customer_id")),
        "amount": _text(created.get("amount")),
        "currency": _text(created.get("currency")),
        "started_at": steps[0].event.at if steps else None,
        "started_ms": steps[0].event.timestamp_ms if steps else None,
        "duration_ms": steps[-1].since_start_ms if steps else None,
        "lanes": lanes,
        "steps": rows,
        "waiting": waiting,
    }


def _row(seq: int, step: Step, seq_by_id: Mapping[str, int]) -> dict[str, Any]:
    event = step.event
    cause = event.causation_id
    return {
        "seq": seq,
        "lane": lane_of(event),
        "event_type": event.event_type or "?",
        "event_id": event.event_id,
        "cause_seq": seq_by_id.get(cause) if cause else None,
        "caused_by": step.caused_by,
        "at": event.at,
        "since_start_ms": step.since_start_ms,
        "hop_ms": step.hop_ms,
        "marks": marks_of(step),
        "detail": _detail(event),
        "where": f"{event.topic}[{event.partition}]@{event.offset}",
    }


def lane_of(event: KafkaEvent) -> str:
    """The lane an event is drawn in (module doc)."""
    if event.event_type == DEAD_LETTER_EVENT_TYPE:
        consumer = event.value.get("consumer") if isinstance(event.value, Mapping) else None
        return consumer if consumer in LANES else OTHER_LANE
    return event.service if event.service in LANES else OTHER_LANE


def marks_of(step: Step) -> list[str]:
    """The MARKS names that apply to `step`, in MARKS' order."""
    event = step.event
    found = {
        "compensation": step.compensation,
        "outcome": event.event_type in ("ORDER_CONFIRMED", "ORDER_CANCELLED") and event.signed,
        "dead_letter": event.event_type == DEAD_LETTER_EVENT_TYPE,
        "foreign": event.topic in SIGNED_TOPICS and not event.signed,
        "duplicate": step.duplicate,
    }
    return [mark for mark in MARKS if found[mark]]


def _waiting(wait, steps: list[Step], now_ms: int) -> dict[str, Any]:
    after_seq = next((seq for seq, step in reversed(list(enumerate(steps, start=1)))
                      if step.event.event_type == wait.after and step.event.timestamp_ms == wait.since_ms), None)
    return {
        "lane": wait.service if wait.service in LANES else OTHER_LANE,
        "events": list(wait.events),
        "after": wait.after,
        "after_seq": after_seq,
        "since": iso_time(wait.since_ms),
        "waited_ms": max(now_ms - wait.since_ms, 0),
        "dead_letter": wait.dead_letter,
    }


def _detail(event: KafkaEvent) -> str:
    """What went wrong, in a few words: a reason and SKUs, or a dead letter's refused event and error."""
    payload = event.value if isinstance(event.value, Mapping) else {}
    if event.event_type == DEAD_LETTER_EVENT_TYPE:
        refused = _text(payload.get("event_type")) or "a record"
        text = f"{payload.get('consumer') or '?'} refused {refused}: {payload.get('error') or ''}"
    else:
        parts = [str(payload["reason"])] if payload.get("reason") else []
        skus = payload.get("skus")
        if isinstance(skus, list) and skus:
            parts.append(", ".join(str(sku) for sku in skus))
        text = " · ".join(parts)
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _created_payload(steps: list[Step]) -> Mapping[str, Any]:
    created = [step.event for step in steps if step.event.event_type == "ORDER_CREATED" and isinstance(step.event.value, Mapping)]
    created.sort(key=lambda event: not event.signed)
    return created[0].value if created else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
