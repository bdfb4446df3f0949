"""`saga up` after one component of each kind was killed: it starts exactly those, and the saga works again.

PostgreSQL (its postmaster, SIGKILL), Kafka, Kafka Connect and inventory_svc are killed
with SIGKILL; order_svc and payment_svc are left alone. `saga up` (the CLI, as a user
runs it) must start the three killed infrastructure components — new pids, connectors
RUNNING — and leave the two other services running under their old pids. inventory_svc is
back under a new pid too: its supervisor restarts it by itself (saga_cli/supervise.py), so
by the time `saga up` gets to it, it is either already running again or started by `saga up`;
either way `saga status` counts the restart and shows its last exit (signal 9). A saga placed
afterwards completes.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time

import psutil
import pytest

from saga_cli.services import SERVICES, Service
from tests.support.invariants import check_invariants
from tests.support.load import Catalog, place_orders, saga, wait_terminal

pytestmark = pytest.mark.faults

KILLED = ("postgres", "kafka", "kafka-connect", "inventory_svc")
SUPERVISED = ("inventory_svc",)
"""Killed, and restarted by its supervisor before or while `saga up` runs."""


def pids(settings) -> dict[str, int | None]:
    done = saga("status", "--json")
    assert done.returncode == 0, done.stderr
    return {c["name"]: c["pid"] for c in json.loads(done.stdout)["components"]}


def kill(process: psutil.Process) -> None:
    """SIGKILL, and wait until it and (for the postmaster) its children are gone: a new postmaster
    refuses to start while a backend of the old one still holds the shared memory."""
    children = process.children()
    process.send_signal(signal.SIGKILL)
    gone, alive = psutil.wait_procs([process, *children], timeout=30)
    assert not alive, f"still alive after SIGKILL of {process.pid}: {[p.pid for p in alive]}"


async def test_saga_up_starts_only_what_was_killed(services):
    settings = services.settings
    stack = services.stack
    components = {"postgres": stack.postgres, "kafka": stack.kafka, "kafka-connect": stack.connect,
                  **{name: Service(name, settings) for name in SERVICES}}
    before = pids(settings)
    assert all(before.values()), before

    for name in KILLED:
        victim = components[name].find()
        await asyncio.to_thread(kill, victim)
        print(f"injected: kill -9 {name} (pid {victim.pid})")
    assert all(components[name].find() is None for name in KILLED)

    t0 = time.monotonic()
    up = await asyncio.to_thread(saga, "up", timeout=400)
    print(f"saga up: exit {up.returncode} in {time.monotonic() - t0:.1f}s")
    print("\n".join(f"  {line}" for line in up.stderr.strip().splitlines()))
    assert up.returncode == 0, up.stderr

    after = pids(settings)
    for name, pid in after.items():
        print(f"  {name:<14} pid {before[name]} → {pid}")
    assert all(after[name] and after[name] != before[name] for name in KILLED), after
    assert {name: after[name] for name in before if name not in KILLED} == \
           {name: before[name] for name in before if name not in KILLED}
    for name in before:
        if name in SUPERVISED:
            assert f"{name:<14} starting" in up.stderr or f"{name:<14} already running" in up.stderr
        elif name in KILLED:
            assert f"{name:<14} starting" in up.stderr
        else:
            assert f"{name:<14} already running" in up.stderr
    inventory = next(c for c in json.loads(saga("status", "--json").stdout)["components"] if c["name"] == "inventory_svc")
    print(f"  inventory_svc: restarts {inventory['restarts']}, last exit {inventory['last_exit']}")
    assert inventory["restarts"] >= 1 and inventory["last_exit"]["signal"] == signal.SIGKILL
    status = json.loads(saga("stack", "status", "--json").stdout)
    connect = next(c for c in status["components"] if c["name"] == "kafka-connect")
    assert set(connect["connectors"].values()) == {"RUNNING"}

    catalog = Catalog.new()
    await catalog.seed()
    started_ms = int(time.time() * 1000)
    placed = await place_orders(catalog, ["happy", "declined", "out_of_stock"], timeout=120)
    statuses = await wait_terminal(settings, [p.order_id for p in placed], timeout=120)
    ends = {p.flow: statuses[p.order_id] for p in placed}
    print(f"after saga up: {ends}")
    assert ends == {"happy": ("CONFIRMED", None), "declined": ("CANCELLED", "insufficient_funds"),
                    "out_of_stock": ("CANCELLED", "out_of_stock")}
    assert await check_invariants(settings, [p.order_id for p in placed], catalog.seeded, since_ms=started_ms) == []
