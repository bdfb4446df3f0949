"""The unit of work: one local PostgreSQL transaction per handled event or request.

    async with uow.processing(envelope) as tx:      # an event from Kafka
        if not tx.duplicate:
            await handler(envelope.event, tx)       # business SQL on tx.connection, tx.emit(...)

    async with uow.starting(saga_id) as tx:         # an HTTP request that starts a saga
        ...

Invariants:
  * Everything inside one block — the inbox row, the business rows, the outbox rows —
    commits together on clean exit and rolls back together on any exception.
  * `processing` takes the saga's lock (a transaction-scoped advisory lock on the saga
    id, SAGA_LOCK_CLASS) and inserts the inbox row (consumer, event id) first, in one
    statement. Every handler decides under its saga's lock, so two deliveries of one
    saga's events never decide side by side, whichever instance got them. If the event
    was already handled by this consumer, `tx.duplicate` is True, the handler must not
    run, and `tx.emit` refuses: a redelivery changes nothing (I4). A concurrent
    redelivery waits on the lock and then sees the duplicate.
  * Each `tx.emit(event)` writes one outbox row: a new uuid4 id (the event id), the
    event's aggregate type, aggregate_id = saga_id = the order id, the JSON payload,
    causation_id = the handled event's id ('' when a saga starts), and a traceparent
    that is a child of the incoming one (a new trace when a saga starts or the
    incoming header is malformed) with the incoming tracestate. With tracing on
    (shared/telemetry.py) each transaction is a span, and each row's traceparent is
    the context of a recorded producer span under it. Emitting an event of another
    saga is refused.
  * Isolation is READ COMMITTED: handlers take the row locks they need (SELECT ... FOR
    UPDATE in a fixed order, or conditional UPDATEs) instead of relying on SERIALIZABLE,
    so a conflict waits rather than aborts. Failures worth retrying (serialization
    failure, deadlock, lost/refused connection, lock timeout, pool timeout, a cached
    statement invalidated by a migration) surface as
    `TransientError` with nothing committed; every other exception passes unchanged.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.auth import KeyRing
from shared.errors import TransientError
from shared.events import Event, encode_event
from shared import telemetry
from shared.topics import topic_for
from shared.tracing import TraceHeaders

__all__ = [
    "Envelope", "Transaction", "UnitOfWork", "TransientError", "Handler", "create_pool", "write_outbox",
    "OUTBOX_PAYLOAD_LIMIT", "OutboxRowTooLarge",
]

OUTBOX_PAYLOAD_LIMIT = 256 * 1024
"""Bytes of JSON an outbox row's payload may hold. Connect's producer refuses a record over
`max.request.size` (1 MiB by default) and the broker one over `message.max.bytes` (1 MiB); a row
Connect cannot publish fails its connector and holds back every later row of that database, so a
row is refused when it is written instead, with a quarter of the limit as the bound (Connect's
JSON of the same payload is never longer than Python's, which escapes every non-ASCII character)."""


class OutboxRowTooLarge(ValueError):
    """An outbox payload over OUTBOX_PAYLOAD_LIMIT bytes: deterministic, never retried."""


Handler = Callable[[Any, "Transaction"], Awaitable[None]]
"""A plain async function (event, tx) -> None."""

_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.TransactionRollbackError,  # 40xxx: serialization failure, deadlock
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.exceptions.PostgresConnectionError,  # 08xxx, and a connection lost mid-query
    asyncpg.exceptions.OperatorInterventionError,  # 57xxx: admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53xxx: too many connections, out of memory
    asyncpg.exceptions.InvalidCachedStatementError,  # a migration changed a type a prepared statement used:
    #                                                  asyncpg drops the statement, and the retry prepares it anew
    ConnectionError,
    OSError,
    TimeoutError,
)
# A connection the server closed under us (a restart, a terminated backend) can also surface as
# asyncpg's InterfaceError ("the underlying connection is closed", "released back to the pool"):
# transient too (see _lost). If what got lost was the answer to a COMMIT, the retry finds its
# inbox row (or its Idempotency-Key) and is a duplicate. An InterfaceError on a connection that is
# still open is a misuse: it passes as is.

