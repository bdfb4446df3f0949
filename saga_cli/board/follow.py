"""The board's two ways of reading Kafka: following every topic into the index, and one saga by key.

`follow(index, state)` reads every partition of the four saga topics from the index's start time
(offsets for times, as `saga trace` seeks) and then keeps reading what arrives, for as long as it
runs; `state` says how far it is (caught up with the end offsets seen at start, or not yet) and
what went wrong last. When Kafka goes away it says so in `state.problem`, waits, and goes on
from where it stopped.

`read_one_saga(order_id, since_ms, until_ms)` is `saga trace`'s read — the key's partition of
each topic, from a time — bounded by a time too when the saga has ended.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from saga_cli.board.index import SagaIndex
from saga_cli.errors import CliError
from saga_cli.kafka import (
    SAGA_TOPICS, KafkaEvent, decode_record, fetch, kafka_consumer, partition_for_key, partitions_by_topic, read_range,
)

RETRY_S = 2.0
"""Seconds between two attempts to reach Kafka again after it failed."""
FETCH_WAIT_MS = 500
TOPICS_CHECK_S = 10.0
"""While a saga topic does not exist yet: seconds between two looks for it."""


@dataclass
class FollowState:
    """How far the follower is. `positions`: next offset per (topic, partition); `caught_up`:
    it has read up to the end offsets it saw when it started; `problem`: one line, or None."""

    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    caught_up: bool = False
    problem: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    caught_up_after_s: float | None = None
    skipped: int = 0
    """Records that `SagaIndex.add` failed on (a bug: it should take any record)."""


async def follow(index: SagaIndex, state: FollowState, bootstrap: str | None = None) -> None:
    """Read the saga topics of the Kafka at `bootstrap` (None: the default) into `index` until
    cancelled (module doc). Never returns by itself."""
    while True:
        try:
            await _follow_once(index, state, bootstrap)
        except asyncio.CancelledError:
            raise
        except CliError as error:
            state.problem = str(error)
        except Exception as error:  # any failure of the client: say it, and try again
            state.problem = f"reading Kafka failed: {type(error).__name__}: {error}"
        await asyncio.sleep(RETRY_S)


async def _follow_once(index: SagaIndex, state: FollowState, bootstrap: str | None) -> None:
    async with kafka_consumer(auto_offset_reset="earliest", bootstrap=bootstrap) as consumer:
        topics = await partitions_by_topic(consumer)
        partitions = [TopicPartition(topic, number) for topic in SAGA_TOPICS for number in topics.get(topic, ())]
        if not partitions:
            raise CliError(f"none of {', '.join(SAGA_TOPICS)} exists yet")
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        start = await _start_offsets(consumer, partitions, index.since_ms, end, state)
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        behind = {partition for partition in partitions if start[partition] < end[partition]}
        state.problem = None  # connected again
        missing = [topic for topic in SAGA_TOPICS if not topics.get(topic)]
        checked = time.monotonic()
        while True:
            batches = await fetch(consumer, partitions, timeout_ms=FETCH_WAIT_MS)
            for partition, records in batches.items():
                for record in records:
                    try:
                        index.add(decode_record(record))
                    except Exception as error:  # a bug must not stop the board on one record: count it, go on
                        state.skipped += 1
                        state.problem = f"a record the board could not take ({partition.topic}[{partition.partition}]" \
                                        f"@{record.offset}): {type(error).__name__}: {error}"
                state.positions[(partition.topic, partition.partition)] = records[-1].offset + 1
            for partition in list(behind):  # the position, not the last record: a transaction marker has an offset too
                if await consumer.position(partition) >= end[partition]:
                    state.positions[(partition.topic, partition.partition)] = await consumer.position(partition)
                    behind.discard(partition)
            if not behind and not state.caught_up:
                state.caught_up = True
                state.caught_up_after_s = time.monotonic() - state.started_at
            if missing and time.monotonic() - checked > TOPICS_CHECK_S:
                checked = time.monotonic()
                if any((await partitions_by_topic(consumer)).get(topic) for topic in missing):
                    return  # a topic appeared: start again with it (the positions are kept)


async def _start_offsets(consumer, partitions: list[TopicPartition], since_ms: int | None,
                         end: dict[TopicPartition, int], state: FollowState) -> dict[TopicPartition, int]:
    """Where each partition is read from: where the follower stopped, else the first record at or
    after `since_ms` (the end when there is none), else the beginning."""
    start: dict[TopicPartition, int] = {}
    fresh = [p for p in partitions if (p.topic, p.partition) not in state.positions]
    if fresh and since_ms is not None:
        found = await consumer.offsets_for_times({p: max(since_ms, 0) for p in fresh})
        start.update({p: found[p].offset if found.get(p) is not None else end[p] for p in fresh})
    elif fresh:
        start.update(await consumer.beginning_offsets(fresh))
    for p in partitions:
        if p not in start:
            start[p] = state.positions[(p.topic, p.partition)]
    return start


async def read_one_saga(order_id: str, since_ms: int | None, until_ms: int | None = None,
                        bootstrap: str | None = None) -> list[KafkaEvent]:
    """Every record of the saga `order_id` on the four topics: in the key's partition of each, from
    the first record at or after `since_ms` (epoch ms; None: the beginning) up to the first at or
    after `until_ms` (None: the end offsets as they were when the read began). A saga the index
    has seen end is read between its first and last record (with margins), so opening an old
    saga does not read everything published since. `bootstrap`: the Kafka (None: the default). Raises CliError (one line) when Kafka is not
    reachable or does not deliver within its timeout."""
    key = order_id.encode()
    async with kafka_consumer(auto_offset_reset="earliest", bootstrap=bootstrap) as consumer:
        topics = await partitions_by_topic(consumer)
        partitions = [TopicPartition(topic, sorted(topics[topic])[partition_for_key(key, len(topics[topic]))])
                      for topic in SAGA_TOPICS if topics.get(topic)]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        if since_ms is None:
            start = await consumer.beginning_offsets(partitions)
        else:
            start = {p: end[p] if found is None else found.offset
                     for p, found in (await consumer.offsets_for_times({p: since_ms for p in partitions})).items()}
        if until_ms is not None:
            found = await consumer.offsets_for_times({p: until_ms for p in partitions})
            end = {p: end[p] if found.get(p) is None else min(end[p], found[p].offset) for p in partitions}
        return await read_range(consumer, start, end, keep=lambda record: record.key == key)
