"""Latencies of finished sagas, read after a run from the services' databases (read-only) and the topics.

End to end: the order's `created_at` in the orders database (its transaction's start,
a millisecond or so before the commit) → the `at` of the history row that made it
CONFIRMED or CANCELLED (clock_timestamp() inside the transaction that committed it).

Per hop, for every event of the sagas:
  CDC      outbox.created_at (clock_timestamp() of the row's insert, just before its
           transaction commits) → the record's timestamp on Kafka. The records carry
           CreateTime; for Debezium's EventRouter that is the connector's own event
           time (when it read the change from the WAL), for the relay and the direct
           publisher the time the producer was handed the record.
  consume  the record's timestamp → inbox.processed_at of each consumer that handled it
           (clock_timestamp() of the inbox insert, the first statement of the
           consumer's transaction; its handler and commit follow within milliseconds).
  hop      outbox.created_at → inbox.processed_at: one event from the emitting
           transaction to the handling one (CDC + consume).
All clocks are this machine's one clock (PostgreSQL, the JVMs, Python).
"""
from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from saga_cli.benchmark.invariants import TERMINAL, Message, connect_read_only
from saga_cli.stack.config import StackSettings

DATABASES = ("orders", "inventory", "payments")

_ORDERS = """
SELECT o.order_id, o.status, o.reason, o.created_at,
       (SELECT min(h.at) FROM order_history h
        WHERE h.order_id = o.order_id AND h.status IN ('CONFIRMED', 'CANCELLED')) AS terminal_at
FROM orders o WHERE o.order_id = ANY($1::uuid[])
"""
_OUTBOX = """
SELECT id, event_type, saga_id, created_at FROM outbox WHERE created_at >= $1 AND saga_id = ANY($2::text[])
"""
_INBOX = """
SELECT consumer, event_id, event_type, saga_id, processed_at FROM inbox
WHERE processed_at >= $1 AND saga_id = ANY($2::text[])
"""
_TERMINAL_COUNT = """
SELECT count(*) FROM orders
WHERE created_at >= $1 AND customer_id = ANY($2::text[]) AND status IN ('CONFIRMED', 'CANCELLED')
"""


@dataclass(frozen=True)
class SagaTiming:
    """One saga's start and end as the orders database recorded them."""

    order_id: str
    status: str
    reason: str | None
    created_at: float
    """Epoch seconds."""
    terminal_at: float | None

    @property
    def e2e_ms(self) -> float | None:
        """Milliseconds from `created_at` to `terminal_at`; None while the saga is not terminal."""
        return None if self.terminal_at is None else (self.terminal_at - self.created_at) * 1000


@dataclass
class HopSamples:
    """Milliseconds per hop kind, and by event type."""

    cdc: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)
    cdc_by_type: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    consume_by_consumer: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unpublished: int = 0
    """Outbox rows of the sagas without a record on the topics."""


async def read_timings(settings: StackSettings, order_ids: Collection[str]) -> dict[str, SagaTiming]:
    """{order id: SagaTiming} of the orders `order_ids` found in the orders database (`terminal_at` None
    unless CONFIRMED or CANCELLED)."""
    ids = [uuid.UUID(o) for o in order_ids]
    connection = await connect_read_only(settings, "orders")
    try:
        rows = await connection.fetch(_ORDERS, ids)
    finally:
        await connection.close()
    return {
        str(r["order_id"]): SagaTiming(str(r["order_id"]), r["status"], r["reason"], r["created_at"].timestamp(),
                                       r["terminal_at"].timestamp() if r["terminal_at"] and r["status"] in TERMINAL else None)
        for r in rows
    }


async def read_hops(settings: StackSettings, keys: Collection[str], since: datetime,
                    messages: Iterable[Message]) -> HopSamples:
    """CDC, consume and whole-hop latencies of every event of the sagas keyed `keys`."""
    first_seen: dict[str, int] = {}
    for message in messages:
        if message.event_id:
            seen = first_seen.get(message.event_id)
            if seen is None or message.timestamp_ms < seen:
                first_seen[message.event_id] = message.timestamp_ms
    keys = sorted(keys)
    outbox, inbox = await asyncio.gather(_read_all(settings, _OUTBOX, since, keys), _read_all(settings, _INBOX, since, keys))
    samples = HopSamples()
    emitted: dict[str, float] = {}
    for row in outbox:
        event_id = str(row["id"])
        created = row["created_at"].timestamp() * 1000
        emitted[event_id] = created
        on_kafka = first_seen.get(event_id)
        if on_kafka is None:
            samples.unpublished += 1
            continue
        samples.cdc.append(on_kafka - created)
        samples.cdc_by_type[row["event_type"]].append(on_kafka - created)
    for row in inbox:
        event_id = str(row["event_id"])
        processed = row["processed_at"].timestamp() * 1000
        on_kafka = first_seen.get(event_id)
        if on_kafka is not None:
            samples.consume.append(processed - on_kafka)
            samples.consume_by_consumer[row["consumer"]].append(processed - on_kafka)
        if event_id in emitted:
            samples.hop.append(processed - emitted[event_id])
    return samples


async def _read_all(settings: StackSettings, query: str, since: datetime, keys: list[str]) -> list:
    async def one(database: str) -> list:
        """The rows `query` returns in `database` (read-only)."""
        connection = await connect_read_only(settings, database)
        try:
            return await connection.fetch(query, since, keys)
        finally:
            await connection.close()

    rows: list = []
    for part in await asyncio.gather(*(one(database) for database in DATABASES)):
        rows += part
    return rows


class TerminalCounter:
    """How many of the run's orders are terminal, counted in the orders database (read-only), for the progress line."""

    def __init__(self, settings: StackSettings, customers: Collection[str], since: datetime):
        self.settings = settings
        self.customers = list(customers)
        self.since = since
        self._connection = None
        self._lock = asyncio.Lock()

    async def count(self) -> int:
        """How many orders of `customers` placed since `since` are CONFIRMED or CANCELLED now."""
        async with self._lock:  # the progress line and the drain share the connection
            if self._connection is None:
                self._connection = await connect_read_only(self.settings, "orders")
            return await self._connection.fetchval(_TERMINAL_COUNT, self.since, self.customers)

    async def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
