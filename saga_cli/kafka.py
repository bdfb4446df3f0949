"""Reading the saga's topics: partitioning like Kafka's producer, bounded reads, decoded records.

Every event of a saga is keyed by its order id, so one saga lives in exactly one
partition of each topic: the one Kafka's default partitioner picks for the key,
toPositive(murmur2(key)) % partitions. `read_key` reads only that partition of
each topic, from a start offset (by time or the beginning) up to the end offsets
captured when it started, so it always terminates.

Any record decodes (`decode_record`): whatever its bytes, size or headers, the CLI
shows it rather than fail. A value that is not JSON (invalid UTF-8, NUL bytes, nested
deeper than MAX_JSON_DEPTH, larger than MAX_JSON_BYTES, or simply text) becomes its
text, invalid bytes written as ``\\xNN``, cut to MAX_TEXT_CHARS; keys and header values
likewise. Printing them on one line is `saga_cli.output.one_line`'s job.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Protocol

import typer
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2

from saga_cli.endpoints import kafka_bootstrap, not_reachable
from saga_cli.errors import CliError
from shared import descriptors
from shared.topics import DEADLETTER, topic_for

TOPIC_SERVICES = {**{topic_for(service.aggregate_type): service.name for service in descriptors.SERVICES},
                  topic_for(DEADLETTER): "deadletter"}
"""Each saga topic → the service whose outbox publishes it (shared/descriptors.py), and the dead letters'."""
SAGA_TOPICS = tuple(TOPIC_SERVICES)
READ_TIMEOUT_S = 30.0

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-server",
        metavar="HOST:PORT[,HOST:PORT…]",
        help="Kafka to read (default: $SAGA_KAFKA_BOOTSTRAP, else 127.0.0.1:9092).",
        show_default=False,
    ),
]
"""The option every Kafka-reading command takes, named as Kafka's own tools name it."""

MAX_JSON_BYTES = 1 << 20
"""A record value larger than this (1 MiB, Kafka's default largest message) is not parsed:
it is shown as text (cut to MAX_TEXT_CHARS)."""
MAX_JSON_DEPTH = 64
"""A value whose JSON nests deeper than this is shown as text: no saga event nests beyond a
few levels, and printing a deeper one again would exhaust Python's recursion limit."""
MAX_TEXT_CHARS = 1000
"""The most characters kept of a key, a header value, or a value that is not JSON; a longer
one is cut and ends in "… (N bytes)"."""


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner (Java client) gives a keyed record."""
    if partition_count <= 0:
        raise ValueError("a topic has at least one partition")
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


@dataclass(frozen=True)
class KafkaEvent:
    """One record as the CLI shows it: where it sits, when, its key, headers and value."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str | None] = field(default_factory=dict)
    """Each header name's last value (as Kafka's `lastHeader` and the services read them)."""
    value: Any = None
    """The decoded JSON, or the text of a value that is not JSON (see the module doc)."""
    header_pairs: tuple[tuple[str, str | None], ...] = ()
    """Every header as it came, in order, duplicate and empty names included (empty when
    the event was built from `headers` alone)."""

    @property
    def all_headers(self) -> tuple[tuple[str, str | None], ...]:
        """`header_pairs`, or `headers` as pairs when the event was built without them."""
        return self.header_pairs or tuple(self.headers.items())

    @property
    def service(self) -> str:
        """The service whose outbox publishes the record's topic ("deadletter" for events.deadletter),
        else the topic itself."""
        return TOPIC_SERVICES.get(self.topic, self.topic)

    @property
    def event_type(self) -> str | None:
        """The eventType header, else the value's `event_type` (text only); None when neither."""
        return self.headers.get("eventType") or _field(self.value, "event_type")

    @property
    def event_id(self) -> str | None:
        """The id header, else the value's `event_id` (text only); None when neither."""
        return self.headers.get("id") or _field(self.value, "event_id")

    @property
    def causation_id(self) -> str | None:
        """The causationId header; None when missing or empty (an ORDER_CREATED has none)."""
        return self.headers.get("causationId") or None

    @property
    def signed(self) -> bool:
        """Whether it carries a signature header, as every event a service emits does. The CLI
        holds no keys: whether the signature verifies is for the consumers to say (an event
        they refuse shows as a DEAD_LETTER whose error starts "unauthenticated")."""
        return bool(self.headers.get("signature"))

    @property
    def at(self) -> str:
        """The record's timestamp as UTC ISO-8601 with milliseconds (`iso_time`)."""
        return iso_time(self.timestamp_ms)


