"""PostgreSQL away for a minute, and for six, under saga load: nothing becomes a dead letter,
every saga ends with no manual step, the invariants hold, and every consumer group ends stable.

While the database is down every service's handlers retry (a transient failure is never a dead
letter), their consumers pause and keep polling, so they stay in their groups; POST /orders
answers 503 with Retry-After and the load retries. When PostgreSQL is back the backlog drains.
A happy order whose wait crossed its deadline ends CANCELLED (deadline_exceeded): the saga doing
its job. Figures printed: outage length, sagas in flight at its end, dead letters, drain time.
"""
from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.support.load import saga_json
from tests.support.under_load import LoadRun, run_under_load

pytestmark = pytest.mark.faults

SERVICES = ("order_svc", "inventory_svc", "payment_svc")


async def group_states(settings) -> dict[str, tuple[str, int]]:
    """consumer group → (state, members) for the three services' groups, as Kafka's own
    `kafka-consumer-groups --describe --state` reports them."""
    tool = settings.bin_dir / "kafka-consumer-groups"
    args = [str(tool), "--bootstrap-server", settings.kafka_bootstrap, "--describe", "--state"]
    for name in SERVICES:
        args += ["--group", name]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60)
    states = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in SERVICES and fields[-1].isdigit():
            states[fields[0]] = (fields[-2], int(fields[-1]))
    return states


async def until_groups_stable(settings, timeout: float = 60.0) -> dict[str, tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        states = await group_states(settings)
        if all(states.get(name, ("", 0))[0] == "Stable" and states[name][1] >= 1 for name in SERVICES):
            return states
        assert time.monotonic() < deadline, f"consumer groups not stable within {timeout:.0f}s: {states}"
        await asyncio.sleep(1.0)


@pytest.mark.parametrize("outage_s", [
    pytest.param(60, id="one minute", marks=pytest.mark.timeout(600)),
    pytest.param(360, id="six minutes", marks=pytest.mark.timeout(1200)),
])
async def test_postgres_stopped_under_load_parks_nothing(services, outage_s) -> None:
    stack = services
    postgres = stack.stack.postgres
    figures: dict[str, float] = {}
    try:
        await _outage_under_load(stack, postgres, outage_s, figures)
    finally:  # whatever happened, the next test finds PostgreSQL running
        if postgres.find() is None:
            await asyncio.to_thread(postgres.start)


async def _outage_under_load(stack, postgres, outage_s: int, figures: dict[str, float]) -> None:

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(40)
        victim = postgres.find()
        await asyncio.to_thread(postgres.stop, "fast")
        run.injected(f"pg_ctl stop -m fast (postmaster pid {victim.pid}); down for {outage_s}s")
        try:
            await asyncio.sleep(outage_s)  # the outage itself: its length is what is being tested
        finally:
            await asyncio.to_thread(postgres.start)
        figures["back"] = time.monotonic()
        figures["in_flight"] = await run.in_flight()
        run.injected(f"postgres started (pid {postgres.find().pid}); {figures['in_flight']} sagas in flight")

    outcome = await run_under_load(stack.settings, inject, sagas=160, per_second=4,
                                   terminal_timeout=180.0 + outage_s, place_timeout=300.0 + outage_s)
    drained_s = time.monotonic() - figures["back"]
    keys = {p.order_id for p in outcome.placed}
    letters = [letter for letter in await saga_json("dlq", "list") if letter.get("key") in keys]
    states = await until_groups_stable(stack.settings)
    print(f"outage {outage_s}s: {figures['in_flight']} sagas in flight when the database came back, "
          f"all terminal {drained_s:.1f}s later; {len(letters)} dead letters; groups {states}")
    assert letters == [], letters[:3]
    assert outcome.violations == []
