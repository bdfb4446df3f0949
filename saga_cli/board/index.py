"""What the saga board knows of every saga, kept in memory from the topics (pure: no Kafka here).

`SagaIndex.add(event)` takes each record of the four saga topics as the follower reads it
(saga_cli/board/follow.py), in any order across topics and partitions. The list's questions —
`sagas(query)`, `dead_letters(query)`, `counts` — are answered from memory, so they cost the same
however large the topics are; one saga's whole story is read from the topics by key and time
when it is opened (saga_cli/board/lanes.py).

Kept per saga (one `SagaSummary`): when it started (its ORDER_CREATED, or the first record seen),
customer, amount, outcome and root cause from order_svc's events, when it finished, how many
dead letters it has. While a saga is in flight its records are kept too, headers only, to say
what it waits for (saga_cli/timeline.waiting_for); they are dropped once it ends, so memory
grows with the number of sagas, not of events.

A saga is a key that is an order id (a UUID): a record under any other key (someone's test, a
hostile producer) is no saga, though its dead letter is listed among the dead letters.
"""
from __future__ import annotations

import heapq
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from saga_cli.dlq import DEAD_LETTER_EVENT_TYPE, DeadLetter, dead_letter_from
from saga_cli.kafka import KafkaEvent
from saga_cli.timeline import OUTCOMES, Waiting, build_timeline, waiting_for

IN_FLIGHT = "IN_FLIGHT"
STATUSES = ("all", "in_flight", "stuck", "confirmed", "cancelled")
"""The list's status filter: every saga, those without an outcome yet, those in flight longer
than the stuck threshold, and those the order service ended CONFIRMED or CANCELLED."""
MAX_LIMIT = 1000
ERROR_CHARS = 300
"""A dead letter's error is cut to this many characters in the index (the page shows one line)."""


@dataclass(slots=True)
class SagaSummary:
    """One saga as the list shows it. Times are epoch milliseconds (record timestamps)."""

    order_id: str
    started_ms: int
    last_ms: int
    customer_id: str | None = None
    amount: str | None = None
    currency: str | None = None
    status: str = IN_FLIGHT
    """IN_FLIGHT, CONFIRMED or CANCELLED (from ORDER_CONFIRMED / ORDER_CANCELLED on the topics)."""
    reason: str | None = None
    """The root cause: ORDER_CANCELLED's reason, or ORDER_CONFIRMATION_FAILED's while it is cancelling."""
    cancelling: bool = False
    finished_ms: int | None = None
    events: int = 0
    dead_letters: int = 0
    created_seen: bool = False
    pending: list[KafkaEvent] | None = field(default_factory=list)
    """Its records, headers only, while in flight (None once it ended)."""

    def as_json(self, now_ms: int, stuck_after_ms: int) -> dict[str, Any]:
        """The list row: ids, status, reason, times (ms), and while in flight what it waits for."""
        waits = self.waiting() if self.status == IN_FLIGHT else []
        return {
            "order_id": self.order_id,
            "status": self.status,
            "cancelling": self.cancelling,
            "reason": self.reason,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "currency": self.currency,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "last_ms": self.last_ms,
            "age_ms": now_ms - self.started_ms,
            "duration_ms": None if self.finished_ms is None else self.finished_ms - self.started_ms,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "stuck": self.is_stuck(now_ms, stuck_after_ms),
            "waiting_for": [wait.as_json() for wait in waits],
        }

    def is_stuck(self, now_ms: int, stuck_after_ms: int) -> bool:
        """In flight for more than `stuck_after_ms` at `now_ms` (both ms)."""
        return self.status == IN_FLIGHT and now_ms - self.started_ms > stuck_after_ms

    def waiting(self) -> list[Waiting]:
        """What it waits for (saga_cli/timeline.waiting_for of its records); [] once it ended."""
        return waiting_for(build_timeline(self.pending or ()))


@dataclass(frozen=True)
class Query:
    """The list's filters. `status` one of STATUSES; `reason` and `customer` exact; `since_ms` /
    `until_ms` bound the saga's start (epoch ms, inclusive); `search` a prefix of the order id
    (dead letters: of the key) or of the customer; at most `limit` rows, newest first."""

    status: str = "all"
    reason: str | None = None
    customer: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    search: str | None = None
    limit: int = 100


