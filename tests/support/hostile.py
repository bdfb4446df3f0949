"""Hostile records: anything a producer can put on a topic, produced as it is, and what the system must make of it.

    consumers = await Consumers.discover()               # who consumes which topic, from /health
    record = Hostile("events.order", value=b"abc\\0def", key=b"k1")
    await produce(bootstrap, [record])                  # record.offset is set
    found = await until_dead_lettered([record], consumers, timeout=60)

  the record       `Hostile`: topic, key, value and headers as bytes (a header name too), the
                   partition Kafka's default partitioner gives its key (or one chosen for a
                   keyless record)
  its consumers    `Consumers`: who must (`must_look`) and who may (`may_look`) look at a
                   record, and so dead-letter it when it is no event
  producing        `produce` (aiokafka, requests up to 2 MiB); `produce_raw_batch`: one record
                   batch built byte by byte and sent with a bare ProduceRequest, for what
                   aiokafka's producer refuses to send (a header name that is not UTF-8, a
                   record with neither key nor value)
  dead letters     `dead_letters_by_record` (`saga dlq list --json`, by topic/partition/offset),
                   `until_dead_lettered`, `read_record` (e.g. a DEAD_LETTER event itself)
  still standing   `service_pids`, `connector_states`, `assert_standing` (same pids, /health 200,
                   every connector and task RUNNING), `place_in_partition` (an order whose key,
                   the order id, falls in a given partition)

Which consumer looks at a record is found out, not repeated here: the topics each service
consumes are those of the partitions its GET /health says are assigned to it; a consumer
skips a record whose `eventType` header (its last value, as
`shared.consumer.IncomingMessage.headers` reads it) names a known event type it does not
handle (its handler table). docs/contract/events.md (Signatures) lets one service act on a type it
does not handle: order_svc adopts an ORDER_CREATED published from outside (`ADOPTERS`), so whether
it looks at a record claiming that type is allowed either way.
"""
from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.util import calc_crc32c

from inventory_svc.handlers import HANDLERS as INVENTORY_HANDLERS
from order_svc.handlers import HANDLERS as ORDER_HANDLERS
from payment_svc.handlers import HANDLERS as PAYMENT_HANDLERS
from saga_cli.kafka import partition_for_key
from saga_cli.stack.config import REPO_ROOT
from saga_cli.stack.connect import connector_documents
from shared.events import EVENT_TYPES
from tests.support.load import Catalog, Placed, health, place_orders, saga_json, service_url

