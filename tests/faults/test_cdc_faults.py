"""The way out survives its parts dying: every committed outbox row still reaches its topic (duplicates allowed, gaps never)."""
from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from tests.support.kafka import TopicReader
from tests.support.outbox import PROBE_TOPIC, connect_service, insert_outbox

pytestmark = pytest.mark.faults


async def _write_rows(settings, count: int, saga_id: str, interval: float) -> list[str]:
    """Commit `count` outbox rows one transaction each; reconnect when the database goes away."""
    written: list[str] = []
    conn = None
    while len(written) < count:
        try:
            if conn is None or conn.is_closed():
                conn = await connect_service(settings, "orders")
            written.append(await insert_outbox(conn, "orders", saga_id=saga_id, payload={"n": len(written)}))
        except Exception as error:  # the database restarting under us
            if conn is not None:
                conn.terminate()
            conn = None
            if not _is_connection_error(error):
                raise
            await asyncio.sleep(0.2)
            continue
        await asyncio.sleep(interval)
    await conn.close()
    return written


def _is_connection_error(error: Exception) -> bool:
    import asyncpg

    return isinstance(error, (OSError, ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                              asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError))


def _all_arrived(written: list[str]):
    return lambda records: set(written) <= {r.event_id for r in records}


async def test_kill_9_of_kafka_connect_while_rows_are_written_loses_nothing(stack):
    saga_id = str(uuid.uuid4())
    async with TopicReader(stack.settings.kafka_bootstrap, PROBE_TOPIC) as reader:
        writer = asyncio.create_task(_write_rows(stack.settings, 300, saga_id, interval=0.01))
        await reader.read_until(lambda rs: len(rs) >= 20, timeout=60)  # streaming is under way

        connect = stack.stack.connect
        victim = connect.find()
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        print(f"injected: kill -9 kafka-connect pid {victim.pid} after {len(reader.records)} records")

        await asyncio.to_thread(connect.start)
        await asyncio.to_thread(connect.register_connectors)
        written = await writer
        records = await reader.read_until(_all_arrived(written), timeout=120)

    ids = [r.event_id for r in records if r.key == saga_id]
    print(f"written {len(written)}, received {len(ids)} ({len(ids) - len(set(ids))} duplicates)")
    assert set(written) <= set(ids)
    first_seen = list(dict.fromkeys(ids))  # one key, one partition: replays repeat, never reorder
    assert first_seen == written


async def test_postgres_immediate_restart_resumes_streaming_without_loss(stack):
    saga_id = str(uuid.uuid4())
    postgres = stack.stack.postgres
    async with TopicReader(stack.settings.kafka_bootstrap, PROBE_TOPIC) as reader:
        before = await _write_rows(stack.settings, 50, saga_id, interval=0)
        await asyncio.to_thread(postgres.stop, "immediate")
        print("injected: pg_ctl stop -m immediate")
        assert postgres.find() is None
        await asyncio.to_thread(postgres.start)
        after = await _write_rows(stack.settings, 50, saga_id, interval=0)
        await reader.read_until(_all_arrived(before + after), timeout=120)

    await asyncio.to_thread(stack.stack.connect.wait_running, "orders-outbox", 60)
