"""KafkaGroupConsumer's bookkeeping around a rebalance (no broker: the consumer it commits to is a recorder).

What Kafka itself does with the group is exercised against the real broker in
tests/faults (scale-out, service kills, redelivery)."""
from __future__ import annotations

import asyncio
from functools import partial

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from shared.kafka_consumer import KafkaGroupConsumer

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


async def submit(stream: KafkaGroupConsumer, generation: int, rec: ConsumerRecord) -> bool:
    return await stream._dispatcher.submit(rec.key, partial(stream._settle, TP, rec),
                                           admit=partial(stream._admit, generation, TP, rec))


async def test_a_revocation_waits_for_work_in_flight_commits_it_and_drops_what_was_fetched_before():
    gate = asyncio.Event()
    handled: list[int] = []

    async def handle(rec: ConsumerRecord) -> None:
        await gate.wait()
        handled.append(rec.offset)

    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
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

    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
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


async def test_a_revocation_cancels_work_still_in_flight_after_its_wait_and_commits_only_what_settled(monkeypatch):
    """A handler retrying through an outage must not hold a rebalance past its timeout: after
    REVOKE_DRAIN_SECONDS it is cancelled, unacked; what settled before is committed."""
    import shared.kafka_consumer as module

    monkeypatch.setattr(module, "REVOKE_DRAIN_SECONDS", 0.05)
    never = asyncio.Event()

    async def handle(rec: ConsumerRecord) -> None:
        if rec.offset == 1:
            await never.wait()  # retrying for as long as the database is away

    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
                         concurrency=4, fetch_max_wait_ms=25)
    stream._consumer = consumer = RecordingConsumer()
    stream._assigned_now({TP})
    generation = stream._generation
    assert await submit(stream, generation, record(0, b"a"))
    assert await submit(stream, generation, record(1, b"b"))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(stream._revoked({TP}), 2)
    assert consumer.commits == [{TP: 1}]  # offset 0 settled; 1 was cancelled and will be redelivered
    assert stream._dispatcher.in_flight == 0


class PausingConsumer:
    """Records pause/resume and answers polls with nothing, as a paused partition does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def assignment(self):
        return {TP}

    def pause(self, *partitions) -> None:
        self.calls.append("pause")

    def resume(self, *partitions) -> None:
        self.calls.append("resume")

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        self.calls.append(f"poll {timeout_ms}")
        return {}


async def test_when_every_slot_is_busy_the_partitions_pause_and_polling_goes_on():
    busy = asyncio.Event()

    async def handle(rec: ConsumerRecord) -> None:
        await busy.wait()

    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
                         concurrency=1, fetch_max_wait_ms=25)
    stream._assigned_now({TP})
    assert await submit(stream, stream._generation, record(0, b"a"))
    consumer = PausingConsumer()
    waiting = asyncio.create_task(stream._pause_while_busy(consumer))
    await asyncio.sleep(0.01)
    busy.set()
    await asyncio.wait_for(waiting, 2)
    stream._resume(consumer)
    assert consumer.calls == ["pause", "poll 0", "resume"]


async def test_a_skipped_record_is_acked_in_its_place_and_never_handled():
    gate = asyncio.Event()
    handled: list[int] = []

    async def handle(rec: ConsumerRecord) -> None:
        await gate.wait()
        handled.append(rec.offset)

    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g", handle=handle,
                                concurrency=4, fetch_max_wait_ms=25, skips=lambda rec: rec.key == b"other")
    consumer = RecordingConsumer()
    stream._assigned_now({TP})
    generation = stream._generation
    assert await submit(stream, generation, record(0, b"a"))  # in flight until the gate opens
    stream._skip(generation, TP, record(1, b"other"))
    await stream._commit(consumer, {TP})
    assert consumer.commits == []  # offset 1 settled, but offset 0 has not: nothing to commit yet

    gate.set()
    await stream._dispatcher.join(1.0)
    await stream._commit(consumer, {TP})
    stream._skip(generation, TP, record(2, b"other"))
    await stream._commit(consumer, {TP})

    assert handled == [0]
    assert consumer.commits == [{TP: 2}, {TP: 3}]


async def test_a_record_skipped_after_its_partition_was_revoked_is_not_acked():
    stream = KafkaGroupConsumer(topics=[TP.topic], bootstrap_servers="127.0.0.1:9", group_id="g",
                                handle=lambda rec: asyncio.sleep(0), concurrency=4, fetch_max_wait_ms=25,
                                skips=lambda rec: True)
    consumer = RecordingConsumer()
    stream._assigned_now({TP})
    fetched_under = stream._generation
    await stream._revoked({TP})
    stream._assigned_now({TP})
    stream._skip(fetched_under, TP, record(0, b"x"))
    await stream._commit(consumer, {TP})
    assert consumer.commits == []
