"""The infrastructure fails under a saga load: every saga still ends and I1–I6 hold.

Each scenario places a few hundred mixed sagas while it breaks one part of the way
out or in, then waits for every saga to end and checks the invariants (0 violations
is the only pass):

  * Kafka Connect killed with SIGKILL and stopped gracefully, several times, each
    time while it is behind (right after it came back to a backlog);
  * the Kafka broker stopped and started;
  * PostgreSQL stopped in immediate mode (a crash: no shutdown checkpoint) and started;
  * the walsender streaming one connector's slot terminated (pg_terminate_backend);
  * Kafka Connect down for a while: its slots retain WAL, and once it is back it
    catches up and the retained WAL falls back.
"""
from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from tests.support.under_load import LoadRun, run_under_load

pytestmark = pytest.mark.faults


# --- helpers -----------------------------------------------------------------------------

async def slots(stack) -> dict[str, dict]:
    """slot name → its figures (active, lag_bytes, retained_wal_bytes), read as the superuser."""
    figures = await asyncio.to_thread(stack.stack.postgres.replication_slots)
    return {slot.slot: slot.as_json() for slot in figures}


def describe(figures: dict[str, dict]) -> str:
    return ", ".join(f"{name} lag {_kib(s['lag_bytes'])} retained {_kib(s['retained_wal_bytes'])}"
                     f"{'' if s['active'] else ' (inactive)'}" for name, s in sorted(figures.items()))


def _kib(count: int | None) -> str:
    return "-" if count is None else f"{count / 1024:.0f} KiB"


async def connect_back(stack, run: LoadRun) -> None:
    """Start Kafka Connect (what `saga up` does) and wait until its connectors run."""
    connect = stack.stack.connect
    t0 = time.monotonic()
    await asyncio.to_thread(connect.start)
    await asyncio.to_thread(connect.register_connectors)
    run.injected(f"kafka-connect back (pid {connect.find().pid}), connectors RUNNING after {time.monotonic() - t0:.1f}s; "
                 f"slots: {describe(await slots(stack))}")


async def streaming(stack, timeout: float = 60.0) -> None:
    """Until every connector's walsender is attached to its slot (RUNNING comes a little earlier)."""
    deadline = time.monotonic() + timeout
    while not all(s["active"] for s in (await slots(stack)).values()):
        assert time.monotonic() < deadline, f"slots not streaming within {timeout:.0f}s: {describe(await slots(stack))}"
        await asyncio.sleep(0.1)


async def stop_connect(stack, run: LoadRun, how: str) -> None:
    connect = stack.stack.connect
    victim = connect.find()
    assert victim is not None, "kafka-connect is not running"
    behind = describe(await slots(stack))
    if how == "kill":
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 30)
        run.injected(f"kill -9 kafka-connect (pid {victim.pid}) while {behind}")
    else:
        await asyncio.to_thread(connect.stop)
        run.injected(f"graceful stop (SIGTERM) of kafka-connect (pid {victim.pid}) while {behind}")
    assert connect.find() is None


async def superuser(stack) -> asyncpg.Connection:
    return await asyncpg.connect(stack.pg_superuser_dsn)


# --- scenarios ---------------------------------------------------------------------------

async def test_kafka_connect_killed_and_restarted_while_behind(services):
    stack = services

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(30)
        for how in ("kill", "term", "kill"):
            await stop_connect(stack, run, how)  # the backlog grows while it is away …
            await connect_back(stack, run)
            await streaming(stack)  # … and the next fault hits it while it reads that backlog

    outcome = await run_under_load(stack.settings, inject, sagas=300, per_second=8)
    assert outcome.violations == []


async def test_kafka_broker_restart(services):
    stack = services
    kafka = stack.stack.kafka

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(60)
        victim = kafka.find()
        await asyncio.to_thread(kafka.stop)
        run.injected(f"kafka stopped (graceful, pid {victim.pid})")
        await asyncio.sleep(3)
        t0 = time.monotonic()
        await asyncio.to_thread(kafka.start)
        run.injected(f"kafka started (pid {kafka.find().pid}) in {time.monotonic() - t0:.1f}s")
        await asyncio.to_thread(stack.stack.connect.wait_running, "orders-outbox", 120)

    outcome = await run_under_load(stack.settings, inject, sagas=250, per_second=15)
    assert outcome.violations == []