SAGA_LOCK_CLASS = 7_400_512
"""The first key of the saga locks (pg_advisory_xact_lock(int, int)); the second is the saga id's
hash. Two-key advisory locks never meet the one-key lock of shared/migrations.py, and two sagas
sharing a hash only wait for each other."""

# The saga's lock, then the inbox row, in one round trip. The lock is taken while the statement
# runs; the handler's statements come after it, each with a snapshot of its own (READ COMMITTED),
# so they see whatever the lock's previous holder committed.
_INSERT_INBOX = """
WITH locked AS (SELECT pg_advisory_xact_lock($5, hashtext($4)))
INSERT INTO inbox (consumer, event_id, event_type, saga_id)
SELECT $1, $2, $3, $4 FROM locked
ON CONFLICT (consumer, event_id) DO NOTHING
RETURNING event_id
"""

# Every saga of the batch locked (in saga id order), then one inbox row per event.
_INSERT_INBOX_MANY = """
WITH locked AS (
    SELECT count(pg_advisory_xact_lock($5, hashtext(sagas.saga_id))) AS sagas
    FROM (SELECT DISTINCT saga_id FROM unnest($4::text[]) AS batch (saga_id) ORDER BY saga_id) AS sagas
)
INSERT INTO inbox (consumer, event_id, event_type, saga_id)
SELECT $1, delivered.event_id, delivered.event_type, delivered.saga_id
FROM locked, unnest($2::uuid[], $3::text[], $4::text[]) AS delivered (event_id, event_type, saga_id)
ON CONFLICT (consumer, event_id) DO NOTHING
RETURNING event_id
"""

_INSERT_OUTBOX = """
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, saga_id, causation_id, traceparent, signature,
                    tracestate)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)
"""


@dataclass(frozen=True)
class Envelope:
    """An incoming event as a consumer sees it: the event id (the message's `id`
    header), the decoded event, and the trace context its handling continues: the
    message's traceparent and tracestate headers (may be None or malformed), or with
    tracing on the consumer span's (shared/consumer.py). The saga id is the event's order id."""

    event_id: uuid.UUID
    event: Event
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def saga_id(self) -> str:
        """The saga's id: the event's order id, as text."""
        return str(self.event.order_id)

    @property
    def trace(self) -> TraceHeaders:
        """The received traceparent and tracestate as TraceHeaders (missing ones "")."""
        return TraceHeaders.received(self.traceparent, self.tracestate)


@dataclass
class Transaction:
    """One open unit of work: run SQL on `connection`, emit events with `emit`."""

    connection: asyncpg.Connection
    saga_id: str
    causation_id: str
    traceparent: str
    """The trace context every event emitted in this transaction descends from (with tracing
    on, each event's own producer span is a child of it); a handler may set it."""
    duplicate: bool = False
    """True when the handled event was already processed: do nothing."""
    keys: KeyRing | None = None
    """Signs each emitted event (shared/auth.py); None signs nothing, and consumers refuse it."""
    tracestate: str = ""
    """The tracestate that goes with `traceparent`."""
    emitted: list[tuple[uuid.UUID, Event]] = field(default_factory=list)
    """(event id, event) of each emitted event, in order."""

    outbox: list[tuple] = field(default_factory=list)
    """Outbox rows emitted and not yet written: `flush` writes them, in order, before the commit."""

    async def emit(self, event: Event) -> uuid.UUID:
        """Add `event` to this transaction's outbox rows and return its new event id. The row is
        checked and signed now (OutboxRowTooLarge, ValueError as `outbox_row` says) and written
        with the others by `flush`, before the commit, in the order emitted."""
        if self.duplicate:
            raise RuntimeError("a duplicate delivery must not emit events")
        if str(event.order_id) != self.saga_id:
            raise ValueError(f"{event.event_type} of order {event.order_id} emitted in saga {self.saga_id}")
        trace = telemetry.created(TraceHeaders(self.traceparent, self.tracestate),
                                  topic=topic_for(event.aggregate_type), event_type=event.event_type,
                                  saga_id=self.saga_id)
        row = outbox_row(
            aggregate_type=event.aggregate_type,
            event_type=event.event_type,
            payload=encode_event(event),
            saga_id=self.saga_id,
            causation_id=self.causation_id,
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
            keys=self.keys,
        )
        self.outbox.append(row)
        self.emitted.append((row[0], event))
        return row[0]

    async def flush(self) -> None:
        """Write the outbox rows emitted so far (one pipelined statement) and forget them."""
        rows, self.outbox = self.outbox, []
        if rows:
            with telemetry.step("outbox write", attributes={"saga.outbox.rows": len(rows)}):
                await write_outbox_rows(self.connection, rows)


