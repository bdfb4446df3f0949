"""Mass redelivery: every service's consumer group rewound to the earliest offset changes nothing.

After a load of mixed sagas has finished, each service is stopped, its consumer group
reset with Kafka's own tool (kafka-consumer-groups --reset-offsets --to-earliest
--all-topics) and the service started again: it reads every event of its topics a
second time. The inbox turns each one into a duplicate (poison from earlier stays
dead-lettered once), so no row of any of the three databases changes, and the
invariants still hold.
"""
from __future__ import annotations

import asyncio
import subprocess
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from saga_cli.services import Service
from tests.support.invariants import check_invariants
from tests.support.load import Catalog, health, metric, mixed_flows, outcomes, place_orders, unexpected, wait_terminal

pytestmark = pytest.mark.faults

CONSUMED = {
    "order_svc": ("events.inventory", "events.payment"),
    "inventory_svc": ("events.order", "events.payment"),
    "payment_svc": ("events.inventory", "events.order"),
}
TABLES = {
    "orders": ("orders", "order_history", "outbox", "inbox", "dead_letters"),
    "inventory": ("stock", "reservations", "outbox", "inbox", "dead_letters"),
    "payments": ("accounts", "payments", "outbox", "inbox", "dead_letters"),
}


async def fingerprint(settings) -> dict[str, tuple[int, str]]:
    """database.table → (rows, md5 of every row): any insert, update or delete shows."""
    prints = {}
    for database, tables in TABLES.items():
        connection = await asyncpg.connect(settings.service_dsn(database))
        try:
            for table in tables:
                row = await connection.fetchrow(
                    f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS digest "
                    f"FROM {table} AS t")
                prints[f"{database}.{table}"] = (row["n"], row["digest"])
        finally:
            await connection.close()
    return prints


def reset_to_earliest(settings, group: str, timeout: float = 60) -> str:
    """Kafka's own tool; the group must be empty, which a stopped service's group becomes."""
    tool = settings.bin_dir / "kafka-consumer-groups"
    command = [str(tool), "--bootstrap-server", settings.kafka_bootstrap, "--group", group,
               "--reset-offsets", "--to-earliest", "--all-topics", "--execute"]
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and "NEW-OFFSET" in done.stdout:
            return done.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"could not reset {group}: {done.stdout}{done.stderr}")
        time.sleep(1)


async def backlog(bootstrap: str, groups: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """group → messages between its committed offsets and the ends of the topics it consumes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        lag = {}
        for group, topics in groups.items():
            partitions = [TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t) or ()]
            end = await consumer.end_offsets(partitions)
            begin = await consumer.beginning_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group)
            lag[group] = sum(end[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else begin[tp])
                             for tp in partitions)
        return lag
    finally:
        await admin.close()
        await consumer.stop()


async def test_every_consumer_group_rewound_to_the_earliest_offset_changes_nothing(services) -> None:
    settings = services.settings
    catalog = Catalog.new()
    await catalog.seed()
    started_ms = int(time.time() * 1000)
    placed = await place_orders(catalog, mixed_flows(150), per_second=60)
    statuses = await wait_terminal(settings, [p.order_id for p in placed], timeout=90)
    print(f"{len(placed)} sagas finished: {dict(outcomes(placed, statuses))}")
    assert unexpected(placed, statuses) == []
    assert await check_invariants(settings, [p.order_id for p in placed], catalog.seeded, since_ms=started_ms) == []
    await asyncio.sleep(1.5)  # the last commits of the consumer groups (every 0.5 s)
    before = await fingerprint(settings)

    running = [Service(name, settings) for name in CONSUMED]
    for service in running:
        await asyncio.to_thread(service.stop)
    for service in running:
        await asyncio.to_thread(reset_to_earliest, settings, service.name)
    rewound = await backlog(settings.kafka_bootstrap, CONSUMED)
    print(f"injected: services stopped, consumer groups reset to the earliest offset; redelivering {rewound}")
    assert all(count > 0 for count in rewound.values())
    for service in running:
        await asyncio.to_thread(service.start)

    total = sum(rewound.values())
    deadline = time.monotonic() + 60 + total * 0.02
    while any((await backlog(settings.kafka_bootstrap, CONSUMED)).values()):
        assert time.monotonic() < deadline, f"redelivery not consumed in time: {await backlog(settings.kafka_bootstrap, CONSUMED)}"
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.0)

    for name in CONSUMED:
        outcome_counts = {outcome: await metric(name, "saga_events_handled_total", outcome=outcome)
                          for outcome in ("handled", "duplicate", "ignored", "dead_lettered")}
        print(f"{name} redelivery: {', '.join(f'{k} {v:.0f}' for k, v in outcome_counts.items())}")
        assert outcome_counts["handled"] == 0, f"{name} handled events a second time"
        assert outcome_counts["duplicate"] > 0
        assert await health(name) == 200

    after = await fingerprint(settings)
    changed = {table: (before[table], after[table]) for table in before if before[table] != after[table]}
    print(f"state: {len(before)} tables, {sum(n for n, _ in before.values())} rows, {len(changed)} changed")
    assert changed == {}
    assert await check_invariants(settings, [p.order_id for p in placed], catalog.seeded, since_ms=started_ms) == []
