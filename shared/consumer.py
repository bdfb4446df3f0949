"""The consumer runtime: one Kafka message in; one committed local transaction, or one dead letter, out.

Invariants:
  * `EventConsumer.handle` returns only once the message's outcome is durable in the
    service's database: its handler's transaction committed (with its inbox row), it
    was a duplicate or of no interest, or a dead letter (row + outbox row) committed.
    The caller acks the message only after that, so an offset never moves past an
    event whose effects are not committed.
  * Transient failures (TransientError: connection lost, serialization failure,
    deadlock…) are retried with exponential backoff and equal jitter, `RetryPolicy.attempts`
    times (8–16 s in all); then the message is dead-lettered. Any other failure, and a message that cannot
    be decoded at all, is dead-lettered at once: retrying a deterministic failure only
    blocks the partition.
  * When even the dead letter cannot be written (the database is down), it keeps
    trying, with capped backoff: nothing is acked that is not recorded somewhere.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from shared import metrics
from shared.errors import EventDecodeError, TransientError
from shared.events import EVENT_TYPES, decode_event
from shared.topics import DEADLETTER, Header
from shared.tracing import child_traceparent
from shared.uow import Envelope, Handler, UnitOfWork, write_outbox

log = logging.getLogger(__name__)

DEAD_LETTER_EVENT_TYPE = "DEAD_LETTER"

_INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (id, consumer, topic, kafka_partition, kafka_offset, message_key, headers, raw_value, error)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO NOTHING
RETURNING failed_at
"""
_SELECT_DEAD_LETTER = """
SELECT id, consumer, topic, kafka_partition, kafka_offset, message_key, headers, raw_value, error, failed_at, replayed_at
FROM dead_letters WHERE id = $1
"""
_MARK_REPLAYED = """UPDATE dead_letters SET replayed_at = clock_timestamp() WHERE id = $1"""


@dataclass(frozen=True)
class IncomingMessage:
    """A Kafka record as the runtime needs it, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]
    timestamp_ms: int = 0

    @classmethod
    def from_record(cls, record: Any) -> "IncomingMessage":
        """From a faust Message or an aiokafka ConsumerRecord (headers as pairs or a mapping)."""
        raw_headers = record.headers or ()
        pairs = raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
        headers = {k: (v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)) for k, v in pairs}
        return cls(record.topic, record.partition, record.offset, record.key, record.value, headers,
                   getattr(record, "timestamp", 0) or 0)

    @property
    def key_text(self) -> str | None:
        return self.key.decode("utf-8", "replace") if self.key is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    """Six attempts spaced 0.125–0.25 s, 0.25–0.5 s, … up to 4–8 s: a message is dead-lettered
    for a transient failure only after 8–16 s of them, so a database restart or a terminated
    connection (a few seconds) is ridden out rather than parked as a dead letter."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Equal jitter: uniform in [cap/2, cap] with cap = min(max, base·2^attempt), so the
        retries always span at least half the whole backoff."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(cap / 2, cap)


