"""The consumer runtime: one Kafka message in; one committed local transaction, or one dead letter, out.

Invariants:
  * `EventProcessor.handle` returns only once the message's outcome is durable in the
    service's database: its handler's transaction committed (with its inbox row), it
    was a duplicate or of no interest, or a dead letter (row + outbox row) committed.
    The caller acks the message only after that, so an offset never moves past an
    event whose effects are not committed.
  * Transient failures (TransientError: connection lost, serialization failure,
    deadlock, a cached statement a migration invalidated…) are retried with capped
    exponential backoff and equal jitter for as long as they last: a transient failure
    never becomes a dead letter (the consumer pauses its partitions meanwhile and keeps
    its group membership: shared/kafka_consumer.py). A message that cannot be decoded
    (any bytes, any size, any headers, whatever the parser raises) or authenticated, and
    an event whose handler fails deterministically, is dead-lettered at once — unless
    handler failures come `Breaker.threshold` in a row: that is a bug, and the events wait
    and retry instead.
  * A record's content never stops the consumer: the dead letter is a bounded, safe copy
    (shared/dead_letter.py); if even that cannot be written for a reason that is not
    transient, a minimal one (where and why) is. When the database is down it keeps
    trying, with capped backoff: nothing is acked that is not recorded somewhere.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
import uuid
from enum import StrEnum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared import dead_letter, metrics, retrying, telemetry
from shared.auth import OWNERS, KeyRing, Unauthenticated
from shared.errors import DomainError, EventDecodeError, TransientError
from shared.events import EVENT_TYPES, OrderCreated, decode_event
from shared.group_commit import BatchAborted, GroupCommit
from shared.safe_text import preview
from shared.topics import Header
from shared.uow import Envelope, Handler, Transaction, UnitOfWork

log = logging.getLogger(__name__)

DEAD_LETTER_EVENT_TYPE = dead_letter.DEAD_LETTER_EVENT_TYPE


@dataclass(frozen=True)
class IncomingMessage:
    """A Kafka record as the runtime needs it, independent of the client library.

    `header_pairs` are the record's headers as they came: (name, value bytes or None), in
    order, duplicates and empty names included. `headers` is the text view the runtime
    reads: each name's last value, decoded as UTF-8 with invalid bytes replaced."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    header_pairs: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int = 0

    @classmethod
    def from_record(cls, record: Any) -> "IncomingMessage":
        """From an aiokafka ConsumerRecord (headers as pairs or a mapping; values bytes or text)."""
        raw_headers = record.headers or ()
        pairs = raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
        header_pairs = tuple((str(name), _as_bytes(value)) for name, value in pairs)
        return cls(record.topic, record.partition, record.offset, record.key, record.value, header_pairs,
                   getattr(record, "timestamp", 0) or 0)

    @classmethod
    def with_headers(cls, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Mapping[str, str]) -> "IncomingMessage":
        """A message whose headers are given as text (tests, tools)."""
        return cls(topic, partition, offset, key, value, tuple((k, v.encode()) for k, v in headers.items()))

    @functools.cached_property
    def headers(self) -> Mapping[str, str]:
        """{name: value} of the headers with a value, decoded as UTF-8 (invalid bytes replaced); the last of
        a repeated name wins."""
        return {name: value.decode("utf-8", "replace") for name, value in self.header_pairs if value is not None}

    def header_count(self, name: str) -> int:
        """How many headers are named `name` (null values included)."""
        return sum(1 for found, _ in self.header_pairs if found == name)

    @property
    def key_text(self) -> str | None:
        """The record key as UTF-8 text (invalid bytes replaced), None for a null key."""
        return self.key.decode("utf-8", "replace") if self.key is not None else None


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


def handled_types(handlers: Mapping[type, Any], foreign_handlers: Mapping[type, Any] = {}) -> frozenset[str]:
    """The event_type names of the event classes keyed in `handlers` and `foreign_handlers`."""
    return frozenset(cls.model_fields["event_type"].default for cls in (*handlers, *foreign_handlers))