class SagaIndex:
    """Every saga and dead letter on the topics from `since_ms` on (module doc)."""

    def __init__(self, since_ms: int | None = None) -> None:
        self.since_ms = since_ms
        self.by_id: dict[str, SagaSummary] = {}
        self.letters: list[tuple[int, DeadLetter]] = []  # (when it failed, epoch ms; the letter)
        self.letter_ids: set[str] = set()
        self.records = 0
        self.reasons: Counter[str] = Counter()

    # --- feeding ------------------------------------------------------------------------------
    def add(self, event: KafkaEvent) -> None:
        """Take one record of a saga topic; never raises on what it holds."""
        self.records += 1
        new_letter = event.event_type == DEAD_LETTER_EVENT_TYPE and self._add_dead_letter(event)
        order_id = _order_id(event.key)
        if order_id is None:
            return
        saga = self.by_id.get(order_id)
        if saga is None:
            saga = self.by_id[order_id] = SagaSummary(order_id, event.timestamp_ms, event.timestamp_ms)
        saga.events += 1
        saga.last_ms = max(saga.last_ms, event.timestamp_ms)
        saga.started_ms = min(saga.started_ms, event.timestamp_ms)
        payload = event.value if isinstance(event.value, Mapping) else {}
        kind = event.event_type
        if event.topic == "events.order":
            if kind == "ORDER_CREATED" and (not saga.created_seen or event.signed):
                saga.created_seen = True
                saga.customer_id = _text(payload.get("customer_id"))
                saga.amount = _text(payload.get("amount"))
                saga.currency = _text(payload.get("currency"))
            elif kind == "ORDER_CONFIRMATION_FAILED" and event.signed:
                saga.cancelling = True
                saga.reason = saga.reason or _text(payload.get("reason"))
            elif kind in OUTCOMES and event.signed and saga.status == IN_FLIGHT:
                saga.status = OUTCOMES[kind]
                saga.finished_ms = event.timestamp_ms
                if kind == "ORDER_CANCELLED":
                    saga.reason = _text(payload.get("reason")) or saga.reason
                    self.reasons[saga.reason or "?"] += 1
                saga.pending = None
        if new_letter:
            saga.dead_letters += 1
        if saga.pending is not None:
            saga.pending.append(_light(event))

    def _add_dead_letter(self, event: KafkaEvent) -> bool:
        """Keep the dead letter `event` announces; False when it is none or already kept (the
        outbox may publish one twice)."""
        letter = dead_letter_from(event)
        if letter is None or letter.id in self.letter_ids:
            return False
        self.letter_ids.add(letter.id)
        if len(letter.error) > ERROR_CHARS:
            letter = replace(letter, error=letter.error[:ERROR_CHARS] + "…")
        self.letters.append((_epoch_ms(letter.at) or event.timestamp_ms, letter))
        return True

    # --- questions ----------------------------------------------------------------------------
    def saga(self, order_id: str) -> SagaSummary | None:
        """The saga with this order id (canonical UUID text), None when no record of it was read."""
        return self.by_id.get(order_id)

    def sagas(self, query: Query, now_ms: int, stuck_after_ms: int) -> list[SagaSummary]:
        """The sagas `query` asks for, newest first (by start), at most query.limit of them."""
        search = (query.search or "").strip().lower()
        def wanted(saga: SagaSummary) -> bool:
            """Whether `saga` matches every filter of `query`."""
            if query.status == "in_flight" and saga.status != IN_FLIGHT:
                return False
            if query.status == "stuck" and not saga.is_stuck(now_ms, stuck_after_ms):
                return False
            if query.status in ("confirmed", "cancelled") and saga.status != query.status.upper():
                return False
            if query.reason and saga.reason != query.reason:
                return False
            if query.customer and saga.customer_id != query.customer:
                return False
            if query.since_ms is not None and saga.started_ms < query.since_ms:
                return False
            if query.until_ms is not None and saga.started_ms > query.until_ms:
                return False
            if search and not (saga.order_id.startswith(search) or (saga.customer_id or "").lower().startswith(search)):
                return False
            return True
        return heapq.nlargest(query.limit, filter(wanted, self.by_id.values()), key=lambda saga: saga.started_ms)

    def dead_letters(self, query: Query) -> list[DeadLetter]:
        """The dead letters `query` asks for (time range on when they failed, search on the key),
        newest first, at most query.limit."""
        search = (query.search or "").strip().lower()
        def wanted(item: tuple[int, DeadLetter]) -> bool:
            """Whether the (failed at ms, dead letter) matches the search and time range of `query`."""
            at, letter = item
            if search and not (letter.key or "").lower().startswith(search):
                return False
            if query.since_ms is not None and at < query.since_ms:
                return False
            if query.until_ms is not None and at > query.until_ms:
                return False
            return True
        return [letter for _, letter in heapq.nlargest(query.limit, filter(wanted, self.letters), key=lambda item: item[0])]

    def counts(self, now_ms: int, stuck_after_ms: int) -> dict[str, int]:
        """How many sagas each status filter holds, and how many dead letters there are."""
        counted = Counter(saga.status for saga in self.by_id.values())
        stuck = sum(1 for saga in self.by_id.values() if saga.is_stuck(now_ms, stuck_after_ms))
        return {"all": len(self.by_id), "in_flight": counted[IN_FLIGHT], "stuck": stuck,
                "confirmed": counted["CONFIRMED"], "cancelled": counted["CANCELLED"],
                "dead_letters": len(self.letters)}

    def known_reasons(self) -> list[str]:
        """Every root cause of a cancelled saga seen, sorted (the page's reason filter)."""
        return sorted(self.reasons)


def letter_as_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the page lists it: `saga_cli.dlq`'s JSON plus the saga it belongs to
    (its key when that is an order id, else None)."""
    return {**letter.as_json(), "saga_id": _order_id(letter.key)}


def _light(event: KafkaEvent) -> KafkaEvent:
    """`event` with only what waiting_for reads: the ids, type, whether it is signed, and a
    dead letter's event id, consumer and error."""
    headers = {name: event.headers.get(name) for name in ("id", "eventType", "causationId")}
    headers["signature"] = "present" if event.signed else None
    value = None
    if event.event_type == DEAD_LETTER_EVENT_TYPE and isinstance(event.value, Mapping):
        value = {name: str(event.value.get(name))[:ERROR_CHARS] for name in ("event_id", "consumer", "error")}
    return KafkaEvent(event.topic, event.partition, event.offset, event.timestamp_ms, event.key, headers, value)


def _order_id(key: str | None) -> str | None:
    """The key as an order id (canonical UUID text), or None when it is not one."""
    if not key or len(key) != 36:
        return None
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch_ms(iso: str) -> int | None:
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


def sagas_as_json(sagas: Iterable[SagaSummary], now_ms: int, stuck_after_ms: int) -> list[dict[str, Any]]:
    """Each saga's list row (SagaSummary.as_json)."""
    return [saga.as_json(now_ms, stuck_after_ms) for saga in sagas]