PARTITIONS = 3
"""Partitions of every event topic (the stack's num.partitions)."""
EVENT_TOPICS = ("events.order", "events.inventory", "events.payment")
MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""The test producer's largest request: a 900 kB record fits; the broker's own limit
(message.max.bytes, 1 MiB by default) is what refuses more."""

HANDLED: dict[str, frozenset[str]] = {
    service: frozenset(cls.model_fields["event_type"].default for cls in handlers)
    for service, handlers in (("order_svc", ORDER_HANDLERS), ("inventory_svc", INVENTORY_HANDLERS),
                              ("payment_svc", PAYMENT_HANDLERS))
}
"""service → the event types its handler table takes."""
ADOPTERS: dict[str, str] = {"ORDER_CREATED": "order_svc"}
"""event type → the service that acts on one published from outside without handling the type
(docs/contract/interfaces.md, Starting a saga from Kafka)."""
SERVICES = tuple(HANDLED)
CONNECTORS = tuple(document["name"] for document in connector_documents(REPO_ROOT / "connect"))

Header = tuple[str | bytes, bytes | None]
"""A header as a producer writes it: its name (bytes when it is not text) and its value."""


@dataclass
class Hostile:
    """One record as produced: every part as bytes, where it landed once produced."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[Header] = field(default_factory=list)
    partition: int = -1
    """The key's partition (Kafka's default partitioner) unless given; keyless: 0 unless given."""
    label: str = ""
    offset: int = -1

    def __post_init__(self) -> None:
        if self.partition < 0:
            self.partition = partition_for_key(self.key, PARTITIONS) if self.key is not None else 0

    @property
    def where(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (names and values)."""
        return (len(self.key or b"") + len(self.value or b"")
                + sum(len(_name_bytes(name)) + len(value or b"") for name, value in self.headers))

    def event_type_values(self) -> list[str]:
        """The non-null values of its `eventType` headers, in order, as the consumer decodes them."""
        return [value.decode("utf-8", "replace") for name, value in self.headers
                if _name_bytes(name) == b"eventType" and value is not None]

    @property
    def header_type(self) -> str:
        """The eventType a consumer reads: the last non-null value ("" without one)."""
        found = self.event_type_values()
        return found[-1] if found else ""

    @property
    def unreadable(self) -> bool:
        """Whether a header name is not UTF-8: the Kafka client cannot parse the record at all."""
        return any(isinstance(name, bytes) and not _is_utf8(name) for name, _ in self.headers)


@dataclass(frozen=True)
class Consumers:
    """topic → the services consuming it, as the running services report it."""

    by_topic: dict[str, frozenset[str]]

    @classmethod
    async def discover(cls) -> Consumers:
        """From each service's GET /health: the topics of the partitions assigned to it."""
        by_topic: dict[str, set[str]] = {}
        async with httpx.AsyncClient(timeout=10) as client:
            for service in SERVICES:
                answer = await client.get(f"{service_url(service)}/health")
                assert answer.status_code == 200, f"{service} is not healthy: {answer.text}"
                for assigned in answer.json()["assigned"]:
                    by_topic.setdefault(assigned.rsplit("/", 1)[0], set()).add(service)
        return cls({topic: frozenset(services) for topic, services in by_topic.items()})

    def of(self, topic: str) -> frozenset[str]:
        return self.by_topic.get(topic, frozenset())

    def must_look(self, record: Hostile) -> set[str]:
        """The consumers that must look at `record` (and so dead-letter it when it is no event).
        A record the Kafka client cannot parse is dead-lettered by every consumer of its topic:
        none can read its eventType to skip it."""
        if record.unreadable:
            return set(self.of(record.topic))
        return self._lookers(record.topic, record.header_type, adopting=False)

    def may_look(self, record: Hostile) -> set[str]:
        """`must_look`, and those that may as well: the adopter of the type it claims, and any
        consumer that one of its repeated eventType headers would let look."""
        if record.unreadable:
            return set(self.of(record.topic))
        return set().union(*(self._lookers(record.topic, value, adopting=True)
                             for value in (record.header_type, *record.event_type_values())))

    def _lookers(self, topic: str, header_type: str, *, adopting: bool) -> set[str]:
        return {service for service in self.of(topic)
                if header_type not in EVENT_TYPES or header_type in HANDLED[service]
                or adopting and ADOPTERS.get(header_type) == service}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _name_bytes(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


def key_in_partition(partition: int) -> str:
    """A fresh uuid whose bytes Kafka's default partitioner puts in `partition`."""
    while True:
        key = str(uuid.uuid4())
        if partition_for_key(key.encode(), PARTITIONS) == partition:
            return key


# --- producing ------------------------------------------------------------------------------

async def produce(bootstrap: str, records: Sequence[Hostile], in_flight: int = 64) -> None:
    """Produce `records` as they are (acks=all), at most `in_flight` at once; sets each offset.
    What aiokafka's producer refuses to send (no key and no value, a header name that is not
    text) goes out as a batch of its own through `produce_raw_batch`."""
    refused = [r for r in records if r.key is None and r.value is None or any(isinstance(n, bytes) for n, _ in r.headers)]
    for record in refused:
        await produce_raw_batch(bootstrap, [record])
    records = [r for r in records if not any(r is other for other in refused)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_REQUEST_BYTES,
                                request_timeout_ms=60_000)
    await producer.start()
    try:
        gate = asyncio.Semaphore(in_flight)

        async def one(record: Hostile) -> None:
            async with gate:
                sent = await producer.send_and_wait(
                    record.topic, record.value, key=record.key, partition=record.partition,
                    headers=[(_name_text(name), value) for name, value in record.headers],
                )
                record.offset = sent.offset

        await asyncio.gather(*(one(record) for record in records))
    finally:
        await producer.stop()


def _name_text(name: str | bytes) -> str:
    if isinstance(name, bytes):
        raise ValueError(f"aiokafka's producer sends only text header names, not {name!r}: use produce_raw_batch")
    return name


async def produce_raw_batch(bootstrap: str, records: Sequence[Hostile]) -> None:
    """Produce `records` (one topic and partition) as ONE record batch that this function builds
    itself, so a header name may be any bytes. Sets each record's offset.

    The batch is built twice, every bytes name written as a stand-in of the same length, "A…"
    in one build and "B…" in the other: the bytes where the builds differ are exactly where
    those names sit. The real names go there, and the batch's CRC (CRC-32C of everything after
    the CRC field) is computed again."""
    topic, partition = records[0].topic, records[0].partition
    assert all((r.topic, r.partition) == (topic, partition) for r in records), "one batch is one partition"
    timestamp = int(time.time() * 1000)
    first, second = _build_batch(records, "A", timestamp), _build_batch(records, "B", timestamp)
    builder = _DefaultRecordBatchBuilderPy
    after_crc = builder.ATTRIBUTES_OFFSET
    differ = [i for i in range(after_crc, len(first)) if first[i] != second[i]]
    real = b"".join(name for record in records for name, _ in record.headers if isinstance(name, bytes))
    assert len(differ) == len(real), "the stand-ins were not found where the names go"
    batch = first
    for at, byte in zip(differ, real):
        batch[at] = byte
    struct.pack_into(">I", batch, builder.CRC_OFFSET, calc_crc32c(bytes(batch[after_crc:])))

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(transactional_id=None, required_acks=-1, timeout=30_000,
                                 topics=[(topic, [(partition, bytes(batch))])])
        response = await client.send(leader, request)
    finally:
        await client.close()
    [(_, [answer])] = response.topics
    error_code, base_offset = answer[1], answer[2]
    assert error_code == 0, f"the broker refused the batch: error code {error_code}"
    for index, record in enumerate(records):
        record.offset = base_offset + index


def _build_batch(records: Sequence[Hostile], stand_in: str, timestamp: int) -> bytearray:
    """The records as one uncompressed v2 record batch, each bytes header name as `stand_in` repeated."""
    builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                           producer_epoch=-1, base_sequence=-1, batch_size=MAX_REQUEST_BYTES)
    for index, record in enumerate(records):
        headers = [(stand_in * len(name) if isinstance(name, bytes) else name, value) for name, value in record.headers]
        assert builder.append(index, timestamp, record.key, record.value, headers) is not None
    return bytearray(builder.build())


# --- reading back ---------------------------------------------------------------------------

async def dead_letters_by_record() -> dict[tuple[str, int, int], list[dict]]:
    """`saga dlq list --json`, grouped by the record each dead letter stands for."""
    found: dict[tuple[str, int, int], list[dict]] = {}
    for letter in await saga_json("dlq", "list"):
        found.setdefault((letter["topic"], letter["partition"], letter["offset"]), []).append(letter)
    return found


async def until_dead_lettered(
    records: Sequence[Hostile], consumers: Consumers, timeout: float, poll: float = 0.3
) -> dict[tuple[str, int, int], list[dict]]:
    """Poll `saga dlq list` until every record is dead-lettered by every consumer that must look
    at it; the listing then. Fails with the first record still missing one."""
    deadline = time.monotonic() + timeout
    while True:
        found = await dead_letters_by_record()
        missing = [r for r in records
                   if not consumers.must_look(r) <= {l["consumer"] for l in found.get(r.where, [])}]
        if not missing:
            return found
        if time.monotonic() > deadline:
            first = missing[0]
            have = sorted(l["consumer"] for l in found.get(first.where, []))
            raise AssertionError(f"{len(missing)} of {len(records)} records not dead-lettered by all their consumers "
                                 f"within {timeout:.0f}s, e.g. {first.label or 'record'} at {first.where}: "
                                 f"dead-lettered by {have}, expected {sorted(consumers.must_look(first))}")
        await asyncio.sleep(poll)


def letters_by_consumer(letters: Iterable[dict]) -> dict[str, list[dict]]:
    by_consumer: dict[str, list[dict]] = {}
    for letter in letters:
        by_consumer.setdefault(letter["consumer"], []).append(letter)
    return by_consumer


async def read_record(bootstrap: str, topic: str, partition: int, offset: int, timeout: float = 30.0):
    """The record at `topic[partition]@offset` (aiokafka's ConsumerRecord)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset == offset:
                    return record
                raise AssertionError(f"{topic}[{partition}] has no record at {offset} (next is {record.offset})")
        raise AssertionError(f"{topic}[{partition}]@{offset} not read within {timeout:.0f}s")
    finally:
        await consumer.stop()


def parse_location(location: str) -> tuple[str, int, int]:
    """"events.deadletter[2]@17" → ("events.deadletter", 2, 17)."""
    topic, rest = location.split("[", 1)
    partition, offset = rest.split("]@", 1)
    return topic, int(partition), int(offset)


# --- still standing -----------------------------------------------------------------------

async def service_pids() -> dict[str, int | None]:
    """service → its pid, as `saga status --json` reports it."""
    status = await saga_json("status")
    return {c["name"]: c.get("pid") for c in status["components"] if c["name"] in SERVICES}


async def connector_states(connect_url: str) -> dict[str, list[str]]:
    """connector → [its state, then each task's], from GET /connectors?expand=status."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{connect_url}/connectors", params={"expand": "status"})
    answer.raise_for_status()
    return {name: [entry["status"]["connector"]["state"], *(task["state"] for task in entry["status"]["tasks"])]
            for name, entry in answer.json().items()}


async def assert_standing(connect_url: str, pids_before: dict[str, int | None]) -> None:
    """Every service still the same process and healthy; every connector and its tasks RUNNING."""
    assert await service_pids() == pids_before, "a service was restarted (or died) while handling the records"
    for service in SERVICES:
        assert await health(service) == 200, f"{service} is not healthy"
    states = await connector_states(connect_url)
    assert set(CONNECTORS) <= set(states), f"connectors missing: {sorted(set(CONNECTORS) - set(states))}"
    not_running = {name: states[name] for name in CONNECTORS if set(states[name]) != {"RUNNING"} or len(states[name]) < 2}
    assert not not_running, f"connectors (connector, tasks…) not RUNNING: {not_running}"


async def place_in_partition(
    catalog: Catalog, partition: int, flow: str = "happy", attempts: int = 40
) -> tuple[Placed, list[Placed]]:
    """Place `flow` orders until one's id (its key) falls in `partition`: that one, and all placed."""
    placed: list[Placed] = []
    for _ in range(attempts):
        [order] = await place_orders(catalog, [flow])
        placed.append(order)
        if partition_for_key(order.order_id.encode(), PARTITIONS) == partition:
            return order, placed
    raise AssertionError(f"no order id of {attempts} fell in partition {partition}")
