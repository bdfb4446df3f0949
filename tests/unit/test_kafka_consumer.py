"""EventStream's bookkeeping around a rebalance (no broker: the consumer it commits to is a recorder).

What Kafka itself does with the group is exercised against the real broker in
tests/faults (scale-out, service kills, redelivery)."""
from __future__ import annotations

import asyncio
from functools import partial

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from shared.kafka_consumer import EventStream

pytestmark = pytest.mark.unit

TP = TopicPartition("events.order", 0)


def record(offset: int, key: bytes) -> ConsumerRecord:
    return ConsumerRecord(topic=TP.topic, partition=TP.partition, offset=offset, timestamp=0, timestamp_type=0,
                          key=key, value=b"{}", checksum=None, serialized_key_size=len(key),
                          serialized_value_size=2, headers=[])


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets) -> None:
        self.commits.append(dict(offsets))


async def submit(stream: EventStream, generation: int, rec: ConsumerRecord) -> bool:
    return await stream._dispatcher.submit(rec.key, partial(stream._settle, TP, rec),
                                           admit=partial(stream._admit, generation, TP, rec))


async def test_a_revocation_waits_for_work_in_flight_commits_it_and_drops_what_was_fetched_before():
    gate = asyncio.Event()
    handled: list[int] = []

    async def handle(rec: ConsumerRecord) -> None:
        await gate.wait()
        handled.append(rec.offset)

    stream = EventStream(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
                         concurrency=4, fetch_max_wait_ms=25)
    stream._consumer = consumer = RecordingConsumer()
    stream._assigned_now({TP})
    fetched_under = stream._generation
    assert await submit(stream, fetched_under, record(0, b"a"))
    assert await submit(stream, fetched_under, record(1, b"b"))

    revoking = asyncio.create_task(stream._revoked({TP}))
    await asyncio.sleep(0.02)
    assert not revoking.done()  # waits for offsets 0 and 1
    stream._assigned_now({TP})  # even if the partition came straight back…
    assert not await submit(stream, fetched_under, record(2, b"c"))  # …what was fetched before is stale
    gate.set()
    await revoking

    assert sorted(handled) == [0, 1]
    assert consumer.commits == [{TP: 2}]  # the next offset to read: nothing skipped, nothing in flight


async def test_offsets_are_committed_only_up_to_the_first_record_still_in_flight():
    gates = {0: asyncio.Event(), 1: asyncio.Event()}

    async def handle(rec: ConsumerRecord) -> None:
        await gates[rec.offset].wait()

    stream = EventStream(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
                         concurrency=4, fetch_max_wait_ms=25)
    consumer = RecordingConsumer()
    stream._assigned_now({TP})
    for offset in (0, 1):
        assert await submit(stream, stream._generation, record(offset, bytes([offset])))
    gates[1].set()
    await asyncio.sleep(0.01)
    await stream._commit(consumer, {TP})
    assert consumer.commits == []  # offset 1 is done, 0 is not: nothing may be committed
    gates[0].set()
    await stream._dispatcher.join()
    await stream._commit(consumer, {TP})
    await stream._commit(consumer, {TP})  # unchanged: not committed twice
    assert consumer.commits == [{TP: 2}]
