"""Baseline (c): a polling outbox relay, the usual alternative to CDC, written with asyncpg and aiokafka.

One loop per service database, each in its own transaction per batch:

    SELECT … FROM outbox o
    WHERE o.created_at >= $since AND NOT EXISTS (already published)
    ORDER BY o.created_at LIMIT $batch
    FOR UPDATE OF o SKIP LOCKED          -- several relays may run side by side
    → produce every row, wait for the broker's acks
    → INSERT their ids INTO outbox_relay_published; COMMIT

and when a poll finds nothing it sleeps `poll_interval` (10 ms by default) before the
next. It produces the same records as Debezium's EventRouter: topic
events.<aggregate_type>, key aggregate_id (Kafka's default partitioner, so the same
partition), headers id / eventType / sagaId / causationId / traceparent, the payload
as compact JSON.

The relay needs to remember what it published, and the service's outbox has no column
for it: it keeps its own table, `outbox_relay_published`, created in each service
database (as the service's role, which owns the outbox) when the relay starts and
dropped when it stops — the only thing the benchmark ever writes to a service database,
and only with `--compare`. The published marker is written after the broker acked:
a crash in between publishes a row twice, never zero times (the inbox dedupes).
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from saga_cli.stack.config import StackSettings

DATABASES = ("orders", "inventory", "payments")

_CREATE = """
CREATE TABLE IF NOT EXISTS outbox_relay_published (
    id uuid PRIMARY KEY,
    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
_DROP = "DROP TABLE IF EXISTS outbox_relay_published"
_CLAIM = """
SELECT o.id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload::text AS payload,
       o.saga_id, o.causation_id, o.traceparent
FROM outbox o
WHERE o.created_at >= $1
  AND NOT EXISTS (SELECT 1 FROM outbox_relay_published p WHERE p.id = o.id)
ORDER BY o.created_at
LIMIT $2
FOR UPDATE OF o SKIP LOCKED
"""
_MARK = "INSERT INTO outbox_relay_published (id) SELECT unnest($1::uuid[])"


@dataclass
class RelayStats:
    published: int = 0
    polls: int = 0
    empty_polls: int = 0
    by_database: dict[str, int] = field(default_factory=dict)


def producer_for(bootstrap: str, linger_ms: int = 0) -> AIOKafkaProducer:
    """A producer like Connect's: acks=all, idempotent, records keyed by the order id."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)


def record_of(row) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
    """(topic, key, value, headers) exactly as EventRouter would publish the outbox row."""
    headers = [
        ("id", str(row["id"]).encode()),
        ("eventType", row["event_type"].encode()),
        ("sagaId", row["saga_id"].encode()),
        ("causationId", row["causation_id"].encode()),
        ("traceparent", row["traceparent"].encode()),
    ]
    value = json.dumps(json.loads(row["payload"]), separators=(",", ":")).encode()
    return f"events.{row['aggregate_type']}", row["aggregate_id"].encode(), value, headers


class PollingRelay:
    """Publishes every outbox row created at or after `since` in the service databases, until stopped."""

    def __init__(self, settings: StackSettings, since: datetime, *, databases=DATABASES,
                 poll_interval: float = 0.010, batch: int = 500) -> None:
        self.settings = settings
        self.since = since
        self.databases = databases
        self.poll_interval = poll_interval
        self.batch = batch
        self.stats = RelayStats()
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task] = []
        self._connections: list[asyncpg.Connection] = []
        self._stopping = asyncio.Event()
        self._last_publish = time.monotonic()

    async def start(self) -> None:
        self._producer = producer_for(self.settings.kafka_bootstrap)
        await self._producer.start()
        for database in self.databases:
            connection = await asyncpg.connect(self.settings.service_dsn(database))
            await connection.execute(_CREATE)
            self._connections.append(connection)
            self._tasks.append(asyncio.create_task(self._loop(database, connection)))

    async def idle_for(self, seconds: float) -> None:
        """Return once nothing was published for `seconds` in a row."""
        while time.monotonic() - self._last_publish < seconds:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in self._connections:
            try:
                await connection.execute(_DROP)
            finally:
                await connection.close()
        if self._producer is not None:
            await self._producer.stop()

    async def _loop(self, database: str, connection: asyncpg.Connection) -> None:
        claim = await connection.prepare(_CLAIM)
        while not self._stopping.is_set():
            published = await self._once(connection, claim)
            self.stats.polls += 1
            if published:
                self.stats.published += published
                self.stats.by_database[database] = self.stats.by_database.get(database, 0) + published
                self._last_publish = time.monotonic()
            else:
                self.stats.empty_polls += 1
                await asyncio.sleep(self.poll_interval)

    async def _once(self, connection: asyncpg.Connection, claim) -> int:
        async with connection.transaction():
            rows = await claim.fetch(self.since, self.batch)
            if not rows:
                return 0
            sent = []
            for row in rows:
                topic, key, value, headers = record_of(row)
                sent.append(await self._producer.send(topic, value, key=key, headers=headers))
            await asyncio.gather(*sent)
            await connection.execute(_MARK, [row["id"] for row in rows])
        return len(rows)