@dataclass
class EventConsumer:
    """Handles messages for one service (the inbox consumer name) with its handler table."""

    uow: UnitOfWork
    handlers: Mapping[type, Handler]
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def name(self) -> str:
        return self.uow.consumer

    @functools.cached_property
    def handled_types(self) -> frozenset[str]:
        return frozenset(cls.model_fields["event_type"].default for cls in self.handlers)

    async def handle(self, message: IncomingMessage) -> str:
        """Process `message` to a durable outcome and return it: handled, duplicate, ignored or dead_lettered."""
        event_type = message.headers.get(Header.EVENT_TYPE, "")
        if event_type in EVENT_TYPES and event_type not in self.handled_types:
            return self._count(event_type, "ignored")  # another service's business
        started = time.perf_counter()
        try:
            envelope = decode_message(message)
        except EventDecodeError as error:
            await self.dead_letter(message, f"undecodable: {error}")
            return self._count(event_type or "unknown", "dead_lettered")

        error_text = ""
        for attempt in range(self.retry.attempts):
            try:
                tx = await self.uow.handle(envelope, self.handlers)
                outcome = "duplicate" if tx is not None and tx.duplicate else "handled"
                metrics.HANDLER_SECONDS.labels(self.name, event_type).observe(time.perf_counter() - started)
                return self._count(event_type, outcome)
            except TransientError as error:
                error_text = f"transient, {attempt + 1} attempts: {error}"
                metrics.RETRIES.labels(self.name, event_type).inc()
                log.warning("retrying %s %s after %s", event_type, envelope.event_id, error)
                await asyncio.sleep(self.retry.delay(attempt))
            except Exception as error:  # a deterministic failure: retrying would block the partition
                log.exception("handler for %s %s failed", event_type, envelope.event_id)
                error_text = f"{type(error).__name__}: {' '.join(str(error).split())}"
                break
        await self.dead_letter(message, error_text)
        return self._count(event_type, "dead_lettered")

    async def dead_letter(self, message: IncomingMessage, error: str) -> None:
        """Record `message` as a dead letter and publish it to events.deadletter through the outbox.

        Retries until the database takes it: a dead letter is the last place an event can be kept."""
        attempt = 0
        while True:
            try:
                await self._write_dead_letter(message, error)
                metrics.DEAD_LETTERS.labels(self.name, message.topic).inc()
                log.error("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)
                return
            except TransientError as failure:
                log.warning("cannot write dead letter yet (%s); retrying", failure)
                await asyncio.sleep(self.retry.delay(min(attempt, 8)) + 0.1)
                attempt += 1

    async def _write_dead_letter(self, message: IncomingMessage, error: str) -> None:
        dead_letter_id = uuid.uuid4()
        raw_value = message.value.decode("utf-8", "replace") if message.value is not None else None
        headers = dict(message.headers)
        async with self.uow.bare_transaction() as connection:
            failed_at = await connection.fetchval(
                _INSERT_DEAD_LETTER, dead_letter_id, self.name, message.topic, message.partition, message.offset,
                message.key_text, json.dumps(headers), raw_value, error,
            )
            if failed_at is None:
                return  # this very record was dead-lettered before
            await write_outbox(
                connection,
                aggregate_type=DEADLETTER,
                event_type=DEAD_LETTER_EVENT_TYPE,
                payload={
                    "dead_letter_id": str(dead_letter_id),
                    "consumer": self.name,
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "key": message.key_text,
                    "headers": headers,
                    "value": raw_value,
                    "error": error,
                    "at": failed_at.astimezone(timezone.utc).isoformat(),
                },
                saga_id=message.key_text or "",
                causation_id=headers.get(Header.ID, ""),
                traceparent=child_traceparent(headers.get(Header.TRACEPARENT)),
            )

    async def replay(self, dead_letter_id: uuid.UUID) -> str:
        """Run a dead letter's stored message through the same path again (still deduplicated by the inbox).

        Returns the new outcome; a dead letter that fails again stays where it is. KeyError if unknown."""
        async with self.uow.connection() as connection:
            row = await connection.fetchrow(_SELECT_DEAD_LETTER, dead_letter_id)
        if row is None:
            raise KeyError(str(dead_letter_id))
        message = IncomingMessage(
            topic=row["topic"],
            partition=row["kafka_partition"],
            offset=row["kafka_offset"],
            key=row["message_key"].encode() if row["message_key"] is not None else None,
            value=row["raw_value"].encode() if row["raw_value"] is not None else None,
            headers=json.loads(row["headers"]),
        )
        envelope = decode_message(message)
        tx = await self.uow.handle(envelope, self.handlers)
        async with self.uow.connection() as connection:
            await connection.execute(_MARK_REPLAYED, dead_letter_id)
        return "duplicate" if tx is not None and tx.duplicate else "handled"

    def _count(self, event_type: str, outcome: str) -> str:
        metrics.EVENTS_HANDLED.labels(self.name, event_type, outcome).inc()
        return outcome


def decode_message(message: IncomingMessage) -> Envelope:
    """The envelope of a message: event id from the `id` header, the event from the JSON value.

    EventDecodeError when the id header is missing or not a UUID, the value is not a valid
    event, or the eventType header contradicts the payload."""
    raw_id = message.headers.get(Header.ID)
    try:
        event_id = uuid.UUID(raw_id or "")
    except ValueError:
        raise EventDecodeError(f"header {Header.ID!r} is not an event id: {raw_id!r}") from None
    if message.value is None:
        raise EventDecodeError("message has no value")
    event = decode_event(message.value)
    header_type = message.headers.get(Header.EVENT_TYPE)
    if header_type and header_type != event.event_type:
        raise EventDecodeError(f"header eventType {header_type} contradicts payload event_type {event.event_type}")
    return Envelope(event_id=event_id, event=event, traceparent=message.headers.get(Header.TRACEPARENT))