async def test_postgres_immediate_restart(services):
    stack = services
    postgres = stack.stack.postgres

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(60)
        victim = postgres.find()
        await asyncio.to_thread(postgres.stop, "immediate")
        run.injected(f"pg_ctl stop -m immediate (postmaster pid {victim.pid})")
        assert postgres.find() is None
        t0 = time.monotonic()
        await asyncio.to_thread(postgres.start)
        run.injected(f"postgres started (pid {postgres.find().pid}) in {time.monotonic() - t0:.1f}s")

    outcome = await run_under_load(stack.settings, inject, sagas=250, per_second=25)
    assert outcome.violations == []


async def test_walsender_of_a_slot_terminated(services):
    stack = services

    async def terminate(run: LoadRun, slot: str) -> None:
        admin = await superuser(stack)
        try:
            pid = await admin.fetchval("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot)
            assert pid is not None, f"slot {slot} has no walsender"
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            run.injected(f"pg_terminate_backend({pid}): the walsender of slot {slot}")
            deadline = time.monotonic() + 90
            while True:
                again = await admin.fetchval(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active", slot)
                if again is not None and again != pid:
                    break
                assert time.monotonic() < deadline, f"slot {slot} not streaming again within 90s"
                await asyncio.sleep(0.2)
            run.injected(f"slot {slot} streams again (walsender pid {again})")
        finally:
            await admin.close()

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(50)
        await terminate(run, "inventory_outbox")
        await run.placed_at_least(150)
        await terminate(run, "orders_outbox")

    outcome = await run_under_load(stack.settings, inject, sagas=250, per_second=25)
    assert outcome.violations == []


async def test_slot_retains_wal_while_connect_is_down_and_releases_it_after_catching_up(services):
    stack = services
    figures: dict[str, dict[str, int]] = {}

    async def retained() -> dict[str, int]:
        return {name: s["retained_wal_bytes"] or 0 for name, s in (await slots(stack)).items()}

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(20)
        figures["before"] = await retained()
        await stop_connect(stack, run, "term")
        await run.placed_at_least(len(run.progress.placed) + 150, timeout=60)  # sagas pile up at ORDER_CREATED
        figures["down"] = await retained()
        run.injected(f"kafka-connect down for {run.elapsed:.0f}s of load; retained WAL "
                     + ", ".join(f"{k} {_kib(v)}" for k, v in sorted(figures["down"].items())))
        await connect_back(stack, run)

    outcome = await run_under_load(stack.settings, inject, sagas=250, per_second=15)

    grown = {name: figures["down"][name] - figures["before"].get(name, 0) for name in figures["down"]}
    print("retained WAL before the stop: " + ", ".join(f"{k} {_kib(v)}" for k, v in sorted(figures["before"].items())))
    print("grown while Connect was down: " + ", ".join(f"{k} +{_kib(v)}" for k, v in sorted(grown.items())))
    assert all(g > 64 * 1024 for g in grown.values()), grown

    # Caught up (every saga ended, every outbox row arrived): the slots confirm, restart_lsn
    # follows at the next running-transactions record, and the retained WAL falls back.
    deadline = time.monotonic() + 90
    admin = await superuser(stack)
    try:
        while True:
            now = await retained()
            if all(now[name] < figures["down"][name] / 4 for name in figures["down"]):
                break
            assert time.monotonic() < deadline, f"retained WAL did not fall back within 90s: {now}"
            await admin.execute("CHECKPOINT")  # logs running transactions now instead of within 15 s
            await asyncio.sleep(1)
    finally:
        await admin.close()
    print("retained WAL after catching up: " + ", ".join(f"{k} {_kib(v)}" for k, v in sorted(now.items())))
    assert outcome.violations == []
