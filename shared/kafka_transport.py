"""faust's Kafka transport (aiokafka) with the consumer's fetch wait as a setting instead of 1.5 s.

Why it matters: aiokafka keeps one fetch request in flight per broker, and leaves out
of it every partition whose records the application has not consumed yet. While a
service is busy with a batch from partition A, the next fetch asks only for the other
partitions and the broker holds it until data arrives there or `fetch.max.wait.ms`
passes; new records on A wait for it. faust hard-codes that wait to 1500 ms, so
under a steady load a record could sit up to 1.5 s before the service saw it (we
measured ~1.3 s per hop at 30 sagas/s). A short wait bounds that delay; what it
costs is one more (empty) fetch round trip per wait interval when a consumer is idle.

Invariant: the transport changes nothing but that wait; offsets, groups, acks and
rebalancing are faust's and aiokafka's own.
"""
from __future__ import annotations

import logging
from typing import Any

from faust.transport.drivers import aiokafka as driver

__all__ = ["Transport"]

log = logging.getLogger(__name__)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(transport, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            if hasattr(consumer, "_fetch_max_wait_ms"):
                consumer._fetch_max_wait_ms = wait_ms  # read by aiokafka when the consumer starts
            else:  # a newer aiokafka: keep faust's wait rather than guess
                log.warning("cannot set the consumer's fetch wait on this aiokafka; faust's default stays")
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """faust's aiokafka transport whose consumer waits at most `fetch_max_wait_ms` per fetch."""

    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
