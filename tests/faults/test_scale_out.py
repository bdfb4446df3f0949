"""Two instances of every service in one consumer group; one of each killed mid-load.

A second process of order_svc, inventory_svc and payment_svc joins its service's
consumer group (same database, other HTTP ports): the partitions of each consumed topic
(three per topic) are shared between the two. Under a mixed load the second instances
are killed with SIGKILL; once their sessions expire the first instances take all the
partitions over and are redelivered what the dead ones had not committed. Every saga
still ends, I1–I6 hold, and on every topic each saga's events stand in causal order:
no event before an event that (transitively) caused it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import asyncpg
import httpx
import pytest

from saga_cli.services import DATABASES, SERVICES, Service
from tests.support.kafka import Record, TopicReader
from tests.support.load import service_url
from tests.support.saga import SAGA_TOPICS
from tests.support.under_load import LoadRun, run_under_load

pytestmark = pytest.mark.faults

CONSUMED_PARTITIONS = {"order_svc": 9, "inventory_svc": 6, "payment_svc": 6}
"""Three partitions per consumed topic: order_svc reads events.order too (it adopts ORDER_CREATED
from outside), the others two topics each."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SecondInstance:
    """Another process of `name` against the stack's database and Kafka, on a port of its own."""

    def __init__(self, name: str, settings, env: dict[str, str] | None = None) -> None:
        self.name, self.settings, self.port = name, settings, free_port()
        self.env = dict(env or {})
        """Settings of this instance alone, as environment variables."""
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        prefix = self.name.upper()
        env = {**os.environ,
               f"{prefix}_DATABASE_URL": self.settings.service_dsn(DATABASES[self.name]),
               f"{prefix}_HTTP_PORT": str(self.port),
               "SAGA_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
               "SAGA_KEYS_DIR": str(self.settings.keys_dir),
               **self.env}
        log = open(self.settings.log_dir / f"{self.name}-{self.port}.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.name], env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


async def assigned(url: str) -> list[str] | None:
    """The event topics' partitions an instance's /health says it holds (None when it does not answer;
    faust's own leader-election topic left out)."""
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            held = (await client.get(f"{url}/health")).json().get("assigned", [])
    except (httpx.HTTPError, ValueError):
        return None
    return [tp for tp in held if tp.startswith("events.")]


async def wait_for(check, what: str, timeout: float) -> float:
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < timeout, f"{what} not within {timeout:.0f}s"
        await asyncio.sleep(0.25)
    return time.monotonic() - began


def causal_order_violations(records: list[Record], order_ids: set[str]) -> list[str]:
    """Per saga and topic, the first delivery of each event (by offset) must come after the first
    delivery of every event on that topic that caused it, directly or not."""
    cause = {r.event_id: r.headers.get("causationId", "") for r in records if r.key in order_ids}

    def ancestors(event_id: str) -> set[str]:
        found, current = set(), cause.get(event_id, "")
        while current and current not in found:
            found.add(current)
            current = cause.get(current, "")
        return found

    violations = []
    streams: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        if record.key in order_ids:
            streams[(record.key, record.topic)].append(record)
    for (saga, topic), stream in streams.items():
        if len({r.partition for r in stream}) != 1:
            violations.append(f"saga {saga} spread over partitions of {topic}")
        first = list({r.event_id: r for r in sorted(stream, key=lambda r: r.offset, reverse=True)}.values())
        first.sort(key=lambda r: r.offset)
        seen: set[str] = set()
        for record in first:
            early = (ancestors(record.event_id) & {r.event_id for r in first}) - seen
            if early:
                violations.append(f"saga {saga} on {topic}: {record.headers['eventType']} at offset {record.offset} "
                                  f"before its cause(s) {sorted(early)}")
            seen.add(record.event_id)
    return violations


async def outbox_count(settings, order_ids: list[str]) -> int:
    total = 0
    for database in ("orders", "inventory", "payments"):
        connection = await asyncpg.connect(settings.service_dsn(database))
        try:
            total += await connection.fetchval(
                "SELECT count(*) FROM outbox WHERE saga_id = ANY($1::text[]) AND event_type <> 'DEAD_LETTER'", order_ids)
        finally:
            await connection.close()
    return total


async def test_two_instances_per_service_one_killed_mid_load(services):
    settings = services.settings
    seconds = {name: SecondInstance(name, settings) for name in SERVICES}
    firsts = {name: service_url(name) for name in SERVICES}
    try:
        for instance in seconds.values():
            instance.start()
        for name, instance in seconds.items():
            async def shared() -> bool:
                one, two = await assigned(firsts[name]), await assigned(instance.url)
                return bool(one) and bool(two) and len(one) + len(two) == CONSUMED_PARTITIONS[name]
            took = await wait_for(shared, f"{name}: partitions shared by two instances", 90)
            print(f"{name}: second instance pid {instance.process.pid} on :{instance.port}; partitions "
                  f"{await assigned(firsts[name])} | {await assigned(instance.url)} after {took:.1f}s")

        async def inject(run: LoadRun) -> None:
            await run.placed_at_least(100)
            for name, instance in seconds.items():
                held = await assigned(instance.url)
                instance.process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(instance.process.wait, 30)
                run.injected(f"kill -9 second {name} (pid {instance.process.pid}) holding {held}")
            for name in SERVICES:
                async def all_mine() -> bool:
                    return len(await assigned(firsts[name]) or []) == CONSUMED_PARTITIONS[name]
                took = await wait_for(all_mine, f"{name}: the first instance holding every partition", 60)
                run.injected(f"{name}: the first instance holds all {CONSUMED_PARTITIONS} partitions "
                             f"({took:.1f}s after the kills were done)")

        async with TopicReader(settings.kafka_bootstrap, *SAGA_TOPICS) as reader:
            outcome = await run_under_load(settings, inject, sagas=250, per_second=25)
            order_ids = {p.order_id for p in outcome.placed}
            expected = await outbox_count(settings, sorted(order_ids))
            records = await reader.read_until(
                lambda rs: len({r.event_id for r in rs if r.key in order_ids}) >= expected, timeout=60)
        disorder = causal_order_violations(records, order_ids)
        print(f"causal order on the topics: {len(order_ids)} sagas, "
              f"{len({r.event_id for r in records if r.key in order_ids})} events, {len(disorder)} out of order")
        assert disorder == []
        assert outcome.violations == []
    finally:
        for instance in seconds.values():
            instance.stop()
        for name in SERVICES:  # the stack's own instances carry on alone, as before the test
            service = Service(name, settings)
            if service.find() is None:
                await asyncio.to_thread(service.start)
