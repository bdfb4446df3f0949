"""The transport alone: commit an outbox row, see it arrive at a consumer — for each way out of the database.

The full saga cannot run with (d), publishing straight after the commit: the services
never produce to Kafka (that is the point of the outbox). So every transport is also
measured on its own, under the same load:

  debezium-default / debezium-tuned / relay   a row committed in the orders database's
                                              outbox (aggregate_type `bench`, so it goes
                                              to `events.bench`, a topic no service
                                              reads), published by the transport
  direct                                      the same row committed, then produced by the
                                              writer itself once the commit returned
                                              (the dual write the outbox exists to avoid;
                                              the floor: nothing can be faster)

Two figures each: latency at a fixed rate (open loop, one row per transaction, commit
returned → the record received by a consumer of this process; plus outbox.created_at →
the record's timestamp, the CDC hop as the saga runs measure it), and throughput:
`burst` rows written by 16 concurrent writers, 20 rows per transaction (so the writers
outrun the transport), divided by the time from the first commit to the last record
received.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from saga_cli.benchmark.relay import producer_for, record_of
from saga_cli.benchmark.stats import summary
from saga_cli.stack.config import StackSettings

TOPIC = "events.bench"
WRITERS = 16

_INSERT = """
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, saga_id, causation_id, traceparent)
VALUES ($1, 'bench', $2, 'BENCH_EVENT', $3::jsonb, $2, '', $4)
RETURNING created_at
"""
_INSERT_MANY = _INSERT.replace("RETURNING created_at", "")
BURST_BATCH = 20
"""Rows per transaction in the burst: enough that the writers outrun every transport, so the burst
measures the transport's throughput rather than the database's commit rate."""


@dataclass
class TransportResult:
    """One transport's figures: rows written at `rate` per second and received, latency and CDC
    summaries in ms, the burst's rows and rows per second (None unless every row arrived)."""

    transport: str
    rate: float
    rows: int = 0
    received: int = 0
    latency_ms: dict = field(default_factory=dict)
    cdc_ms: dict = field(default_factory=dict)
    burst_rows: int = 0
    burst_rows_per_s: float | None = None

    def as_json(self) -> dict:
        """The fields as a JSON-ready dict."""
        return {"transport": self.transport, "rate": self.rate, "rows": self.rows, "received": self.received,
                "latency_ms": self.latency_ms, "cdc_ms": self.cdc_ms, "burst_rows": self.burst_rows,
                "burst_rows_per_s": self.burst_rows_per_s}


class _Receiver:
    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                         fetch_max_wait_ms=100)
        self.arrivals: dict[str, tuple[float, int]] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the consumer at the end of every partition of events.bench and begin receiving."""
        await self.consumer.start()
        partitions = [TopicPartition(TOPIC, p) for p in sorted(self.consumer.partitions_for_topic(TOPIC) or [])]
        if not partitions:
            await self.consumer._client.force_metadata_update()
            partitions = [TopicPartition(TOPIC, p) for p in sorted(self.consumer.partitions_for_topic(TOPIC) or [0])]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self.consumer.position(partition)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for record in records:
                    event_id = next((v.decode() for k, v in record.headers or () if k == "id"), None)
                    if event_id and event_id not in self.arrivals:
                        self.arrivals[event_id] = (now, record.timestamp)

    async def wait_for(self, ids, timeout: float) -> None:
        """Return once every one of `ids` arrived, or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while any(i not in self.arrivals for i in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop receiving and close the consumer."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


async def ensure_topic(bootstrap: str, partitions: int = 3) -> None:
    """Create events.bench with `partitions` partitions (replication factor 1) unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if TOPIC not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def measure(settings: StackSettings, transport: str, rate: float, duration: float, burst: int,
                  drain_timeout: float = 30.0) -> TransportResult:
    """Rows at `rate` for `duration` s, then a burst of `burst` rows, through `transport` (already in place,
    except 'direct', which this function does itself)."""
    direct = transport == "direct"
    result = TransportResult(transport, rate)
    receiver = _Receiver(settings.kafka_bootstrap)
    pool = await asyncpg.create_pool(settings.service_dsn("orders"), min_size=WRITERS, max_size=WRITERS)
    producer = producer_for(settings.kafka_bootstrap) if direct else None
    if producer:
        await producer.start()
    await receiver.start()
    committed: dict[str, tuple[float, float]] = {}  # id → (commit returned, created_at), epoch s

    def new_row() -> tuple:
        """(event id, key, payload JSON, traceparent) of one new outbox row."""
        key = str(uuid.uuid4())
        payload = json.dumps({"event_type": "BENCH_EVENT", "schema_version": 1, "order_id": key,
                              "occurred_at": "2026-01-01T00:00:00+00:00", "customer_id": "bench",
                              "items": [{"sku": "bench-sku", "quantity": 1}], "amount": "12.50", "currency": "EUR"})
        return uuid.uuid4(), key, payload, f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    async def write(count: int = 1) -> None:
        """`count` rows in one transaction; for 'direct', produced once it committed."""
        rows = [new_row() for _ in range(count)]
        async with pool.acquire() as connection:
            async with connection.transaction():
                if count == 1:
                    created = [await connection.fetchval(_INSERT, *rows[0])]
                else:
                    await connection.executemany(_INSERT_MANY, rows)
                    created = None
        now = time.time()
        for index, (event_id, *_rest) in enumerate(rows):
            committed[str(event_id)] = (now, created[index].timestamp() if created else now)
        if producer:
            sent = []
            for event_id, key, payload, traceparent in rows:
                row = {"id": event_id, "aggregate_type": "bench", "aggregate_id": key, "event_type": "BENCH_EVENT",
                       "payload": payload, "saga_id": key, "causation_id": "", "traceparent": traceparent,
                       "signature": ""}  # the column's default: no service reads events.bench
                topic, record_key, value, headers = record_of(row)
                sent.append(await producer.send(topic, value, key=record_key, headers=headers))
            await asyncio.gather(*sent)

    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for index in range(round(rate * duration)):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(write()))
        await asyncio.gather(*tasks)
        paced = list(committed)
        await receiver.wait_for(paced, drain_timeout)
        result.rows = len(paced)
        result.received = sum(1 for i in paced if i in receiver.arrivals)
        result.latency_ms = summary((receiver.arrivals[i][0] - committed[i][0]) * 1000 for i in paced if i in receiver.arrivals)
        result.cdc_ms = summary(receiver.arrivals[i][1] - committed[i][1] * 1000 for i in paced if i in receiver.arrivals)

        if burst:
            before = set(committed)
            batches = [BURST_BATCH] * (burst // BURST_BATCH) + ([burst % BURST_BATCH] if burst % BURST_BATCH else [])

            async def writer() -> None:
                """Write the burst's batches, one transaction each, until none is left."""
                while batches:
                    await write(batches.pop())

            began = time.time()
            await asyncio.gather(*(writer() for _ in range(WRITERS)))
            burst_ids = [i for i in committed if i not in before]
            await receiver.wait_for(burst_ids, drain_timeout)
            arrived = [receiver.arrivals[i][0] for i in burst_ids if i in receiver.arrivals]
            result.burst_rows = len(burst_ids)
            if len(arrived) == len(burst_ids) and arrived:
                result.burst_rows_per_s = round(len(burst_ids) / (max(arrived) - began), 1)
    finally:
        await receiver.stop()
        if producer:
            await producer.stop()
        await pool.close()
    return result
