"""Operations on the real stack: heartbeats, what Debezium may do, slot figures, retention.

  * each connector's publication holds the outbox and the heartbeat table, INSERTs only;
  * Debezium may insert heartbeats and read the outbox, nothing else;
  * heartbeats land in each database's debezium_heartbeat table and on no topic;
  * an idle database's slot does not pin the WAL other databases write;
  * `saga stack status --json` shows every slot, each service's /metrics its own;
  * the retention purge deletes what is past its window, in batches, and keeps the rest;
  * deleting outbox rows never streams, and a row deleted before Debezium read it is
    still published (it is read from the WAL, not the table).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from saga_cli.stack.config import SERVICE_DATABASES
from shared.retention import RetentionPolicy, purge
from shared.testing import scratch_database, with_database
from shared.uow import UnitOfWork
from tests.support.kafka import TopicReader
from tests.support.load import saga, service_url
from tests.support.outbox import PROBE_TOPIC, connect_service, insert_outbox

pytestmark = pytest.mark.integration

DATABASES = sorted(SERVICE_DATABASES)


async def as_debezium(settings, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(f"postgresql://{settings.debezium_user}:{settings.debezium_password}"
                                 f"@127.0.0.1:{settings.pg_port}/{database}")


@pytest.mark.parametrize("database", DATABASES)
async def test_publication_holds_outbox_and_heartbeats_and_carries_inserts_only(stack, database):
    conn = await asyncpg.connect(with_database(stack.pg_superuser_dsn, database))
    try:
        publication = await conn.fetchrow("SELECT * FROM pg_publication WHERE pubname = $1", f"{database}_outbox")
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = $1", f"{database}_outbox")}
    finally:
        await conn.close()
    assert (publication["pubinsert"], publication["pubupdate"], publication["pubdelete"], publication["pubtruncate"]) == \
           (True, False, False, False)
    assert tables == {"outbox", "debezium_heartbeat"}


async def test_debezium_may_insert_heartbeats_and_read_the_outbox_only(stack):
    conn = await as_debezium(stack.settings, "orders")
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO debezium_heartbeat (beat_at) VALUES (clock_timestamp())")
        await transaction.rollback()
        await conn.fetch("SELECT id FROM outbox LIMIT 1")
        for statement in ("UPDATE debezium_heartbeat SET beat_at = now()", "DELETE FROM debezium_heartbeat",
                          "DELETE FROM outbox", "SELECT 1 FROM inbox LIMIT 1", "SELECT 1 FROM orders LIMIT 1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_heartbeats_reach_their_table_and_no_topic(stack):
    """Debezium runs its heartbeat.action.query every heartbeat (5 s); the rows' change events are dropped."""
    async def next_heartbeat(database: str) -> None:
        conn = await connect_service(stack.settings, database)
        try:
            first = await conn.fetchval("SELECT max(beat_at) FROM debezium_heartbeat")
            deadline = time.monotonic() + 20
            while (latest := await conn.fetchval("SELECT max(beat_at) FROM debezium_heartbeat")) == first:
                assert time.monotonic() < deadline, f"no heartbeat in {database} within 20s"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        print(f"{database}: heartbeat at {latest}")

    await asyncio.gather(*(next_heartbeat(database) for database in DATABASES))
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert not {t for t in topics if t.endswith(".debezium_heartbeat")}, topics
    assert {f"__debezium-heartbeat.{database}" for database in DATABASES} <= topics


async def test_an_idle_database_does_not_pin_the_wal_others_write(stack):
    """16 MB of WAL written in another database: every slot lets go of it within a few heartbeats."""
    admin = await asyncpg.connect(stack.pg_superuser_dsn)
    table = f"wal_filler_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f"CREATE TABLE {table} AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 120000) g")
        await admin.execute(f"DROP TABLE {table}")
        pinned = await retained(stack)
        print("retained WAL right after writing elsewhere: " + kib(pinned))
        assert all(v > 8 * 2**20 for v in pinned.values()), pinned
        began = time.monotonic()
        while True:
            now = await retained(stack)
            if all(v < 4 * 2**20 for v in now.values()):
                break
            assert time.monotonic() - began < 90, f"slots still retain {kib(now)} after 90s"
            await admin.execute("CHECKPOINT")  # a running-transactions record now, rather than within 15 s
            await asyncio.sleep(1)
        print(f"retained WAL {time.monotonic() - began:.0f}s later: " + kib(now))
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()


async def retained(stack) -> dict[str, int]:
    slots = await asyncio.to_thread(stack.stack.postgres.replication_slots)
    return {s.slot: s.retained_wal_bytes for s in slots}


def kib(figures: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(figures.items()))


async def test_stack_status_shows_every_slot_and_metrics_show_each_services_own(services):
    done = await asyncio.to_thread(saga, "stack", "status", "--json")
    assert done.returncode == 0, done.stderr
    postgres = next(c for c in json.loads(done.stdout)["components"] if c["name"] == "postgres")
    slots = {s["slot"]: s for s in postgres["slots"]}
    assert set(slots) == {f"{database}_outbox" for database in DATABASES}
    for slot in slots.values():
        assert slot["active"] is True
        assert isinstance(slot["lag_bytes"], int) and isinstance(slot["retained_wal_bytes"], int)
    human = await asyncio.to_thread(saga, "stack", "status")
    assert "orders_outbox" in human.stdout and "retained WAL" in human.stdout

    own = {"order_svc": "orders_outbox", "inventory_svc": "inventory_outbox", "payment_svc": "payments_outbox"}
    deadline = time.monotonic() + 15  # the figures are read every 5 s
    for service, slot in own.items():
        while True:
            async with httpx.AsyncClient(timeout=5) as client:
                text = (await client.get(f"{service_url(service)}/metrics")).text
            samples = [line for line in text.splitlines() if line.startswith("saga_replication_slot_")]
            if samples or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"{service}: " + "; ".join(samples))
        names = {line.split("{")[0] for line in samples}
        assert names == {"saga_replication_slot_lag_bytes", "saga_replication_slot_retained_wal_bytes",
                         "saga_replication_slot_active"}
        assert all(f'slot="{slot}"' in line for line in samples), samples


