"""KeyedDispatcher: several messages at once, one key's strictly in arrival order, bounded in flight."""
from __future__ import annotations

import asyncio
import random

import pytest

from shared.dispatch import KeyedDispatcher

pytestmark = pytest.mark.unit


async def test_one_keys_work_runs_in_arrival_order_while_other_keys_overlap():
    dispatcher = KeyedDispatcher(limit=8)
    done: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    running = 0
    most = 0

    async def work(key: str, n: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(random.uniform(0, 0.01))
        done[key].append(n)
        running -= 1

    for n in range(20):
        for key in done:
            await dispatcher.submit(key, lambda key=key, n=n: work(key, n))
    await dispatcher.join()

    assert all(order == list(range(20)) for order in done.values()), done
    assert most == 3  # one at a time per key, the three keys side by side


async def test_submit_waits_while_the_limit_is_in_flight():
    dispatcher = KeyedDispatcher(limit=2)
    release = asyncio.Event()
    started = []

    async def work(n: int) -> None:
        started.append(n)
        await release.wait()

    await dispatcher.submit(1, lambda: work(1))
    await dispatcher.submit(2, lambda: work(2))
    third = asyncio.create_task(dispatcher.submit(3, lambda: work(3)))
    await asyncio.sleep(0.02)
    assert not third.done() and dispatcher.in_flight == 2
    release.set()
    await third
    await dispatcher.join()
    assert sorted(started) == [1, 2, 3] and dispatcher.in_flight == 0


async def test_a_failing_work_does_not_block_its_key():
    dispatcher = KeyedDispatcher(limit=4)
    ran = []

    async def boom() -> None:
        raise RuntimeError("handled by its own task")

    async def after() -> None:
        ran.append("after")

    await dispatcher.submit("k", boom)
    await dispatcher.submit("k", after)
    await dispatcher.join()
    assert ran == ["after"]


def test_the_limit_is_at_least_one():
    with pytest.raises(ValueError):
        KeyedDispatcher(limit=0)


async def test_work_not_admitted_once_a_slot_is_free_is_not_scheduled():
    dispatcher = KeyedDispatcher(limit=1)
    release = asyncio.Event()
    ran = []

    async def work(n: int) -> None:
        ran.append(n)
        await release.wait()

    assert await dispatcher.submit("a", lambda: work(1))
    wanted = True
    second = asyncio.create_task(dispatcher.submit("b", lambda: work(2), admit=lambda: wanted))
    await asyncio.sleep(0.01)
    wanted = False  # e.g. its partition was revoked while it waited for a slot
    release.set()
    assert await second is False
    await dispatcher.join()
    assert ran == [1] and dispatcher.in_flight == 0
    assert await dispatcher.submit("c", lambda: work(3))  # the slot it did not take is free again
    await dispatcher.join()
    assert ran == [1, 3]