def ignored_event_type(header_pairs: Any, ignorable: frozenset[bytes]) -> str | None:
    """The event type of a record that a consumer ignores by its eventType header alone — the
    last one with a value, as `IncomingMessage.headers` reads it — when that is one of
    `ignorable` (UTF-8 names); None for any other record. `header_pairs`: the record's raw
    (name, bytes or None) pairs (an aiokafka ConsumerRecord's `headers`, `IncomingMessage.header_pairs`)
    or a mapping of them. No decoding: a fetched record of another service's event (about half
    of what a service fetches) is recognised before it becomes a message."""
    pairs = header_pairs or ()
    found = None
    for name, value in pairs.items() if isinstance(pairs, Mapping) else pairs:
        if name == Header.EVENT_TYPE and value is not None:
            found = value
    if type(found) is not bytes or found not in ignorable:
        return None
    return found.decode()


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures, retried for as long as they last (a transient failure
    never becomes a dead letter): 0.125–0.25 s, 0.25–0.5 s, … then 5–10 s between attempts
    (equal jitter, shared/retrying.py)."""

    base_delay: float = 0.25
    max_delay: float = 10.0

    @property
    def wait(self):
        """The tenacity wait strategy of this policy."""
        return retrying.equal_jitter(self.base_delay, self.max_delay)

    @property
    def dead_letter_wait(self):
        """Between attempts to keep a dead letter: the same backoff, never under 0.1 s."""
        return self.wait + retrying.wait_fixed(0.1)


@dataclass
class Breaker:
    """Trips when `threshold` events in a row fail in their handler for a reason that is
    neither transient nor a rule refusing the record's content (DomainError) — a bug, not a
    bad record — so a bug that hits every event does not turn a
    whole stream into dead letters. While open, every failing event waits `cool_down`
    seconds and is tried again instead of being dead-lettered (its partition fills the
    consumer's slots and pauses); the first event handled successfully closes it.
    Readiness is false while it is open."""

    threshold: int = 5
    cool_down: float = 15.0
    failures_in_row: int = 0
    opened_at: float | None = None
    last_error: str = ""

    @property
    def open(self) -> bool:
        """Whether the breaker is open (failing events wait and retry instead of being dead-lettered)."""
        return self.opened_at is not None

    def failed(self, error: str) -> bool:
        """Count one handler failure; True when the breaker is (now) open."""
        self.failures_in_row += 1
        self.last_error = error
        if self.opened_at is None and self.failures_in_row >= self.threshold:
            self.opened_at = time.monotonic()
            log.error("breaker open: %d handler failures in a row, the last: %s; failing events now wait and "
                      "retry instead of being dead-lettered", self.failures_in_row, error)
        return self.open

    def succeeded(self) -> None:
        """Count one event handled: closes the breaker (logged if it was open) and resets the count."""
        if self.opened_at is not None:
            log.warning("breaker closed after %.0f s: an event was handled", time.monotonic() - self.opened_at)
        self.failures_in_row, self.opened_at = 0, None


class Outcome(StrEnum):
    """What became of a message, durably (the `outcome` of its log line and metrics)."""

    HANDLED = "handled"
    """Its handler's transaction committed."""
    DUPLICATE = "duplicate"
    """Already handled by this consumer (its inbox row was there): nothing changed."""
    IGNORED = "ignored"
    """Another service's event on a topic this one reads."""
    FOREIGN = "foreign"
    """An event anyone may publish (ORDER_CREATED) that this service leaves to its adopter."""
    DEAD_LETTERED = "dead_lettered"
    """Undecodable, unauthenticated or refused by its handler: kept as a dead letter."""


@dataclass
class EventProcessor:
    """One service's per-message runtime (the inbox consumer name, its handler table): a Kafka
    message in; a committed transaction, or a dead letter, out (the module's invariants). The
    Kafka side — fetching, offsets, the consumer group — is shared/kafka_consumer.py's.

    With `keys`, an event is acted on only when the service that owns its type signed it
    (shared/auth.py); an unsigned or wrongly signed one is a dead letter, except an
    ORDER_CREATED from outside (anyone may start a saga): `foreign_handlers` handle it
    (order_svc adopts it), and a consumer without one skips it (outcome "foreign")."""

    uow: UnitOfWork
    handlers: Mapping[type, Handler]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    keys: KeyRing | None = None
    breaker: Breaker = field(default_factory=Breaker)
    foreign_handlers: Mapping[type, Handler] = field(default_factory=dict)
    group_commit: GroupCommit | None = None
    """When given, an event is first handled in a transaction shared with the events handled at
    the same moment (shared/group_commit.py), and on its own only if that batch rolls back."""

    @property
    def name(self) -> str:
        """The inbox consumer name (the service's name)."""
        return self.uow.consumer

    @functools.cached_property
    def handled_types(self) -> frozenset[str]:
        """The event_type names of every type in `handlers` and `foreign_handlers`."""
        return handled_types(self.handlers, self.foreign_handlers)

    def admit(self, message: IncomingMessage) -> tuple[Envelope, Mapping[type, Handler]] | Outcome:
        """What to do with `message`: its envelope and the handler table to run it with, or an
        Outcome needing no transaction (IGNORED, FOREIGN). EventDecodeError when it is not
        an event; Unauthenticated when it is one its owner did not sign (or not for this saga)."""
        envelope = decode_message(message)
        if self.keys is None:
            return envelope, self.handlers
        event = envelope.event
        same_saga(message, envelope)  # a record keyed by another saga is refused, signed or foreign
        try:
            authenticate(self.keys, message, envelope)
        except Unauthenticated:
            if type(event) in self.foreign_handlers:
                return envelope, self.foreign_handlers
            if type(event) in FOREIGN_STARTS:
                return Outcome.FOREIGN  # anyone may publish one; only its adopter acts on it
            raise
        return (envelope, self.handlers) if type(event) in self.handlers else Outcome.IGNORED

    @functools.cached_property
    def ignorable(self) -> frozenset[bytes]:
        """The eventType header values (UTF-8) of the events this consumer has no handler for."""
        return frozenset(event_type.encode() for event_type in EVENT_TYPES if event_type not in self.handled_types)

    def ignores(self, message: IncomingMessage) -> bool:
        """Whether `message` is, by its eventType header, an event of a type this consumer has no
        handler for (another service's business): `handle` counts it ignored and does nothing."""
        return ignored_event_type(message.header_pairs, self.ignorable) is not None

    def count_ignored(self, event_type: str) -> None:
        """Count one `event_type` record ignored without being handed to `handle` (a consumer's
        fast path for `ignored_event_type`)."""
        self._count(event_type, Outcome.IGNORED)

    async def handle(self, message: IncomingMessage) -> Outcome:
        """Process `message` to a durable outcome and return it: handled, duplicate, ignored,
        foreign or dead_lettered."""
        event_type = message.headers.get(Header.EVENT_TYPE, "")
        if self.ignores(message):
            return self._count(event_type, Outcome.IGNORED)  # another service's business
        started = time.perf_counter()
        label = event_type if event_type in EVENT_TYPES else "unknown"
        try:
            admitted = self.admit(message)
        except EventDecodeError as error:
            await self.dead_letter(message, f"undecodable: {error}")
            return self._count(label, Outcome.DEAD_LETTERED)
        except Unauthenticated as error:
            metrics.UNAUTHENTICATED.labels(self.name, label).inc()
            await self.dead_letter(message, f"unauthenticated: {error}")
            return self._count(label, Outcome.DEAD_LETTERED)
        if isinstance(admitted, Outcome):
            return self._count(label, admitted)
        envelope, handlers = admitted
        event_type = envelope.event.event_type
        if (consumer_span := telemetry.current()) is not None:  # its transaction continues the consumer span
            envelope = dataclasses.replace(envelope, traceparent=consumer_span.traceparent,
                                           tracestate=consumer_span.tracestate)

        batched = self.group_commit is not None
        while True:
            try:
                if batched:  # first in a shared transaction; alone once that batch rolled back
                    batched = False
                    try:
                        tx = await self.group_commit.handle(envelope, handlers)
                    except BatchAborted:
                        continue
                else:
                    tx = await self._alone(envelope, handlers)
            except Exception as error:  # deterministic: retrying would block the partition, unless it is a bug
                log.exception("handler for %s %s failed", event_type, envelope.event_id)
                error_text = f"{type(error).__name__}: {' '.join(str(error).split())}"
                # A DomainError is the record's content refused by a rule (anyone may publish such a
                # record): a dead letter, never counted by the breaker, which is for bugs.
                if not isinstance(error, DomainError) and self.breaker.failed(error_text):
                    metrics.BREAKER_OPEN.labels(self.name).set(1)
                    await asyncio.sleep(self.breaker.cool_down)
                    continue
                await self.dead_letter(message, error_text)
                return self._count(event_type, Outcome.DEAD_LETTERED)
            self.breaker.succeeded()
            metrics.BREAKER_OPEN.labels(self.name).set(0)
            outcome = Outcome.DUPLICATE if tx is not None and tx.duplicate else Outcome.HANDLED
            metrics.HANDLER_SECONDS.labels(self.name, event_type).observe(
                time.perf_counter() - started, exemplar=metrics.trace_exemplar(envelope.traceparent))
            return self._count(event_type, outcome)

    async def _alone(self, envelope: Envelope, handlers: Mapping[type, Handler]) -> Transaction | None:
        """`envelope` in a transaction of its own, tried again through TransientError for as long
        as it lasts (never a dead letter); any other exception passes."""
        event_type = envelope.event.event_type

        def retrying_after(state: retrying.RetryCallState) -> None:
            """Count the retry (saga_retries_total) and log it."""
            metrics.RETRIES.labels(self.name, event_type).inc()
            log.warning("retrying %s %s after %s (attempt %d)", event_type, envelope.event_id,
                        state.outcome.exception(), state.attempt_number)

        async for attempt in retrying.forever(retry_on=TransientError, wait=self.retry.wait, on_retry=retrying_after):
            with attempt:
                return await self.uow.handle(envelope, handlers)

    async def dead_letter(self, message: IncomingMessage, error: str, *, minimal: bool = False) -> None:
        """Record `message` as a dead letter and publish it to events.deadletter through the outbox.

        Retries until the database takes it: a dead letter is the last place an event can be
        kept. A failure that is not transient falls back to a minimal dead letter (where and
        why, nothing of the content; `minimal` asks for one at once); it never escapes."""
        def not_yet(state: retrying.RetryCallState) -> None:
            """Log a transient failure to write the dead letter before the next attempt."""
            failure = state.outcome.exception()
            if isinstance(failure, TransientError):
                log.warning("cannot write dead letter yet (%s); retrying", failure)

        async for attempt in retrying.forever(retry_on=Exception, wait=self.retry.dead_letter_wait, on_retry=not_yet):
            with attempt:
                try:
                    async with self.uow.bare_transaction() as connection:
                        where = dict(consumer=self.name, topic=message.topic, partition=message.partition,
                                     offset=message.offset)
                        if minimal:
                            await dead_letter.insert_minimal(connection, **where, error=error, keys=self.keys)
                        else:
                            await dead_letter.insert(connection, **where, key=message.key, value=message.value,
                                                     headers=message.header_pairs, error=error, keys=self.keys)
                except TransientError:
                    raise
                except Exception as failure:  # the content, or a bug: the next attempt writes a minimal one
                    log.exception("cannot write the dead letter of %s[%s]@%s%s", message.topic, message.partition,
                                  message.offset, "" if minimal else "; writing a minimal one")
                    error = f"{error} (dead letter kept minimal: {type(failure).__name__})" if not minimal else error
                    minimal = True
                    raise
                # inside the attempt: a failed one is swallowed here and the loop tries again
                metrics.DEAD_LETTERS.labels(self.name, message.topic).inc()
                log.error("dead-lettered %s[%s]@%s%s: %s", message.topic, message.partition, message.offset,
                          " (minimal)" if minimal else "", preview(error, dead_letter.ERROR_CHARS))
                return

    async def replay(self, dead_letter_id: uuid.UUID) -> Outcome:
        """Run a dead letter's stored record through the same path again (still deduplicated by the inbox).

        Returns the new outcome; a dead letter that fails again stays where it is.
        KeyError if unknown; EventDecodeError when the stored record is still not an event
        (or only a minimal dead letter was kept); Unauthenticated when it is not signed by its
        owner; TransientError and handler errors pass."""
        async with self.uow.connection() as connection:
            stored = await dead_letter.load_for_replay(connection, dead_letter_id)
        if stored is None:
            raise KeyError(str(dead_letter_id))
        if stored.minimal:
            raise EventDecodeError("only where the record was is kept (a minimal dead letter): nothing to replay")
        message = IncomingMessage(stored.topic, stored.partition, stored.offset, stored.key, stored.value,
                                  tuple(stored.headers))
        admitted = self.admit(message)  # the same checks as a live record: a forged event stays refused
        if isinstance(admitted, Outcome):
            return admitted
        tx = await self.uow.handle(*admitted)
        async with self.uow.connection() as connection:
            await dead_letter.mark_replayed(connection, dead_letter_id)
        return Outcome.DUPLICATE if tx is not None and tx.duplicate else Outcome.HANDLED

    async def replay_all(self, since: datetime | None = None) -> dict[str, Any]:
        """Replay every dead letter of this consumer not yet replayed (and not minimal), failed at
        or after `since`, one after another in the order their records arrived (topic,
        partition, offset: one saga's events in their order). Each goes through `replay`: the
        same checks and inbox as live events. Returns {"replayed": [{"id", "outcome"}], "failed":
        [{"id", "error"}]}; a dead letter that fails again stays. TransientError passes."""
        async with self.uow.connection() as connection:
            pending = await dead_letter.pending(connection, since)
        replayed, failed = [], []
        for ident in pending:
            try:
                replayed.append({"id": str(ident), "outcome": await self.replay(ident)})
            except TransientError:
                raise
            except Exception as error:  # it fails again: it stays a dead letter, the others go on
                failed.append({"id": str(ident), "error": preview(f"{type(error).__name__}: {error}", 300)})
        return {"replayed": replayed, "failed": failed}

    def _count(self, event_type: str, outcome: Outcome) -> Outcome:
        metrics.EVENTS_HANDLED.labels(self.name, event_type, outcome).inc()
        return outcome


_RECORD_IDS = uuid.UUID("6f0e3a52-5a1d-4c0e-9d6a-2f7d4f8e1b30")


def record_event_id(message: IncomingMessage) -> uuid.UUID:
    """The event id of a record that has no `id` header (an ORDER_CREATED published by hand):
    a name-based UUID of its topic, partition and offset, the same at every redelivery."""
    return uuid.uuid5(_RECORD_IDS, f"{message.topic}/{message.partition}/{message.offset}")


def decode_message(message: IncomingMessage) -> Envelope:
    """The envelope of a message: event id from the `id` header, the event from the JSON value.

    A record without an `id` header gets `record_event_id` (signed events always carry one).
    EventDecodeError (one line) when the id header is repeated or not a UUID, the
    eventType header is repeated or contradicts the payload, or the value is not a valid
    event — whatever the parser raised (deep nesting raises RecursionError, not ValueError)."""
    for name in (Header.ID, Header.EVENT_TYPE, Header.SAGA_ID, Header.CAUSATION_ID, Header.SIGNATURE):
        if message.header_count(name) > 1:
            raise EventDecodeError(f"header {name!r} appears {message.header_count(name)} times")
    raw_id = message.headers.get(Header.ID)
    try:
        event_id = uuid.UUID(raw_id) if message.header_count(Header.ID) else record_event_id(message)
    except (TypeError, ValueError):
        raise EventDecodeError(f"header {Header.ID!r} is not an event id: {preview(raw_id, 80)!r}") from None
    if message.value is None:
        raise EventDecodeError("message has no value")
    try:
        event = decode_event(message.value)
    except EventDecodeError:
        raise
    except Exception as error:  # RecursionError, MemoryError…: still only a record that is not an event
        raise EventDecodeError(f"not an event ({type(error).__name__})") from None
    header_type = message.headers.get(Header.EVENT_TYPE)
    if header_type and header_type != event.event_type:
        raise EventDecodeError(f"header eventType {preview(header_type, 80)!r} contradicts payload "
                               f"event_type {event.event_type}")
    return Envelope(event_id=event_id, event=event, traceparent=message.headers.get(Header.TRACEPARENT),
                    tracestate=message.headers.get(Header.TRACESTATE))


FOREIGN_STARTS: frozenset[type] = frozenset({OrderCreated})
"""Events anyone may publish: an ORDER_CREATED from outside starts a saga once order_svc adopts it."""


def same_saga(message: IncomingMessage, envelope: Envelope) -> None:
    """Return when the record's key (and sagaId header, if any) is its event's order id, the
    saga id; Unauthenticated otherwise. A saga's records share its key, so they share a
    partition and one consumer handles them in order: a record under another key would not be."""
    saga_id = envelope.saga_id
    if message.key_text != saga_id:
        raise Unauthenticated(f"the record's key {preview(message.key_text, 60)!r} is not its saga {saga_id}")
    header_saga = message.headers.get(Header.SAGA_ID)
    if header_saga is not None and header_saga != saga_id:
        raise Unauthenticated(f"header sagaId {preview(header_saga, 60)!r} is not its saga {saga_id}")


def authenticate(keys: KeyRing, message: IncomingMessage, envelope: Envelope) -> None:
    """Return when `message` is its event's owner's signed event for the saga its key names;
    Unauthenticated (one line) otherwise: a key or sagaId header naming another saga, no
    signature, or one that is not the owner's or does not verify."""
    same_saga(message, envelope)
    saga_id = envelope.saga_id
    keys.authenticate(
        OWNERS[envelope.event.aggregate_type],
        message.headers.get(Header.SIGNATURE),
        event_id=str(envelope.event_id),
        event_type=envelope.event.event_type,
        saga_id=saga_id,
        causation_id=message.headers.get(Header.CAUSATION_ID, ""),
        payload=json.loads(message.value),
    )