async def test_purge_deletes_rows_past_their_retention_in_batches(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("""
                INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, saga_id, traceparent, created_at)
                SELECT gen_random_uuid(), 'probe', 's', 'T', '{}', 's', 'tp', now() - make_interval(mins => m)
                FROM generate_series(1, 30) m  -- 1..30 minutes old
            """)
            await conn.execute("""
                INSERT INTO inbox (consumer, event_id, event_type, saga_id, processed_at)
                SELECT 'svc', gen_random_uuid(), 'T', 's', now() - make_interval(days => d)
                FROM generate_series(1, 15) d  -- 1..15 days old
            """)
            await conn.execute("""
                INSERT INTO debezium_heartbeat (beat_at)
                SELECT now() - make_interval(mins => m) FROM generate_series(1, 30) m
            """)
        finally:
            await conn.close()
        uow = await UnitOfWork.connect(dsn, "svc")
        try:
            policy = RetentionPolicy(outbox=timedelta(minutes=10, seconds=30), inbox=timedelta(days=9, hours=12), batch=7)
            deleted = await purge(uow, policy)
            again = await purge(uow, policy)
            async with uow.connection() as conn:
                left = {table: await conn.fetchval(f"SELECT count(*) FROM {table}")
                        for table in ("outbox", "inbox", "debezium_heartbeat")}
                oldest_outbox = await conn.fetchval("SELECT max(now() - created_at) FROM outbox")
        finally:
            await uow.close()
    print(f"purged {deleted}, then {again}; left {left}")
    assert deleted == {"outbox": 20, "inbox": 6, "debezium_heartbeat": 20}
    assert again == {"outbox": 0, "inbox": 0, "debezium_heartbeat": 0}
    assert left == {"outbox": 10, "inbox": 9, "debezium_heartbeat": 10}
    assert oldest_outbox < timedelta(minutes=10, seconds=30)


async def test_a_purge_reads_only_the_rows_past_their_retention(pg_superuser_dsn):
    # The cutoff must be an index condition: as a filter (a volatile clock_timestamp()), every
    # purge walked the whole inbox index, a dedupe window's worth of rows, once a minute.
    from shared.retention import _PURGES

    async with scratch_database(pg_superuser_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            for table, statement in _PURGES.items():
                await conn.execute("BEGIN")
                await conn.execute("SET LOCAL enable_seqscan = off")  # an empty table: ask for the index plan
                try:
                    plan = "\n".join(row[0] for row in await conn.fetch(
                        "EXPLAIN " + statement.replace("$1::interval", "'1 hour'::interval").replace("$2", "1000")))
                finally:
                    await conn.execute("ROLLBACK")
                time_column = {"outbox": "created_at", "inbox": "processed_at", "debezium_heartbeat": "beat_at"}[table]
                assert f"Index Cond: ({time_column} < " in plan, f"{table}'s purge scans rather than seeks:\n{plan}"
        finally:
            await conn.close()


async def test_deleted_outbox_rows_never_stream_and_unread_ones_still_do(stack):
    """A DELETE on the outbox (what the purge does) publishes nothing. A row committed while the
    connector is paused and deleted before it resumes is still published: Debezium decodes the
    WAL, which its slot keeps, not the table."""
    settings = stack.settings
    saga_id = str(uuid.uuid4())  # one key, one partition: what arrives after the marker came after it
    async with TopicReader(settings.kafka_bootstrap, PROBE_TOPIC) as reader:
        conn = await connect_service(settings, "orders")
        try:
            published = await insert_outbox(conn, "orders", saga_id=saga_id)
            await reader.read_until(lambda rs: any(r.event_id == published for r in rs))
            await conn.execute("DELETE FROM outbox WHERE id = $1", uuid.UUID(published))

            connect = stack.stack.connect
            assert connect._request("PUT", "/connectors/orders-outbox/pause").status_code == 202
            try:
                await asyncio.sleep(2)  # the task stops polling
                unread = await insert_outbox(conn, "orders", saga_id=saga_id)
                await conn.execute("DELETE FROM outbox WHERE id = $1", uuid.UUID(unread))
                assert await conn.fetchval("SELECT count(*) FROM outbox WHERE saga_id = $1", saga_id) == 0
            finally:
                assert connect._request("PUT", "/connectors/orders-outbox/resume").status_code == 202
            marker = await insert_outbox(conn, "orders", saga_id=saga_id)
        finally:
            await conn.close()
        records = await reader.read_until(lambda rs: {unread, marker} <= {r.event_id for r in rs}, timeout=60)

    mine = [r for r in records if r.key == saga_id]
    print(f"on {PROBE_TOPIC}: " + ", ".join(f"{r.event_id[:8]}@{r.offset}" for r in mine))
    assert {r.event_id for r in mine} == {published, unread, marker}
    assert all(r.value is not None for r in mine)  # no tombstone, no delete event