async def write_outbox_rows(connection: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    """Insert `rows` (each an `outbox_row`) in their order, in one pipelined round trip."""
    if len(rows) == 1:
        await connection.execute(_INSERT_OUTBOX, *rows[0])
    elif rows:
        await connection.executemany(_INSERT_OUTBOX, rows)


def outbox_row(
    *,
    aggregate_type: str,
    event_type: str,
    payload: Mapping[str, Any],
    saga_id: str,
    causation_id: str,
    traceparent: str,
    keys: KeyRing | None = None,
    tracestate: str = "",
) -> tuple:
    """One outbox row's values in `_INSERT_OUTBOX`'s order, under a new event id (its first
    value), signed with `keys` (shared/auth.py; unsigned without). `tracestate` is not signed,
    as `traceparent` is not: both are the trace's, not the event's.

    OutboxRowTooLarge when the payload's JSON is over OUTBOX_PAYLOAD_LIMIT bytes; ValueError
    when it holds an empty array or object (the router would drop it)."""
    event_id = uuid.uuid4()
    _refuse_empty_containers(payload)
    document = json.dumps(payload, separators=(",", ":"))
    if len(document) > OUTBOX_PAYLOAD_LIMIT:
        raise OutboxRowTooLarge(
            f"{event_type} payload is {len(document)} bytes of JSON; an outbox row holds at most {OUTBOX_PAYLOAD_LIMIT}"
        )
    signature = keys.sign(event_id=str(event_id), event_type=event_type, saga_id=saga_id,
                          causation_id=causation_id, payload=payload) if keys is not None else ""
    return (event_id, aggregate_type, saga_id, event_type, document, saga_id, causation_id, traceparent, signature,
            tracestate)


async def write_outbox(
    connection: asyncpg.Connection,
    *,
    aggregate_type: str,
    event_type: str,
    payload: Mapping[str, Any],
    saga_id: str,
    causation_id: str,
    traceparent: str,
    keys: KeyRing | None = None,
) -> uuid.UUID:
    """Insert one outbox row (key = aggregate_id = saga_id) now and return its new id. The
    caller owns the transaction; `Transaction.emit` is the way for catalog events. Errors as
    `outbox_row`."""
    row = outbox_row(aggregate_type=aggregate_type, event_type=event_type, payload=payload, saga_id=saga_id,
                     causation_id=causation_id, traceparent=traceparent, keys=keys)
    await connection.execute(_INSERT_OUTBOX, *row)
    return row[0]


def _refuse_empty_containers(value: Any, where: str = "payload") -> None:
    """ValueError for an empty array or object anywhere in `value`: Debezium's EventRouter,
    expanding the payload (`table.expand.json.payload`), infers no schema for one and drops
    the field, so the published event would differ from the row, and its signature fail."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{where} is an empty object, which the outbox router drops")
        for key, item in value.items():
            _refuse_empty_containers(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{where} is an empty array, which the outbox router drops")
        for index, item in enumerate(value):
            _refuse_empty_containers(item, f"{where}[{index}]")


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool, beyond the rollback of an open
    transaction that asyncpg always does: nothing. asyncpg's default reset is one more round
    trip per transaction (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL); our code never
    changes session state (only transaction-scoped locks and settings), so there is nothing to undo."""


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool whose connections are not reset between uses (see `_keep_session`)."""
    return await asyncpg.create_pool(dsn, reset=_keep_session, **options)


class UnitOfWork:
    """Transactions over `pool` for the consumer named `consumer` (the service name)."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, keys: KeyRing | None = None,
                 acquire_timeout: float | None = None) -> None:
        self.pool = pool
        self.consumer = consumer
        self.keys = keys
        """Signs every event emitted in these transactions (None: unsigned)."""
        self.acquire_timeout = acquire_timeout
        """The most seconds `connection` and `bare_transaction` wait for a pooled connection
        (connecting a new one included); past it they raise TransientError. None: no limit."""

    @classmethod
    async def connect(cls, dsn: str, consumer: str, *, min_size: int = 1, max_size: int = 10,
                      keys: KeyRing | None = None) -> UnitOfWork:
        """A unit of work over a new pool to `dsn`; `close()` it when done."""
        try:
            pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
        except _TRANSIENT as error:
            raise TransientError(_describe(error)) from error
        return cls(pool, consumer, keys)

    async def close(self) -> None:
        """Close the pool (waits for the connections in use to be released)."""
        await self.pool.close()

    @asynccontextmanager
    async def processing(self, envelope: Envelope) -> AsyncIterator[Transaction]:
        """A transaction handling `envelope`, its inbox row already written; the events emitted
        in it are written to the outbox on clean exit, before the commit."""
        async with telemetry.span(f"handle {envelope.event.event_type}", envelope.trace,
                                  attributes=_span_attributes(envelope)) as trace, \
                self.bare_transaction() as connection:
            inserted = await connection.fetchval(
                _INSERT_INBOX, self.consumer, envelope.event_id, envelope.event.event_type, envelope.saga_id,
                SAGA_LOCK_CLASS,
            )
            tx = self._transaction(connection, envelope, trace, duplicate=inserted is None)
            yield tx
            await tx.flush()

    @asynccontextmanager
    async def starting(self, saga_id: str | uuid.UUID, traceparent: str | None = None) -> AsyncIterator[Transaction]:
        """A transaction started by a request rather than an event: no inbox row, empty
        causation id, and a new trace (or a child of the caller's valid `traceparent`; with
        tracing on, a child of the current span, the request's, if there is one)."""
        parent = telemetry.current() or TraceHeaders.received(traceparent, None)
        async with telemetry.span("start saga", parent, attributes={"saga.id": str(saga_id)}) as trace, \
                self.bare_transaction() as connection:
            tx = Transaction(
                connection=connection,
                saga_id=str(saga_id),
                causation_id="",
                traceparent=trace.traceparent,
                tracestate=trace.tracestate,
                keys=self.keys,
            )
            yield tx
            await tx.flush()

    def _transaction(self, connection: asyncpg.Connection, envelope: Envelope, trace: TraceHeaders, *,
                     duplicate: bool) -> Transaction:
        return Transaction(
            connection=connection,
            saga_id=envelope.saga_id,
            causation_id=str(envelope.event_id),
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
            duplicate=duplicate,
            keys=self.keys,
        )

    async def handle(self, envelope: Envelope, handlers: Mapping[type, Handler]) -> Transaction | None:
        """Run the handler for `envelope.event` inside `processing`, skipping it for a
        duplicate. An event type without a handler opens no transaction and records
        nothing; then None is returned, else the committed transaction."""
        handler = handlers.get(type(envelope.event))
        if handler is None:
            return None
        async with self.processing(envelope) as tx:
            if not tx.duplicate:
                await handler(envelope.event, tx)
        return tx

    async def handle_batch(
        self, batch: Sequence[tuple[Envelope, Mapping[type, Handler]]]
    ) -> list[Transaction | None]:
        """Handle several events in ONE transaction, as if each had been `handle`d on its own,
        one after another in the order given: one inbox row each (written by one statement),
        each handler on the same connection, then every emitted outbox row (one pipelined
        statement), then one commit. Returns what `handle` would have, per event, in order.

        All or nothing: any exception rolls back the whole batch and passes (TransientError as
        `bare_transaction` says); the caller then handles the events one by one to give each
        its own outcome. Events of the same saga must not share a batch unless the caller
        accepts their running in this order in one transaction (shared/group_commit.py never
        puts two of one saga in a batch). A second record of the same event id in the batch is
        its duplicate, as a redelivery would be."""
        work = [(index, envelope, handler) for index, (envelope, handlers) in enumerate(batch)
                if (handler := handlers.get(type(envelope.event))) is not None]
        results: list[Transaction | None] = [None] * len(batch)
        if not work:
            return results
        async with telemetry.batch("group commit", [envelope.trace for _, envelope, _ in work],
                                   attributes={"saga.batch.size": len(work)}) as batch_trace, \
                self.bare_transaction() as connection:
            rows = await connection.fetch(
                _INSERT_INBOX_MANY, self.consumer,
                [envelope.event_id for _, envelope, _ in work],
                [envelope.event.event_type for _, envelope, _ in work],
                [envelope.saga_id for _, envelope, _ in work],
                SAGA_LOCK_CLASS,
            )
            first_delivery = {row[0] for row in rows}
            outbox: list[tuple] = []
            for index, envelope, handler in work:
                with telemetry.span(f"handle {envelope.event.event_type}", envelope.trace,
                                    attributes=_span_attributes(envelope), links=[batch_trace]) as trace:
                    tx = self._transaction(connection, envelope, trace,
                                           duplicate=envelope.event_id not in first_delivery)
                    first_delivery.discard(envelope.event_id)
                    if not tx.duplicate:
                        await handler(envelope.event, tx)
                        outbox.extend(tx.outbox)
                        tx.outbox = []
                results[index] = tx
            if outbox:
                with telemetry.step("outbox write", attributes={"saga.outbox.rows": len(outbox)}):
                    await write_outbox_rows(connection, outbox)
        return results

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection without an explicit transaction, for reads and
        single-statement writes (seeding). Transient failures become TransientError."""
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as connection:
                try:
                    yield connection
                except asyncpg.InterfaceError as error:
                    if not _lost(connection):
                        raise
                    raise TransientError(_describe(error)) from error
        except _TRANSIENT as error:
            raise TransientError(_describe(error)) from error

    @asynccontextmanager
    async def bare_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain transaction (READ COMMITTED) with neither inbox row nor saga, e.g. for
        recording a dead letter together with its outbox row. Commits on clean exit,
        rolls back on exception; transient failures become TransientError."""
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as connection:
                try:
                    async with connection.transaction(isolation="read_committed"):
                        yield connection
                except asyncpg.InterfaceError as error:
                    if not _lost(connection):
                        raise
                    raise TransientError(_describe(error)) from error
        except _TRANSIENT as error:
            raise TransientError(_describe(error)) from error


def _span_attributes(envelope: Envelope) -> dict[str, str]:
    return {"saga.id": envelope.saga_id, "saga.event_type": envelope.event.event_type,
            "messaging.message.id": str(envelope.event_id)}


def _lost(connection: asyncpg.Connection) -> bool:
    """Whether the server closed `connection` under us. The pool takes a lost connection back at
    once, so asking the pooled proxy itself fails then: that, too, means lost."""
    try:
        return connection.is_closed()
    except asyncpg.InterfaceError:
        return True


def _describe(error: BaseException) -> str:
    detail = " ".join(str(error).split())
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
