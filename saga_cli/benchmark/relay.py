"""Baseline (c): a polling outbox relay, the usual alternative to CDC, written with asyncpg and aiokafka.

One loop per service database, each in its own transaction per batch:

    SELECT … FROM outbox_relay_pending p JOIN outbox o USING (id)
    ORDER BY p.seq LIMIT $batch
    FOR UPDATE OF p SKIP LOCKED          -- several relays may run side by side
    → produce every row, wait for the broker's acks
    → DELETE the published ids FROM outbox_relay_pending; COMMIT

and when a poll finds nothing it sleeps `poll_interval` (10 ms by default) before the
next. It produces the same records as Debezium's EventRouter: topic
events.<aggregate_type>, key aggregate_id (Kafka's default partitioner, so the same
partition), headers id / eventType / sagaId / causationId / traceparent / signature / tracestate
(the emitter's signature, shared/auth.py: without it every consumer would dead-letter
what the relay publishes as unauthenticated), the payload as compact JSON.

A polling relay needs a queue of what is not published yet, and the services' outbox
is append-only with no such column (Debezium reads the WAL instead). So, for the run
only, the relay installs in each service database (as the service's role, which owns
the outbox) a table `outbox_relay_pending` and an AFTER INSERT trigger on `outbox`
that enqueues each new row's id in the inserting transaction — the queue a relay-based
design would keep in the outbox itself (a `published` flag, or deleting published
rows). That costs every emitting transaction one more insert, as such a design does;
it keeps each poll proportional to what is pending, not to what was ever written.
Trigger and table are dropped when the relay stops. The pending row is deleted only
after the broker acked: a crash in between publishes a row twice, never zero times
(the inbox dedupes). With `--compare` only; the only other rows the benchmark writes in a
service database are the transport measurement's own, in the orders database's outbox
(benchmark/transport.py), also with `--compare` only.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer

from saga_cli.stack.config import StackSettings
from shared.topics import Header

DATABASES = ("orders", "inventory", "payments")

_INSTALL = (
    """CREATE TABLE IF NOT EXISTS outbox_relay_pending (
           seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           id  uuid NOT NULL UNIQUE)""",
    """CREATE OR REPLACE FUNCTION outbox_relay_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO outbox_relay_pending (id) VALUES (NEW.id); RETURN NULL; END $$""",
    "DROP TRIGGER IF EXISTS outbox_relay_enqueue ON outbox",
    """CREATE TRIGGER outbox_relay_enqueue AFTER INSERT ON outbox
       FOR EACH ROW EXECUTE FUNCTION outbox_relay_enqueue()""",
)
_UNINSTALL = (
    "DROP TRIGGER IF EXISTS outbox_relay_enqueue ON outbox",
    "DROP FUNCTION IF EXISTS outbox_relay_enqueue()",
    "DROP TABLE IF EXISTS outbox_relay_pending",
)
_CLAIM = """
SELECT o.id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload::text AS payload,
       o.saga_id, o.causation_id, o.traceparent, o.signature, o.tracestate
FROM outbox_relay_pending p JOIN outbox o ON o.id = p.id
ORDER BY p.seq
LIMIT $1
FOR UPDATE OF p SKIP LOCKED
"""
_DONE = "DELETE FROM outbox_relay_pending WHERE id = ANY($1::uuid[])"


@dataclass
class RelayStats:
    """What the relay did: records published (in all and per database), polls and polls that found nothing."""

    published: int = 0
    polls: int = 0
    empty_polls: int = 0
    by_database: dict[str, int] = field(default_factory=dict)


def producer_for(bootstrap: str, linger_ms: int = 0) -> AIOKafkaProducer:
    """A producer like Connect's: acks=all, idempotent, records keyed by the order id."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)


def record_of(row) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
    """(topic, key, value, headers) exactly as EventRouter would publish the outbox row: `row` maps
    the outbox columns (id, aggregate_type, aggregate_id, event_type, payload as JSON text, saga_id,
    causation_id, traceparent, signature, tracestate) to their values; KeyError when one is missing. The headers
    are those of `table.fields.additional.placement` in connect/outbox-connector.json, in its order."""
    headers = [
        (Header.ID, str(row["id"]).encode()),
        (Header.EVENT_TYPE, row["event_type"].encode()),
        (Header.SAGA_ID, row["saga_id"].encode()),
        (Header.CAUSATION_ID, row["causation_id"].encode()),
        (Header.TRACEPARENT, row["traceparent"].encode()),
        (Header.SIGNATURE, row["signature"].encode()),
        (Header.TRACESTATE, row["tracestate"].encode()),
    ]
    value = json.dumps(json.loads(row["payload"]), separators=(",", ":")).encode()
    return f"events.{row['aggregate_type']}", row["aggregate_id"].encode(), value, headers


class PollingRelay:
    """Publishes every outbox row inserted after `start()` in the service databases, until stopped."""

    def __init__(self, settings: StackSettings, *, databases=DATABASES,
                 poll_interval: float = 0.010, batch: int = 500) -> None:
        self.settings = settings
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
        """Start the producer; in each database install the queue table and trigger (as the service's role)
        and start its polling loop."""
        self._producer = producer_for(self.settings.kafka_bootstrap)
        await self._producer.start()
        for database in self.databases:
            connection = await asyncpg.connect(self.settings.service_dsn(database))
            async with connection.transaction():
                for statement in _INSTALL:
                    await connection.execute(statement)
            self._connections.append(connection)
            self._tasks.append(asyncio.create_task(self._loop(database, connection)))

    async def idle_for(self, seconds: float) -> None:
        """Return once nothing was published for `seconds` in a row."""
        while time.monotonic() - self._last_publish < seconds:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop polling, publish whatever is still pending, then remove the trigger and the queue."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in self._connections:
            claim = await connection.prepare(_CLAIM)
            while published := await self._once(connection, claim):
                self.stats.published += published
        for connection in self._connections:
            try:
                async with connection.transaction():
                    for statement in _UNINSTALL:
                        await connection.execute(statement)
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
            rows = await claim.fetch(self.batch)
            if not rows:
                return 0
            sent = []
            for row in rows:
                topic, key, value, headers = record_of(row)
                sent.append(await self._producer.send(topic, value, key=key, headers=headers))
            await asyncio.gather(*sent)
            await connection.execute(_DONE, [row["id"] for row in rows])
        return len(rows)