def iso_time(epoch_ms: int) -> str:
    """`epoch_ms` as UTC ISO-8601 with milliseconds ("2024-05-01T12:00:00.000Z"). A record's
    timestamp is whatever its producer set: one outside the years 1–9999 is given as
    "<epoch_ms> ms since the epoch" rather than fail."""
    try:
        moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{epoch_ms} ms since the epoch"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_record(record: ConsumerRecord) -> KafkaEvent:
    """`record` as the CLI shows it; never raises, whatever the record holds (module doc)."""
    pairs = tuple((str(name), _header_text(value)) for name, value in record.headers or ())
    return KafkaEvent(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=None if record.key is None else _text(record.key),
        headers=dict(pairs),
        value=_value(record.value),
        header_pairs=pairs,
    )


async def partitions_by_topic(consumer: AIOKafkaConsumer) -> dict[str, list[int]]:
    """Every topic the broker has, with its partition numbers, from one metadata request.

    The consumer's public `topics()` fetches the same metadata but returns only the
    names, and `partitions_for_topic()` knows only topics it is already tracking.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return {topic: sorted(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}


class Consumer(Protocol):
    """The part of AIOKafkaConsumer that `read_key` uses (a fake can stand in for it in tests)."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly `partitions`, outside any consumer group."""
        ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """{partition: the offset after its last record}."""
        ...
    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """{partition: its earliest offset still held}."""
        ...
    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """{partition: its first record at or after the timestamp (epoch ms) as OffsetAndTimestamp, or None}."""
        ...
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read `partition` from `offset` on."""
        ...
    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """{partition: records} fetched from `partitions` within `timeout_ms` ms, at most `max_records`."""
        ...
    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record `getmany` returns from `partition`."""
        ...


CAREFUL_READS = 100
"""After a fetch failed on a record the client cannot parse: records read one at a time per
partition (the unreadable one among them) before fetching in batches again."""


@dataclass(frozen=True)
class UnreadableRecord:
    """A record the Kafka client could not parse (e.g. a header name that is not UTF-8, which
    the protocol forbids but a broker stores): where it sits and the client's error. It has
    the attributes `decode_record` reads, and shows as the text of its error."""

    topic: str
    partition: int
    offset: int
    error: str
    key: None = None
    headers: tuple = ()
    timestamp: int = 0

    @property
    def value(self) -> bytes:
        """The text that stands for its value: "unreadable record (<error>)", UTF-8."""
        return f"unreadable record ({self.error})".encode()


async def fetch(
    consumer: Consumer, partitions: Sequence[TopicPartition], timeout_ms: int
) -> dict[TopicPartition, list[ConsumerRecord | UnreadableRecord]]:
    """`consumer.getmany(*partitions)` that never fails on a record the client cannot parse.

    When aiokafka raises while parsing (anything but a KafkaError, which passes), each
    partition goes back to where it was and is read one record at a time; the record that
    fails alone comes back as an UnreadableRecord and its partition moves one past it
    (what else its producer put in the same record batch after it is unreadable too)."""
    before = {partition: await consumer.position(partition) for partition in partitions}
    try:
        return await consumer.getmany(*partitions, timeout_ms=timeout_ms)
    except KafkaError:
        raise
    except Exception:  # a record aiokafka cannot parse: find it below
        pass
    found: dict[TopicPartition, list[ConsumerRecord | UnreadableRecord]] = {}
    for partition in partitions:
        consumer.seek(partition, before[partition])
        taken = found.setdefault(partition, [])
        while len(taken) < CAREFUL_READS:
            try:
                batch = await consumer.getmany(partition, timeout_ms=200, max_records=1)
            except KafkaError:
                raise
            except Exception as error:
                offset = await consumer.position(partition)
                taken.append(UnreadableRecord(partition.topic, partition.partition, offset,
                                              _text(f"{type(error).__name__}: {error}".encode())))
                consumer.seek(partition, offset + 1)
                continue
            if not batch.get(partition):
                break
            taken.extend(batch[partition])
    return {partition: records for partition, records in found.items() if records}


