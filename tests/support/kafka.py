"""Reading the event topics in tests: from 'now' forward, until a condition holds or a deadline passes."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from saga_cli.kafka import fetch


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: dict | None
    timestamp_ms: int

    @property
    def event_id(self) -> str:
        return self.headers.get("id", "")


class TopicReader:
    """Assigns every partition of the topics at their current end, then reads forward.

    Start it before writing, so nothing written afterwards can be missed.
    """

    def __init__(self, bootstrap: str, *topics: str):
        self.bootstrap = bootstrap
        self.topics = topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        self.records: list[Record] = []

    async def __aenter__(self) -> "TopicReader":
        await self.consumer.start()
        partitions = []
        for topic in self.topics:
            for partition in sorted(await self._partitions(topic)):
                partitions.append(TopicPartition(topic, partition))
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, not lazily at the first fetch
            await self.consumer.position(tp)
        return self

    async def _partitions(self, topic: str) -> set[int]:
        await ensure_topic(self.bootstrap, topic)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.consumer.partitions_for_topic(topic)
            if found:
                return found
            await self.consumer._client.force_metadata_update()  # the topic may just have been created
            await asyncio.sleep(0.2)
        raise AssertionError(f"topic {topic} does not exist")

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def read_until(self, done: Callable[[list[Record]], bool], timeout: float = 60.0) -> list[Record]:
        """Read until done(records) is true; fail with what was seen when the deadline passes."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout:.0f}s; read {len(self.records)} records")
            batch = await fetch(self.consumer, sorted(self.consumer.assignment()),
                                timeout_ms=int(min(remaining, 1.0) * 1000))
            for messages in batch.values():
                self.records.extend(_record(m) for m in messages)
        return self.records


async def ensure_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Create `topic` unless it exists (a topic only the tests use)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def _record(message) -> Record:
    """A record as tests read it; a value that is not JSON (other tests publish hostile records
    to the same topics) is its text, keys and header values decoded with replacement."""
    try:
        value = json.loads(message.value) if message.value else None
    except (ValueError, RecursionError):
        value = message.value.decode("utf-8", "replace")
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key.decode("utf-8", "replace") if message.key is not None else None,
        headers={k: v.decode("utf-8", "replace") for k, v in message.headers if v is not None},
        value=value,
        timestamp_ms=message.timestamp,
    )


async def eventually(check: Callable[[], "bool | asyncio.Future"], timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll an (async) check until it returns truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)
