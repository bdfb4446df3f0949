"""The service's Kafka consumer: aiokafka in the worker's own event loop, acks after commit.

faust's consumer runs aiokafka in a second thread with its own event loop and hands
every record across threads and through its stream machinery; profiled under saga load
that was about a third of a service's CPU. `KafkaGroupConsumer` is a plain aiokafka consumer
in the worker's loop, started and stopped with the faust app (it is a mode Service,
like faust's own), feeding the same runtime: `KeyedDispatcher` (several messages at
once, one saga's in order) and `OrderedAcks` (offsets leave each partition in order).

Invariants:
  * An offset is committed only when every record of its partition before it was
    handled to a durable outcome (its callback returned): a crash at any moment
    redelivers, it never skips.
  * On a rebalance (aiokafka's is eager: everything is revoked, then assigned) nothing
    new is started for the old assignment, the records in flight are waited for (at most
    REVOKE_DRAIN_SECONDS, then cancelled, unacked), and the offsets of those that settled
    are committed before the partitions go.
  * The fetch loop never blocks on busy handlers: when every slot is taken (handlers
    retrying through an outage) the partitions are paused and the loop keeps polling, so
    the member keeps its group membership for as long as the outage lasts. Records fetched under the
    old assignment and not started are dropped: the group refetches them from the
    committed offset, here or in another member.
  * One consumer group per service (its name), the same group faust used, so its
    committed offsets carry over.
  * A record the client itself cannot parse (aiokafka raises inside `getmany`, e.g. for
    a header name that is not UTF-8, which Kafka's protocol forbids but a broker stores)
    stops nothing: every partition goes back to its first record not yet taken (a failed
    `getmany` may have moved positions past records it did not return), the partitions
    are read one record at a time until the unreadable one is found, and it is handed on
    as an `UnreadableRecord` (dead-lettered with where and why, acked in order). A record
    batch comes from one producer, so what else that producer put in the same batch
    after it is unreadable too and is dead-lettered the same way.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from shared import retrying
from shared.acks import OrderedAcks
from shared.dispatch import KeyedDispatcher
from shared.safe_text import preview

__all__ = ["KafkaGroupConsumer", "UnreadableRecord"]

log = logging.getLogger(__name__)

Handle = Callable[["ConsumerRecord | UnreadableRecord"], Awaitable[None]]
"""Settles one record durably; returns normally (it exits the process on a bug)."""

CAREFUL_READS_PER_PARTITION = 100
"""After an unreadable record, how many records each partition is read one at a time before
fetching in batches again (the unreadable one is found within them, or the next batch fetch
fails again and another careful pass follows)."""

STOP_DRAIN_SECONDS = 15.0
"""On shutdown, how long the records in flight get to finish before they are cancelled (not
acked: whoever takes the partitions next gets them again)."""

REVOKE_DRAIN_SECONDS = 5.0
"""On a rebalance, how long the records in flight get to finish before they are cancelled. A
record whose handler is retrying through a database outage would otherwise hold the rebalance
past its timeout, and the group would churn exactly when the database is unwell."""

REBALANCE_TIMEOUT_MS = 30_000
"""How long the group waits for its members to rejoin; above REVOKE_DRAIN_SECONDS plus a commit."""


@dataclass(frozen=True)
class UnreadableRecord:
    """Where a record the Kafka client could not parse sits, and the client's error: what the
    handler gets instead of a ConsumerRecord (no key, value or headers could be read)."""

    topic: str
    partition: int
    offset: int
    error: str
    key: None = None
    value: None = None
    headers: tuple = ()
    timestamp: int = 0


class KafkaGroupConsumer(Service):
    """The service's member of its Kafka consumer group: fetches the records of its partitions
    and hands each to `handle` (the service's EventProcessor, through the dispatcher), commits
    offsets after their outcomes are durable (the module's invariants). `topics`: what it
    subscribes to; `concurrency`: records in flight at once; `fetch_max_wait_ms`: the longest
    the broker holds an empty fetch. `skips`, if given, says of a fetched record that it needs
    no handling (another service's event): such a record is acked in its place at once, without
    a dispatcher slot, a task or `handle`."""

    def __init__(
        self,
        *,
        topics: Iterable[str],
        bootstrap_servers: str,
        group_id: str,
        handle: Handle,
        concurrency: int,
        fetch_max_wait_ms: int,
        skips: Callable[[ConsumerRecord], bool] | None = None,
        # A worker killed without leaving its group holds its partitions until its session
        # expires: 10 s lets a restarted or surviving worker take them over quickly.
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        commit_interval: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.topics = tuple(topics)
        self.group_id = group_id
        self._handle = handle
        self._skips = skips
        self._config = dict(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=f"{group_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        )
        self.commit_interval = commit_interval
        self._consumer: AIOKafkaConsumer | None = None
        self._dispatcher = KeyedDispatcher(concurrency)
        self._acks = OrderedAcks(self._acked)
        self._assigned: set[TopicPartition] = set()
        self._generation = 0  # +1 on every revocation: a batch fetched before it is stale
        self._positions: dict[TopicPartition, int] = {}  # next offset to commit
        self._committed: dict[TopicPartition, int] = {}
        self._taken: dict[TopicPartition, int] = {}  # next offset not yet taken from the client
        self._paused = False
        self._last_progress = time.monotonic()  # when a record last settled (or there was nothing to do)
        self._tasks: list[asyncio.Future] = []

    # --- what /health asks ---------------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        """The partitions Kafka has given this member now (a copy)."""
        return set(self._assigned)

    def lag(self) -> int:
        """Records on the assigned partitions not yet settled here: each partition's high
        watermark (as of the last fetch) minus the next offset to commit. 0 when unknown."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        for tp in self._assigned:
            high = consumer.highwater(tp)
            done = self._positions.get(tp, self._committed.get(tp))
            if high is not None and done is not None:
                total += max(high - done, 0)
        return total

    def seconds_without_progress(self) -> float:
        """Seconds since a record last settled, or 0 when there is nothing to settle (no lag)."""
        if self.lag() == 0:
            self._last_progress = time.monotonic()
            return 0.0
        return time.monotonic() - self._last_progress

    @property
    def running(self) -> bool:
        """Whether the consumer is connected and not stopping."""
        return self._consumer is not None and not self.should_stop

    @property
    def fetch_loop_alive(self) -> bool:
        """Whether the fetch loop is started and has not ended (it ends only with the process)."""
        return bool(self._tasks) and not self._tasks[0].done()

    # --- lifecycle -----------------------------------------------------------------------
    async def on_start(self) -> None:
        """Start the fetch loop; the process exits (70) if the loop ever fails."""
        self._tasks = [asyncio.ensure_future(self._run())]
        self._tasks[0].add_done_callback(_exit_if_crashed)

    async def on_stop(self) -> None:
        """Stop fetching; give the records in flight STOP_DRAIN_SECONDS (15 s) to finish (the rest are
        cancelled, unacked, redelivered), commit what settled and leave the group."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            if not await self._dispatcher.join(STOP_DRAIN_SECONDS):
                cancelled = await self._dispatcher.cancel()
                log.warning("stopping with %d messages still in flight; they will be redelivered", cancelled)
            await self._commit(consumer, self._assigned)
        finally:
            await consumer.stop()  # leaves the group: its partitions move at once

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer in the group, subscribed; tried again (0.2 s, doubling to 5 s) for as
        long as Kafka does not answer."""
        def not_yet(state: retrying.RetryCallState) -> None:
            """Log that Kafka does not answer yet, before the next attempt."""
            log.warning("Kafka not reachable yet (%s); retrying", state.outcome.exception())

        async for attempt in retrying.forever(retry_on=KafkaError, wait=retrying.doubling(0.2, 5.0), on_retry=not_yet):
            with attempt:
                consumer = AIOKafkaConsumer(**self._config)
                consumer.subscribe(topics=list(self.topics), listener=_Rebalance(self))
                try:
                    await consumer.start()
                except KafkaError:
                    await consumer.stop()
                    raise
                return consumer

    async def _run(self) -> None:
        self._consumer = consumer = await self._connect()
        self._tasks.append(asyncio.ensure_future(self._commit_periodically(consumer)))
        while not self.should_stop:
            free = self._dispatcher.free
            if free == 0:  # every slot busy (e.g. retrying through an outage): keep polling, fetch nothing
                await self._pause_while_busy(consumer)
                continue
            self._resume(consumer)
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=free)
            except ConsumerStoppedError:
                return
            except KafkaError as error:  # aiokafka recovers by itself; say so and ask again
                log.warning("fetch failed (%s); retrying", error)
                await asyncio.sleep(0.5)
                continue
            except Exception as error:  # a record the client cannot parse: find it, hand it on, go on
                await self._read_carefully(consumer, error)
                continue
            generation = self._generation
            for tp, records in batches.items():
                for record in records:
                    if self._skips is not None and self._skips(record):
                        self._skip(generation, tp, record)
                    else:
                        await self._submit(generation, tp, record)

    async def _pause_while_busy(self, consumer: AIOKafkaConsumer) -> None:
        """Pause every assigned partition and poll without fetching until a slot is free. The
        member keeps calling the client (its poll interval) and heartbeating, so it stays in
        its group however long its handlers wait; nothing fetched is dropped unprocessed."""
        if not self._paused:
            consumer.pause(*consumer.assignment())
            self._paused = True
        await self._dispatcher.wait_for_free_slot(1.0)
        try:
            await consumer.getmany(timeout_ms=0)
        except KafkaError:
            pass
        except Exception:
            pass  # an unparseable record cannot come from paused partitions; the next fetch finds it

    def _resume(self, consumer: AIOKafkaConsumer) -> None:
        if self._paused:
            consumer.resume(*consumer.assignment())
            self._paused = False

    async def _submit(self, generation: int, tp: TopicPartition, record: ConsumerRecord | UnreadableRecord) -> None:
        if generation == self._generation:
            self._taken[tp] = record.offset + 1
        admit = partial(self._admit, generation, tp, record)
        await self._dispatcher.submit(record.key, partial(self._settle, tp, record), admit=admit)

    def _skip(self, generation: int, tp: TopicPartition, record: ConsumerRecord) -> None:
        """Ack `record` in its place among its partition's records, unhandled (`skips`)."""
        if generation == self._generation:
            self._taken[tp] = record.offset + 1
        if self._admit(generation, tp, record):
            self._acks.finished(tp, record)

    async def _read_carefully(self, consumer: AIOKafkaConsumer, error: Exception) -> None:
        """After `getmany` failed on a record it could not parse: rewind, then read each partition
        one record at a time; the record that fails alone is handed on as an UnreadableRecord
        and its partition moves one past it."""
        log.warning("a fetched record could not be parsed (%s: %s); reading one record at a time to find it",
                    type(error).__name__, preview(str(error), 200))
        generation = self._generation
        await self._rewind(consumer)
        for tp in sorted(self._assigned):
            for _ in range(CAREFUL_READS_PER_PARTITION):
                if generation != self._generation or tp not in self._assigned or self.should_stop:
                    return
                try:
                    batch = await consumer.getmany(tp, timeout_ms=200, max_records=1)
                except KafkaError:
                    return  # the normal loop deals with the broker
                except Exception as unreadable:
                    offset = await consumer.position(tp)
                    reason = f"the Kafka client cannot parse this record ({type(unreadable).__name__}: {unreadable})"
                    log.error("unreadable record at %s[%s]@%s: %s", tp.topic, tp.partition, offset,
                              preview(reason, 300))
                    await self._submit(generation, tp, UnreadableRecord(tp.topic, tp.partition, offset, reason))
                    consumer.seek(tp, offset + 1)
                    continue
                records = batch.get(tp, [])
                if not records:
                    break
                for record in records:
                    await self._submit(generation, tp, record)

    async def _rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Put every assigned partition back at the first record not yet taken from the client."""
        for tp in self._assigned:
            if tp in self._taken:
                consumer.seek(tp, self._taken[tp])
                continue
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)

    def _admit(self, generation: int, tp: TopicPartition, record: ConsumerRecord) -> bool:
        """Whether `record` may start now: its partition is still ours since it was fetched."""
        if generation != self._generation or tp not in self._assigned:
            return False
        self._acks.received(tp, record)
        return True

    async def _settle(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        await self._handle(record)
        self._acks.finished(tp, record)

    def _acked(self, record: ConsumerRecord) -> None:
        self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
        self._last_progress = time.monotonic()

    # --- offsets ---------------------------------------------------------------------------
    async def _commit_periodically(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.commit_interval)
            await self._commit(consumer, self._assigned)

    async def _commit(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
        offsets = {tp: self._positions[tp] for tp in partitions
                   if tp in self._positions and self._positions[tp] != self._committed.get(tp)}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:  # a rebalance or a broker away: the next commit carries it
            log.info("offset commit deferred (%s)", error)
            return
        self._committed.update(offsets)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1  # nothing fetched before this starts any more
        if not await self._dispatcher.join(REVOKE_DRAIN_SECONDS):
            cancelled = await self._dispatcher.cancel()
            log.warning("rebalance: %d messages still in flight after %.0f s cancelled; they will be redelivered",
                        cancelled, REVOKE_DRAIN_SECONDS)
        if self._consumer is not None:
            await self._commit(self._consumer, revoked)
        for tp in revoked:
            self._assigned.discard(tp)
            self._positions.pop(tp, None)
            self._committed.pop(tp, None)
            self._taken.pop(tp, None)
            self._acks.forget(tp)

    def _assigned_now(self, assigned: set[TopicPartition]) -> None:
        self._assigned = set(assigned)
        self._paused = False  # a new assignment starts unpaused
        self._last_progress = time.monotonic()
        log.info("partitions assigned: %s", ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)) or "none")


def _exit_if_crashed(task: asyncio.Future) -> None:
    """The fetch loop ended with an error: a bug. Exit rather than stay up consuming nothing;
    nothing unsettled was acked, and the restarted worker gets it again."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("the consumer's fetch loop failed; exiting", exc_info=task.exception())
    logging.shutdown()
    os._exit(70)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stream: KafkaGroupConsumer) -> None:
        self.stream = stream

    async def on_partitions_revoked(self, revoked) -> None:
        """Give the records in flight REVOKE_DRAIN_SECONDS (5 s), cancel the rest (redelivered), commit
        what settled and forget the revoked partitions."""
        await self.stream._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        """Take the new assignment (unpaused; the stall clock restarts)."""
        self.stream._assigned_now(set(assigned))