async def read_key(
    consumer: Consumer,
    key: str,
    topic_partitions: Mapping[str, Sequence[int]],
    topics: Iterable[str] = SAGA_TOPICS,
    since_ms: int | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> list[KafkaEvent]:
    """All records with this key in the key's partition of each of `topics` that exists
    (per `topic_partitions`), from `since_ms` (or the beginning) up to the end offsets as
    they were when the read started."""
    key_bytes = key.encode("utf-8")
    partitions = []
    for topic in topics:
        numbers = sorted(topic_partitions.get(topic, ()))
        if numbers:
            partitions.append(TopicPartition(topic, numbers[partition_for_key(key_bytes, len(numbers))]))
    if not partitions:
        return []
    consumer.assign(partitions)
    end = await consumer.end_offsets(partitions)
    start = await _start_offsets(consumer, partitions, since_ms, end)
    return await read_range(consumer, start, end, timeout_s, keep=lambda record: record.key == key_bytes)


async def read_range(
    consumer: Consumer,
    start: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    timeout_s: float = READ_TIMEOUT_S,
    keep: Callable[[Any], bool] = lambda record: True,
) -> list[KafkaEvent]:
    """The records `keep` accepts from each partition's `start` offset up to (not including)
    its `end` offset; one-line CliError when Kafka does not deliver them within timeout_s."""
    for partition, offset in start.items():
        consumer.seek(partition, offset)
    pending = {partition for partition in start if start[partition] < end[partition]}

    events: list[KafkaEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            late = ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(pending))
            raise CliError(f"Kafka did not deliver {late} up to its end within {timeout_s:g}s")
        batches = await fetch(consumer, sorted(pending), timeout_ms=int(min(remaining, 1.0) * 1000))
        for partition, records in batches.items():
            events.extend(decode_record(record) for record in records if record.offset < end[partition] and keep(record))
        for partition in list(pending):
            if await consumer.position(partition) >= end[partition]:
                pending.discard(partition)
    return events


async def _start_offsets(
    consumer: Consumer, partitions: list[TopicPartition], since_ms: int | None, end: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    if since_ms is None:
        return dict(await consumer.beginning_offsets(partitions))
    found = await consumer.offsets_for_times({partition: max(since_ms, 0) for partition in partitions})
    # No record at or after the time: nothing to read there.
    return {p: found[p].offset if found.get(p) is not None else end[p] for p in partitions}


@asynccontextmanager
async def kafka_consumer(*topics: str, bootstrap: str | None = None, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a group (no offsets committed anywhere) on `bootstrap` ("host:port[,…]";
    None: `endpoints.kafka_bootstrap()`); CliError, one line, when Kafka cannot be reached or used."""
    bootstrap = (bootstrap or "").strip() or kafka_bootstrap()
    # aiokafka logs each failed connection; the CLI says it once, in one line.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        client_id="saga-cli",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15000,
        **options,
    )
    try:
        await consumer.start()
    except KafkaConnectionError:
        await consumer.stop()
        raise CliError(not_reachable("Kafka", bootstrap)) from None
    except (KafkaError, OSError, ValueError) as error:
        await consumer.stop()
        raise CliError(f"Kafka at {bootstrap} could not be used: {error}") from None
    try:
        yield consumer
    except KafkaConnectionError:
        raise CliError(not_reachable("Kafka", bootstrap)) from None
    except KafkaError as error:
        raise CliError(f"Kafka at {bootstrap} failed: {error}") from None
    finally:
        await consumer.stop()


def _header_text(value: bytes | None) -> str | None:
    """A header value as text: a JSON-encoded string (JsonConverter headers) unquoted,
    anything else as `_text` shows bytes."""
    if value is None:
        return None
    if 2 <= len(value) <= MAX_TEXT_CHARS and value[:1] == value[-1:] == b'"':
        try:
            decoded = json.loads(value.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            decoded = None
        if isinstance(decoded, str):
            return decoded
    return _text(value)


def _value(raw: bytes | None) -> Any:
    """The record value: its JSON when it is JSON (UTF-8, at most MAX_JSON_BYTES, nested at
    most MAX_JSON_DEPTH deep), else its text as `_text` shows it."""
    if raw is None:
        return None
    if len(raw) <= MAX_JSON_BYTES:
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep to parse
            pass
        else:
            if not _nested_deeper_than(decoded, MAX_JSON_DEPTH):
                return decoded
    return _text(raw)


def _text(raw: bytes) -> str:
    """`raw` as UTF-8 text, each invalid byte written as \\xNN, cut to MAX_TEXT_CHARS
    ("… (N bytes)" after a cut). Control characters stay: `output.one_line` escapes them."""
    text = raw[: MAX_TEXT_CHARS * 4].decode("utf-8", errors="backslashreplace")
    if len(text) > MAX_TEXT_CHARS or len(raw) > MAX_TEXT_CHARS * 4:
        return f"{text[:MAX_TEXT_CHARS]}… ({len(raw)} bytes)"
    return text


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True when `value` (decoded JSON) has lists or objects nested more than `limit` deep."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        if not any(isinstance(item, (list, dict)) for item in level):
            return False
        level = [
            child
            for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return True


def _field(value: Any, name: str) -> str | None:
    found = value.get(name) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None
