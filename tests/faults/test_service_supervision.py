"""Services started by `saga up` are kept running by their supervisors (saga_cli/supervise.py).

Each service in turn is killed with SIGKILL: its supervisor starts it again by itself within a few
seconds, it is healthy again, and `saga status --json` counts the restart and shows the last exit
(signal 9). Then the services' part of `saga down` (saga_cli.services.down: the stack's PostgreSQL,
Kafka and Connect are shared and stay up) leaves neither a service nor a supervisor running, and
`saga up` brings all three back, supervised.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime

import psutil
import pytest

from saga_cli import services as service_processes
from saga_cli import supervise
from saga_cli.services import SERVICES, Service
from tests.support.saga import run_saga_async, wait_until_healthy

pytestmark = pytest.mark.faults

BACK_WITHIN_S = 3.0
"""A killed service's new process exists within this after the backoff its supervisor announced
(1 s after a run of a minute or more; it doubles with each quicker exit, up to 30 s: other tests
may have killed the same service a little earlier)."""
HEALTHY_WITHIN_S = 60.0
"""…and is healthy within this (it rejoins its consumer group once the killed member's session ends)."""


async def statuses() -> dict[str, dict]:
    done = await run_saga_async("status", "--json")
    assert done.returncode == 0, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)["components"]}


async def until(condition, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := await asyncio.to_thread(condition)):
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(0.1)
    return value


async def test_a_service_killed_with_sigkill_is_restarted_by_its_supervisor(services) -> None:
    settings = services.settings
    for name in SERVICES:
        service = Service(name, settings)
        await wait_until_healthy(name)
        supervisor = service.find_supervisor()
        assert supervisor is not None, f"{name} is not supervised"
        victim = service.find()
        before = (await statuses())[name]["restarts"]

        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        waiting = await until(lambda: (state := supervise.read_state(service.files.state)) and state["state"] == "backoff"
                              and state["last_exit"]["pid"] == victim.pid and state, f"{name}'s supervisor waiting", 10)
        backoff_s = (datetime.fromisoformat(waiting["next_start_at"])
                     - datetime.fromisoformat(waiting["last_exit"]["at"])).total_seconds()
        assert backoff_s <= supervise.BACKOFF_MAX_S + 0.1
        back = await until(lambda: (found := service.find()) and found.pid != victim.pid and found,
                           f"{name} started again", backoff_s + BACK_WITHIN_S)
        back_s = time.monotonic() - killed_at
        await wait_until_healthy(name, timeout=HEALTHY_WITHIN_S)
        healthy_s = time.monotonic() - killed_at

        status = (await statuses())[name]
        print(f"kill -9 {name} (pid {victim.pid}): backoff {backoff_s:.1f}s, new pid {back.pid} after {back_s:.1f}s, "
              f"healthy after {healthy_s:.1f}s; "
              f"restarts {status['restarts']}, last exit {status['last_exit']['description']}")
        assert status["state"] == "running" and status["pid"] == back.pid
        assert status["supervisor_pid"] == supervisor.pid, "the same supervisor restarted it"
        assert status["restarts"] >= max(1, before + 1)
        assert status["last_exit"]["signal"] == signal.SIGKILL and status["last_exit"]["pid"] == victim.pid


async def test_down_leaves_no_service_and_no_supervisor_and_up_brings_them_back(services) -> None:
    settings = services.settings
    await wait_until_healthy(*SERVICES)
    running = [Service(name, settings) for name in SERVICES]
    processes = [p for service in running for p in (service.find(), service.find_supervisor())]
    assert all(processes), processes

    try:
        started = time.monotonic()
        await asyncio.to_thread(service_processes.down, settings, print)
        print(f"services down in {time.monotonic() - started:.1f}s")

        left = [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], f"still running after down: {left}"
        assert all(service.find() is None and service.find_supervisor() is None for service in running)
        after = await statuses()
        for name in SERVICES:
            assert after[name]["state"] == "stopped" and after[name]["supervisor_pid"] is None, after[name]
        await asyncio.sleep(2)  # nothing comes back by itself after down
        assert all(service.find() is None for service in running)
    finally:
        started = time.monotonic()
        await asyncio.to_thread(service_processes.up, settings, print)
        print(f"services up again in {time.monotonic() - started:.1f}s")

    await wait_until_healthy(*SERVICES)
    again = await statuses()
    for name in SERVICES:
        assert again[name]["state"] == "running" and again[name]["supervisor_pid"], again[name]
        assert again[name]["restarts"] == 0, "a new supervisor counts from 0"
